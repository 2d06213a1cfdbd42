package signaling

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// FuzzDecodeMessage: the decoder never panics, accepts only the shapes it documents, and
// what it accepts re-encodes for the addressee as valid JSON that carries the same content.
func FuzzDecodeMessage(f *testing.F) {
	for _, s := range []string{`{"type":"ping"}`, `{"type":"offer","to":"abc","sdp":"v=0"}`,
		`{"type":"candidate","to":"abc","candidate":{"candidate":"c","sdpMid":"0"}}`,
		`{"type":"candidate","to":"abc","candidate":null}`, `{"type":"admit","id":"x_y-1"}`,
		`{"type":"name","name":"Müller"}`, `{"type":"end"}`, `[]`, `{"type":7}`, `{"type":"offer","to":"` +
			strings.Repeat("a", 40) + `","sdp":"x"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := decodeMessage(data)
		if err != nil {
			if !errors.Is(err, errBadMessage) {
				t.Fatalf("error not wrapping errBadMessage: %v", err)
			}
			if len(data) > 8 && strings.Contains(err.Error(), string(data)) {
				t.Fatalf("error echoes the message: %v", err)
			}
			return
		}
		if !relayed(m.Type) {
			return
		}
		if !validPeerID(m.To) {
			t.Fatalf("accepted a bad to: %q", m.To)
		}
		r := Relayed{Type: m.Type, Candidate: m.Candidate}
		if m.SDP != nil {
			r.SDP = *m.SDP
		}
		out, err := encodeRelayed("sender", 1, r)
		if m.Type != TypeCandidate && m.Type != TypeOffer && m.Type != TypeAnswer {
			if err != nil {
				t.Fatal(err)
			}
			return
		}
		if err != nil {
			t.Fatalf("accepted %q but cannot forward it: %v", data, err)
		}
		var back map[string]any
		if err := json.Unmarshal(out, &back); err != nil || back["type"] != m.Type || back["from"] != "sender" {
			t.Fatalf("forwarded %s as %s (%v)", data, out, err)
		}
		if (m.Type == TypeOffer || m.Type == TypeAnswer) && back["sdp"] != *m.SDP {
			t.Fatalf("sdp changed on the way: %q", out)
		}
	})
}

func TestDecodeMessageShapes(t *testing.T) {
	for in, ok := range map[string]bool{
		`{"type":"offer","to":"p1","sdp":"v=0"}`:                     true,
		`{"type":"offer","to":"p1","sdp":""}`:                        false,
		`{"type":"offer","to":"p1","sdp":5}`:                         false,
		`{"type":"answer","to":"a/b","sdp":"v=0"}`:                   false,
		`{"type":"candidate","to":"p1","candidate":null}`:            true,
		`{"type":"candidate","to":"p1"}`:                             false,
		`{"type":"candidate","to":"p1","candidate":"candidate:1"}`:   false,
		`{"type":"candidate","to":"p1","candidate":{"candidate":1}}`: true, // shape only
		`{"type":"restart","to":"p1","extra":{"x":1}}`:               true,
		`{"type":"bye"}`:                                           false,
		`{"type":"deny","id":""}`:                                  false,
		`{"type":"name","name":"a\u202eb"}`:                        false,
		`{"type":"name","name":"` + strings.Repeat("é", 65) + `"}`: false,
		`{"type":"ping"} trailing`:                                 false,
		`{"type":"PING"}`:                                          false,
	} {
		if _, err := decodeMessage([]byte(in)); (err == nil) != ok {
			t.Errorf("%s: err %v, want ok=%v", in, err, ok)
		}
	}
}

// A message with a field of the wrong type says which field and what it needs (it said
// "not a JSON object" for {"sdp":5} before); what is not an object still says so.
func TestDecodeMessageNamesTheWrongField(t *testing.T) {
	for in, want := range map[string]string{
		`{"type":"offer","to":"p1","sdp":5}`:     "bad message: sdp must be a string, not a number",
		`{"type":"offer","to":["p1"],"sdp":"x"}`: "bad message: to must be a string, not an array",
		`{"type":5}`:                             "bad message: type must be a string, not a number",
		`{"type":"name","name":{"first":"A"}}`:   "bad message: name must be a string, not an object",
		`{"type":"admit","id":true}`:             "bad message: id must be a string, not true or false",
		`[1,2]`:                                  "bad message: not a JSON object",
		`"offer"`:                                "bad message: not a JSON object",
		`{"type":"ping"} trailing`:               "bad message: syntax error at byte",
		`{"type":"ping"`:                         "bad message: the JSON ends too early",
	} {
		_, err := decodeMessage([]byte(in))
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%s: %v, want %q", in, err, want)
		}
	}
}
