package config

import (
	"fmt"
	"math"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// This file holds the value types Ferry parses once, while the configuration is decoded, so
// that main gets them ready to use: durations, byte sizes, IP addresses and CIDR lists. Each
// has a decode hook that turns the YAML, environment or flag text into the value, or into an
// error that shows the value given and what is accepted ("\"12x\": unknown unit ...").

// Size is a number of bytes, written as a whole number with an optional unit: B, KiB, MiB,
// GiB or TiB ("4MiB", "512KiB", "262144"). 0 (or "") is "not set"; what that means is the
// setting's own default.
type Size int64

// Size units.
const (
	KiB Size = 1 << 10
	MiB Size = 1 << 20
	GiB Size = 1 << 30
	TiB Size = 1 << 40
)

// String renders the size with the largest unit that divides it ("4MiB", "1536KiB", "100").
func (s Size) String() string {
	for _, u := range []struct {
		name string
		mult Size
	}{{"TiB", TiB}, {"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB}} {
		if s != 0 && s%u.mult == 0 {
			return strconv.FormatInt(int64(s/u.mult), 10) + u.name
		}
	}
	return strconv.FormatInt(int64(s), 10)
}

// MarshalText renders the size as String does, so that `ferry config print` shows "4MiB".
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// parseSize parses a byte size: a non-negative whole number with an optional B, KiB, MiB,
// GiB or TiB suffix. "" is 0.
func parseSize(in string) (Size, error) {
	s := strings.TrimSpace(in)
	if s == "" {
		return 0, nil
	}
	mult := Size(1)
	for _, u := range []struct {
		suffix string
		mult   Size
	}{{"KiB", KiB}, {"MiB", MiB}, {"GiB", GiB}, {"TiB", TiB}, {"B", 1}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(v), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || Size(n) > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size; write whole bytes or whole KiB, MiB or GiB, e.g. 4MiB, 512KiB or 262144", in)
	}
	return Size(n) * mult, nil
}

// Bitrate is a rate in bits per second, written as a number with an optional unit: bit,
// kbit, Mbit or Gbit (powers of 1000, as network rates are), optionally followed by "/s"
// ("4Mbit", "2.5Mbit/s", "500kbit", "100000000"); "4Mbps" too. "4MB" is refused: bytes or
// bits? 0 (or "") is "not set"; what that means is the setting's own default.
type Bitrate int64

// Bitrate units.
const (
	Kbit Bitrate = 1000
	Mbit Bitrate = 1000 * Kbit
	Gbit Bitrate = 1000 * Mbit
)

// String renders the rate with the largest unit that divides it ("4Mbit", "2500kbit", "0").
func (b Bitrate) String() string {
	for _, u := range []struct {
		name string
		mult Bitrate
	}{{"Gbit", Gbit}, {"Mbit", Mbit}, {"kbit", Kbit}} {
		if b != 0 && b%u.mult == 0 {
			return strconv.FormatInt(int64(b/u.mult), 10) + u.name
		}
	}
	return strconv.FormatInt(int64(b), 10)
}

// MarshalText renders the rate as String does, so that `ferry config print` shows "4Mbit".
func (b Bitrate) MarshalText() ([]byte, error) { return []byte(b.String()), nil }

const bitrateHelp = "write bits per second with a unit, e.g. 4Mbit, 2.5Mbit or 500kbit (units: bit, kbit, Mbit, Gbit)"

// parseBitrate parses a Bitrate. "" is 0.
func parseBitrate(in string) (Bitrate, error) {
	s := strings.TrimSpace(in)
	if s == "" {
		return 0, nil
	}
	lower := strings.TrimSuffix(strings.ToLower(s), "/s")
	if v, ok := strings.CutSuffix(lower, "bps"); ok { // "Mbps" is megabits; "MB" (bytes) is refused
		lower = v + "bit"
	}
	mult := Bitrate(1)
	for _, u := range []struct {
		suffix string
		mult   Bitrate
	}{{"kbit", Kbit}, {"mbit", Mbit}, {"gbit", Gbit}, {"bit", 1}} {
		if v, ok := strings.CutSuffix(lower, u.suffix); ok {
			lower, mult = strings.TrimSpace(v), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(lower, 64)
	if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) || f*float64(mult) > 1e15 {
		return 0, fmt.Errorf("%q is not a bit rate; %s", in, bitrateHelp)
	}
	return Bitrate(math.Round(f * float64(mult))), nil
}

// decodeBitrate parses a Bitrate from text or a number of bits per second.
func decodeBitrate(_, to reflect.Type, data any) (any, error) {
	if to != bitrateType {
		return data, nil
	}
	switch v := data.(type) {
	case string:
		return parseBitrate(v)
	case int:
		return parseBitrate(strconv.Itoa(v))
	case int64:
		return parseBitrate(strconv.FormatInt(v, 10))
	case uint64:
		return parseBitrate(strconv.FormatUint(v, 10))
	case float64:
		return parseBitrate(strconv.FormatFloat(v, 'f', -1, 64))
	case Bitrate:
		return v, nil
	}
	return nil, fmt.Errorf("%v is not a bit rate; %s", data, bitrateHelp)
}

// AutoAddr is an IP address setting that may instead say "auto": Ferry then picks the
// address itself (relay.bind_ip).
type AutoAddr struct {
	Auto bool       // the setting is "auto"
	Addr netip.Addr // the address given; the zero Addr with Auto or when the setting is ""
}

// String renders the setting as written: "auto", the address, or "".
func (a AutoAddr) String() string {
	if a.Auto {
		return "auto"
	}
	if a.Addr.IsValid() {
		return a.Addr.String()
	}
	return ""
}

// MarshalText renders the setting as String does.
func (a AutoAddr) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// IsSet reports whether the setting is "auto" or an address.
func (a AutoAddr) IsSet() bool { return a.Auto || a.Addr.IsValid() }

// parsePrefix parses a CIDR ("10.1.0.0/16", "2001:db8::/32") or a bare address, which means
// that single host ("192.0.2.7" is 192.0.2.7/32).
func parsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if p, err := netip.ParsePrefix(s); err == nil {
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	sizeType     = reflect.TypeFor[Size]()
	bitrateType  = reflect.TypeFor[Bitrate]()
	prefixType   = reflect.TypeFor[netip.Prefix]()
	addrType     = reflect.TypeFor[netip.Addr]()
	autoAddrType = reflect.TypeFor[AutoAddr]()
)

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

// decodeSize parses a Size from text or a whole number of bytes.
func decodeSize(_, to reflect.Type, data any) (any, error) {
	if to != sizeType {
		return data, nil
	}
	switch v := data.(type) {
	case string:
		return parseSize(v)
	case int:
		return parseSize(strconv.Itoa(v))
	case int64:
		return parseSize(strconv.FormatInt(v, 10))
	case uint64:
		return parseSize(strconv.FormatUint(v, 10))
	case Size:
		return v, nil
	}
	// A fraction (4.0 would read as 4 bytes) or a switch.
	return nil, fmt.Errorf("%v is not a size; write whole bytes or whole KiB, MiB or GiB, e.g. 4MiB, 512KiB or 262144", data)
}

// decodeAddrs parses netip.Prefix (a CIDR or a bare address), netip.Addr ("" is unset) and
// AutoAddr ("auto", an address or "").
func decodeAddrs(_, to reflect.Type, data any) (any, error) {
	if to != prefixType && to != addrType && to != autoAddrType {
		return data, nil
	}
	s, ok := data.(string)
	if !ok {
		if reflect.TypeOf(data) == to {
			return data, nil
		}
		s = fmt.Sprint(data)
	}
	switch to {
	case prefixType:
		p, err := parsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR (like 10.1.0.0/16) or an IP address", s)
		}
		return p, nil
	case autoAddrType:
		if strings.TrimSpace(s) == "auto" {
			return AutoAddr{Auto: true}, nil
		}
		a, err := parseAddr(s)
		return AutoAddr{Addr: a}, err
	}
	return parseAddr(s)
}

// parseAddr parses an IP address, unmapping an IPv4-mapped IPv6 one; "" is the zero
// (unset) Addr.
func parseAddr(s string) (netip.Addr, error) {
	if strings.TrimSpace(s) == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address", s)
	}
	return a.Unmap(), nil
}
