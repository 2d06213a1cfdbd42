package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/ferryrelay/ferry/alloclog"
	"github.com/ferryrelay/ferry/cluster"
	"github.com/ferryrelay/ferry/config"
	"github.com/spf13/cobra"
)

// Data-subject requests across the cluster: `ferry logs export|erase --cluster` sends the
// request to every node's admin listener (POST /-/logs/export, /-/logs/erase), authenticated
// with cluster.admin_token_file's token, and reports per node. The allocation log stays on
// each node: no IP address goes into Redis, only the list of nodes.

// Admin paths of data-subject requests.
const (
	dsrExportPath = "/-/logs/export"
	dsrErasePath  = "/-/logs/erase"
)

// dsrTimeout bounds one node's answer.
const dsrTimeout = 60 * time.Second

// dsrRequest is what a node is asked: the records about an IP address or a user id,
// optionally within [since, until) (RFC 3339; export only).
type dsrRequest struct {
	IP    string  `json:"ip,omitempty"`
	User  *string `json:"user,omitempty"`
	Since string  `json:"since,omitempty"`
	Until string  `json:"until,omitempty"`
}

// dsrAnswer is a node's answer: what it erased, or the records it holds.
type dsrAnswer struct {
	Node    string            `json:"node"`
	Erased  *alloclog.Counts  `json:"erased,omitempty"`
	Records *alloclog.Records `json:"records,omitempty"`
	Note    string            `json:"note,omitempty"`
}

// addLogsHandlers serves the data-subject requests on the admin listener when the cluster
// has an admin token.
func (s *server) addLogsHandlers(mux *http.ServeMux) {
	mux.HandleFunc(dsrExportPath, func(w http.ResponseWriter, r *http.Request) { s.serveDSR(w, r, false) })
	mux.HandleFunc(dsrErasePath, func(w http.ResponseWriter, r *http.Request) { s.serveDSR(w, r, true) })
}

func (s *server) serveDSR(w http.ResponseWriter, r *http.Request, erase bool) {
	if !opsRequest(w, r, http.MethodPost) {
		return
	}
	f := s.conf.Load()
	token := f.Cluster.AdminToken
	if token == "" {
		writeOps(w, http.StatusNotFound, opsStatus{Status: "not configured", Problems: []string{"cluster.admin_token_file is not set on this node"}})
		return
	}
	given, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	a, b := sha256.Sum256([]byte(given)), sha256.Sum256([]byte(token))
	if subtle.ConstantTimeCompare(a[:], b[:]) != 1 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="ferry-admin"`)
		writeOps(w, http.StatusUnauthorized, opsStatus{Status: "unauthorized", Problems: []string{"missing or wrong cluster admin token"}})
		return
	}
	var req dsrRequest
	body, err := io.ReadAll(io.LimitReader(r.Body, 4096))
	if err == nil {
		err = json.Unmarshal(body, &req)
	}
	filter, ferr := req.filter(erase)
	if err != nil || ferr != nil {
		writeOps(w, http.StatusBadRequest, opsStatus{Status: "bad request", Problems: []string{fmt.Sprint(errors.Join(err, ferr))}})
		return
	}
	ans := dsrAnswer{Node: s.nodeName()}
	if s.alloclog == nil {
		ans.Note = "the allocation log is off on this node: it keeps no records"
		if erase {
			ans.Erased = &alloclog.Counts{}
		} else {
			ans.Records = &alloclog.Records{}
		}
		writeJSONAnswer(w, ans)
		return
	}
	if err := s.answerDSR(r.Context(), filter, erase, &ans); err != nil {
		s.log.Error("data-subject request failed", "err", err)
		writeOps(w, http.StatusInternalServerError, opsStatus{Status: "failed", Problems: []string{err.Error()}})
		return
	}
	writeJSONAnswer(w, ans)
}

// answerDSR writes what is queued first, so that the request covers every record so far.
func (s *server) answerDSR(ctx context.Context, filter alloclog.Filter, erase bool, ans *dsrAnswer) error {
	if err := s.alloclog.Flush(ctx); err != nil {
		return err
	}
	store := s.alloclog.Store()
	if erase {
		n, err := store.Erase(ctx, filter)
		ans.Erased = &n
		if err == nil {
			s.log.Info("data-subject request: records erased", "by", "ferry logs erase --cluster", "records", n.Total())
		}
		return err
	}
	recs, err := store.Query(ctx, filter)
	ans.Records = &recs
	return err
}

func (s *server) nodeName() string {
	if s.cluster != nil {
		return s.cluster.id
	}
	return ""
}

func writeJSONAnswer(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}

// filter checks a request: erase needs exactly one of ip or user; export one of them or a
// time range.
func (q dsrRequest) filter(erase bool) (alloclog.Filter, error) {
	var f alloclog.Filter
	var err error
	if q.IP != "" {
		if f.IP, err = netip.ParseAddr(q.IP); err != nil {
			return f, fmt.Errorf("ip: %q is not an IP address", q.IP)
		}
	}
	f.UserID = q.User
	for _, t := range []struct {
		s   string
		out *time.Time
	}{{q.Since, &f.Since}, {q.Until, &f.Until}} {
		if t.s != "" {
			if *t.out, err = time.Parse(time.RFC3339Nano, t.s); err != nil {
				return f, fmt.Errorf("since/until: %q is not an RFC 3339 time", t.s)
			}
		}
	}
	switch {
	case erase && f.IP.IsValid() == (f.UserID != nil):
		return f, errors.New("erase needs exactly one of ip or user")
	case !erase && !f.IP.IsValid() && f.UserID == nil && f.Since.IsZero() && f.Until.IsZero():
		return f, errors.New("export needs ip, user or a time range")
	}
	return f, nil
}

// clusterRequest sends a data-subject request to every node of the cluster and returns each
// node's result.
func clusterRequest(ctx context.Context, f *config.File, path string, req dsrRequest) ([]cluster.Result, error) {
	if !f.Cluster.Enabled() {
		return nil, errors.New("--cluster needs cluster.redis_url (use the same --config as the nodes)")
	}
	if f.Cluster.AdminToken == "" {
		return nil, errors.New("--cluster needs cluster.admin_token_file, the token every node's admin listener checks")
	}
	client, err := cluster.NewClient(f.Cluster.RedisURL, f.Cluster.RedisPassword)
	if err != nil {
		return nil, err
	}
	defer client.Close()
	members, err := cluster.Members(ctx, client)
	if err != nil {
		return nil, err
	}
	if len(members) == 0 {
		return nil, errors.New("no node is registered in Redis: is this the cluster's Redis?")
	}
	body, _ := json.Marshal(req)
	return cluster.FanOut(ctx, members, path, body, f.Cluster.AdminToken, dsrTimeout), nil
}

// notDone returns the error a command ends with when some nodes are not done.
func notDone(cmd string, results []cluster.Result) error {
	n := 0
	for _, r := range results {
		if !r.Done {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	return fmt.Errorf("%s --cluster: %d of %d node(s) NOT DONE; run it again once they answer", cmd, n, len(results))
}

// dsrRequestOf is the request a node's admin listener gets for filter.
func dsrRequestOf(filter alloclog.Filter) dsrRequest {
	req := dsrRequest{User: filter.UserID}
	if filter.IP.IsValid() {
		req.IP = filter.IP.String()
	}
	if !filter.Since.IsZero() {
		req.Since = filter.Since.UTC().Format(time.RFC3339Nano)
	}
	if !filter.Until.IsZero() {
		req.Until = filter.Until.UTC().Format(time.RFC3339Nano)
	}
	return req
}

// runClusterErase is `ferry logs erase --cluster`: a line per node.
func runClusterErase(cmd *cobra.Command, filter alloclog.Filter) error {
	f, err := loadConfig(cmd)
	if err != nil {
		return err
	}
	results, err := clusterRequest(cmd.Context(), f, dsrErasePath, dsrRequestOf(filter))
	if err != nil {
		return fmt.Errorf("logs erase: %w", err)
	}
	out := cmd.OutOrStdout()
	for _, r := range results {
		if !r.Done {
			fmt.Fprintf(out, "%s: NOT DONE: %s\n", r.Node, r.Error)
			continue
		}
		var a dsrAnswer
		if json.Unmarshal(r.Body, &a) != nil || a.Erased == nil {
			fmt.Fprintf(out, "%s: NOT DONE: unexpected answer\n", r.Node)
			continue
		}
		n := a.Erased
		fmt.Fprintf(out, "%s: done: erased %d records: %d allocations, %d permissions, %d HTTP requests\n",
			r.Node, n.Total(), n.Allocations, n.Permissions, n.HTTPRequests)
	}
	return notDone("logs erase", results)
}

// clusterExport is the output of `ferry logs export --cluster`.
type clusterExport struct {
	Nodes []nodeExport `json:"nodes"`
}

type nodeExport struct {
	Node    string            `json:"node"`
	Done    bool              `json:"done"`
	Error   string            `json:"error,omitempty"`
	Records *alloclog.Records `json:"records,omitempty"`
}

// runClusterExport is `ferry logs export --cluster`: the records of every node, as JSON.
func runClusterExport(cmd *cobra.Command, filter alloclog.Filter) error {
	f, err := loadConfig(cmd)
	if err != nil {
		return err
	}
	results, err := clusterRequest(cmd.Context(), f, dsrExportPath, dsrRequestOf(filter))
	if err != nil {
		return fmt.Errorf("logs export: %w", err)
	}
	var exp clusterExport
	for _, r := range results {
		ne := nodeExport{Node: r.Node, Done: r.Done, Error: r.Error}
		if r.Done {
			var a dsrAnswer
			if json.Unmarshal(r.Body, &a) != nil || a.Records == nil {
				ne.Done, ne.Error = false, "unexpected answer"
			} else {
				ne.Records = a.Records
			}
		}
		exp.Nodes = append(exp.Nodes, ne)
	}
	if err := printJSON(cmd.OutOrStdout(), exp); err != nil {
		return err
	}
	return notDone("logs export", results)
}
