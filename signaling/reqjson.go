package signaling

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"strconv"
	"strings"
)

// decodeBody decodes a request body into v strictly: exactly one JSON object, no field v
// does not have, nothing but whitespace after it (POST /v1/ice-servers, /v1/rooms and
// /v1/check-links). The error says what is wrong without echoing the body.
func decodeBody(body []byte, v any) error {
	const prefix = "body is not the expected JSON object: "
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errors.New(prefix + jsonProblem(err))
	}
	if b := bytes.TrimSpace(body); len(b) == 0 || b[0] != '{' {
		return errors.New(prefix + "send one JSON object, {...}")
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New(prefix + "more data after the object (send one JSON object and nothing else)")
	}
	return nil
}

// jsonProblem describes a JSON decoding error without echoing the input: where the syntax
// breaks, which field has the wrong type (and which type it needs), or the unknown field.
func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se) && strings.Contains(se.Error(), "unexpected end"),
		errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "the JSON ends too early"
	case errors.As(err, &se):
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	case errors.As(err, &te) && te.Field == "":
		return "not a JSON object"
	case errors.As(err, &te):
		got, ok := map[string]string{"string": "a string", "number": "a number", "bool": "true or false",
			"array": "an array", "object": "an object"}[te.Value]
		switch {
		case strings.HasPrefix(te.Value, "number "): // a number for a whole-number field
			got = "a fraction or a number out of range"
		case !ok:
			got = "another type"
		}
		return fmt.Sprintf("%s must be %s, not %s", te.Field, jsonKind(te.Type), got)
	case strings.HasPrefix(err.Error(), "json: unknown field"):
		return strings.TrimPrefix(err.Error(), "json: ")
	}
	return "invalid JSON"
}

// jsonKind names the JSON value a Go type takes, for error messages.
func jsonKind(t reflect.Type) string {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil {
		return "another type"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	}
	return "another type"
}

// ttlParam is a ttl as given: a JSON number (never a string: the README documents seconds
// as a number) or a query value; parseSeconds checks it when it is used, so that every
// malformed number gets the same clear error.
type ttlParam string

// UnmarshalJSON takes a JSON number; any other JSON value is an *json.UnmarshalTypeError,
// which the decoder completes with the field's name.
func (t *ttlParam) UnmarshalJSON(b []byte) error {
	if len(b) == 0 || b[0] != '-' && (b[0] < '0' || b[0] > '9') {
		return &json.UnmarshalTypeError{Value: jsonValueKind(b), Type: reflect.TypeFor[int64]()}
	}
	*t = ttlParam(b)
	return nil
}

// jsonValueKind names the kind of a JSON value the decoder has already checked, by its
// first byte (RFC 8259 §3: the first byte tells a value's kind).
func jsonValueKind(b []byte) string {
	if len(b) == 0 {
		return "nothing"
	}
	switch b[0] {
	case '"':
		return "string"
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "bool"
	}
	return "null"
}

// errNotSeconds is parseSeconds's error.
var errNotSeconds = errors.New("not a positive whole number of seconds")

// parseSeconds parses a positive whole number of seconds: digits, or a JSON number whose
// value is whole (3.6e3). A value beyond int64 (1e30) is math.MaxInt64: callers cap it at,
// or refuse it above, their own maximum. Errors: errNotSeconds.
func parseSeconds(s string) (int64, error) {
	if secs, err := strconv.ParseInt(s, 10, 64); err == nil {
		if secs <= 0 {
			return 0, errNotSeconds
		}
		return secs, nil
	}
	// Only JSON's number syntax (no Inf, NaN, hex or underscores); json.Valid also takes
	// other values and surrounding spaces, which ParseFloat and the first digit exclude.
	if s == "" || s[0] < '0' || s[0] > '9' || !json.Valid([]byte(s)) {
		return 0, errNotSeconds
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) || f < 1 || f != math.Trunc(f) {
		return 0, errNotSeconds
	}
	if f >= math.MaxInt64 {
		return math.MaxInt64, nil
	}
	return int64(f), nil
}
