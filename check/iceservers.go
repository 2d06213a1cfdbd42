package check

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// maxICEServersBody bounds the ICE-servers answer read, in bytes.
const maxICEServersBody = 1 << 20

// FetchTargets asks an ICE-servers endpoint for its servers, as a web app's backend does
// (GET with "Authorization: Bearer <apiKey>"), and returns every URL in the answer with its
// credential. It takes the three shapes Ferry answers and other services use: an
// RTCConfiguration ({"iceServers":[...]}), a bare iceServers array, and the TURN REST
// draft's {"username","password","uris"}. Errors name the HTTP status and the server's
// message.
func FetchTargets(ctx context.Context, client *http.Client, url, apiKey string) ([]Target, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("ICE servers: %w", err)
	}
	if apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+apiKey)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("ICE servers: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxICEServersBody))
	if err != nil {
		return nil, fmt.Errorf("ICE servers: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error struct{ Code, Message string }
		}
		msg := strings.TrimSpace(string(body))
		if json.Unmarshal(body, &e) == nil && e.Error.Message != "" {
			msg = e.Error.Message
		}
		if len(msg) > 200 {
			msg = msg[:200]
		}
		hint := ""
		if resp.StatusCode == http.StatusUnauthorized {
			hint = " (check the API key)"
		}
		return nil, fmt.Errorf("ICE servers: %s: %s%s", resp.Status, msg, hint)
	}
	targets, err := ParseICEServers(body)
	if err != nil {
		return nil, fmt.Errorf("ICE servers: %w", err)
	}
	return targets, nil
}

// iceServer is one RTCIceServer: urls is a string or an array of strings (W3C WebRTC §4.2.4).
type iceServer struct {
	URLs       json.RawMessage `json:"urls"`
	Username   string          `json:"username"`
	Credential string          `json:"credential"`
}

// ParseICEServers returns the URLs of an ICE-servers document (see FetchTargets for the
// shapes), each with its server's credential.
func ParseICEServers(doc []byte) ([]Target, error) {
	var shape struct {
		ICEServers []iceServer `json:"iceServers"`
		Username   string      `json:"username"`
		Password   string      `json:"password"`
		URIs       []string    `json:"uris"`
	}
	var servers []iceServer
	if err := json.Unmarshal(doc, &servers); err != nil {
		if err := json.Unmarshal(doc, &shape); err != nil {
			return nil, errors.New("the answer is not an RTCConfiguration, an iceServers array or a TURN REST response")
		}
		servers = shape.ICEServers
	}
	var out []Target
	for _, s := range servers {
		var urls []string
		if err := json.Unmarshal(s.URLs, &urls); err != nil {
			var one string
			if err := json.Unmarshal(s.URLs, &one); err != nil {
				return nil, errors.New(`an ICE server's "urls" is neither a string nor a list of strings`)
			}
			urls = []string{one}
		}
		for _, u := range urls {
			out = append(out, Target{URL: u, Username: s.Username, Password: s.Credential})
		}
	}
	for _, u := range shape.URIs {
		out = append(out, Target{URL: u, Username: shape.Username, Password: shape.Password})
	}
	if len(out) == 0 {
		return nil, errors.New("the answer lists no ICE server URL")
	}
	return out, nil
}
