package signaling

import "net/http"

// The request form of the TURN REST draft (draft-uberti-behave-turn-rest-00 §2.1), which
// apps and media servers written against that draft send to a credential service:
//
//	GET /v1/ice-servers?service=turn&username=<user id>&ttl=<seconds>&key=<API key>
//
// Ferry serves it on /v1/ice-servers as its own form, so that such clients work unchanged:
// key is the API key (an Authorization header, when present, wins), username the user id,
// ttl the lifetime; the answer is the draft's JSON (§2.2), {"username", "password", "ttl",
// "uris"}, unless the request also names a format. A key in a URL ends up in the access logs
// of every proxy on the way (Ferry's own access log keeps no query string): prefer the
// Authorization header where the client allows it.

// draftService is the only service the draft defines.
const draftService = "turn"

// fromDraft returns r in Ferry's own form when it is a TURN REST draft request (it has a
// service parameter), and r itself otherwise. problem is set, and the request must be
// answered 400, when the draft request asks for a service other than turn.
func fromDraft(r *http.Request) (_ *http.Request, problem string) {
	q := r.URL.Query()
	service, draft := q["service"]
	if !draft {
		return r, ""
	}
	if len(service) != 1 || service[0] != draftService {
		return r, `service must be "turn" (draft-uberti-behave-turn-rest-00)`
	}
	d := r.Clone(r.Context())
	if key := q.Get("key"); key != "" && d.Header.Get("Authorization") == "" {
		d.Header.Set("Authorization", "Bearer "+key)
	}
	if user, ok := q["username"]; ok && !q.Has("user") {
		q["user"] = user
	}
	if !q.Has("format") {
		q.Set("format", "rest")
	}
	for _, k := range []string{"service", "username", "key"} {
		q.Del(k) // the key goes no further than the header
	}
	d.URL.RawQuery = q.Encode()
	return d, ""
}
