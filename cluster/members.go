package cluster

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Members returns the nodes that data-subject requests must reach, sorted by id: every node
// whose allocation-log records may not be purged yet, running or not. Entries past that are
// removed.
func Members(ctx context.Context, c *redis.Client) ([]Member, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*commandTimeout)
	defer cancel()
	all, err := c.HGetAll(ctx, membersKey).Result()
	if err != nil {
		return nil, fmt.Errorf("cluster: read the node list from Redis: %w", err)
	}
	now := time.Now().Unix()
	var out []Member
	var gone []string
	for id, v := range all {
		var m Member
		if json.Unmarshal([]byte(v), &m) != nil || m.ID != id {
			continue
		}
		if m.RecordsUntil < now && m.LastSeen < now-3600 {
			gone = append(gone, id)
			continue
		}
		out = append(out, m)
	}
	if len(gone) > 0 {
		_ = c.HDel(ctx, membersKey, gone...).Err() // best effort: the next call tries again
	}
	slices.SortFunc(out, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// Result is one node's answer to a request sent to every member.
type Result struct {
	Node string `json:"node"`
	// Done is true when the node carried the request out (it answered 200).
	Done bool `json:"done"`
	// Body is the node's answer (JSON) when Done.
	Body json.RawMessage `json:"result,omitempty"`
	// Error says why the node is not done.
	Error string `json:"error,omitempty"`
}

// maxAnswer bounds a node's answer (an export of a busy address's records).
const maxAnswer = 256 << 20

// FanOut POSTs body (JSON) to path on every member's admin listener with the admin token,
// all at once, each bounded by timeout, and returns one Result per member in their order. A
// member that cannot be reached, does not answer in time or answers anything but 200 is not
// done: the caller must say so, never skip it.
func FanOut(ctx context.Context, members []Member, path string, body []byte, token string, timeout time.Duration) []Result {
	out := make([]Result, len(members))
	client := &http.Client{Timeout: timeout, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse // the token goes to the listed URL only
	}}
	var wg sync.WaitGroup
	for i, m := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = call(ctx, client, m, path, body, token)
		}()
	}
	wg.Wait()
	return out
}

func call(ctx context.Context, client *http.Client, m Member, path string, body []byte, token string) Result {
	r := Result{Node: m.ID}
	if m.AdminURL == "" {
		r.Error = "the node registered no admin URL"
		return r
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(m.AdminURL, "/")+path, bytes.NewReader(body))
	if err != nil {
		r.Error = err.Error()
		return r
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		r.Error = "not reachable: " + err.Error()
		if age := time.Since(time.Unix(m.LastSeen, 0)); age > time.Minute {
			r.Error += fmt.Sprintf(" (last seen %s ago)", age.Round(time.Second))
		}
		return r
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	switch {
	case err != nil:
		r.Error = "answer cut off: " + err.Error()
	case len(data) > maxAnswer:
		r.Error = "answer larger than 256 MiB"
	case resp.StatusCode != http.StatusOK:
		r.Error = fmt.Sprintf("answered %s: %.300s", resp.Status, bytes.TrimSpace(data))
	case !json.Valid(data):
		r.Error = "answered something other than JSON"
	default:
		r.Done, r.Body = true, data
	}
	return r
}
