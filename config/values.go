package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// This file holds the value types Ferry parses once, while the configuration is decoded, and
// their decode hooks, which turn the YAML, environment or flag text into the value or into
// an error that shows the value given and what is accepted ("\"12x\": unknown unit ...").

var durationType = reflect.TypeFor[time.Duration]()

// durationHelp says what a duration setting accepts.
const durationHelp = "write a number and a unit, e.g. 30s, 15m or 12h (units: h, m, s, ms, us, ns)"

// decodeDuration parses a duration: Go's syntax ("90s", "1h30m"). A bare number is refused:
// YAML "12" would otherwise mean 12 nanoseconds.
func decodeDuration(_, to reflect.Type, data any) (any, error) {
	if to != durationType {
		return data, nil
	}
	switch v := data.(type) {
	case string:
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("%q: %s; %s", v, durationProblem(err, strings.TrimSpace(v)), durationHelp)
		}
		return d, nil
	case time.Duration:
		return v, nil
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, float32, float64:
		return nil, fmt.Errorf("%v: missing unit; %s", v, durationHelp)
	}
	return nil, fmt.Errorf("%v is not a duration; %s", data, durationHelp)
}

// durationProblem turns time.ParseDuration's error (`time: unknown unit "x" in duration
// "12x"`) into what is wrong, without repeating the value: `unknown unit "x"`.
func durationProblem(err error, value string) string {
	msg := strings.TrimPrefix(err.Error(), "time: ")
	msg = strings.TrimSuffix(msg, " "+strconv.Quote(value))
	msg = strings.TrimSuffix(msg, " in duration")
	if msg == "invalid duration" {
		return "not a duration"
	}
	return msg
}
