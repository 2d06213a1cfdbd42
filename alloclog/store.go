// Package alloclog is the allocation log: an embedded SQLite store of who relayed what (and
// of signaling HTTP requests), kept for a retention period (48 h by default) and then deleted
// down to the bytes on disk.
package alloclog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	_ "modernc.org/sqlite" // database/sql driver "sqlite", pure Go
)

// schemaVersion is stored in PRAGMA user_version.
const schemaVersion = 1

const schema = `
CREATE TABLE IF NOT EXISTS allocations (
	id                INTEGER PRIMARY KEY,
	start_ms          INTEGER NOT NULL,
	end_ms            INTEGER,
	transport         TEXT    NOT NULL,
	client_ip         TEXT    NOT NULL,
	client_port       INTEGER NOT NULL,
	server            TEXT    NOT NULL,
	relayed           TEXT    NOT NULL,
	user_id           TEXT    NOT NULL,
	realm             TEXT    NOT NULL,
	bytes_to_peer     INTEGER NOT NULL DEFAULT 0,
	packets_to_peer   INTEGER NOT NULL DEFAULT 0,
	bytes_to_client   INTEGER NOT NULL DEFAULT 0,
	packets_to_client INTEGER NOT NULL DEFAULT 0,
	end_reason        TEXT
);
CREATE INDEX IF NOT EXISTS allocations_start ON allocations(start_ms);
CREATE INDEX IF NOT EXISTS allocations_client_ip ON allocations(client_ip);
CREATE INDEX IF NOT EXISTS allocations_user ON allocations(user_id);
CREATE TABLE IF NOT EXISTS permissions (
	allocation_id INTEGER NOT NULL,
	peer_ip       TEXT    NOT NULL,
	first_ms      INTEGER NOT NULL,
	PRIMARY KEY (allocation_id, peer_ip)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS permissions_peer ON permissions(peer_ip);
CREATE TABLE IF NOT EXISTS http_requests (
	id         INTEGER PRIMARY KEY,
	time_ms    INTEGER NOT NULL,
	client_ip  TEXT    NOT NULL,
	route      TEXT    NOT NULL,
	status     INTEGER NOT NULL,
	user_agent TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS http_time ON http_requests(time_ms);
CREATE INDEX IF NOT EXISTS http_client_ip ON http_requests(client_ip);
`

// FileName is the database's name inside Ferry's data directory.
const FileName = "alloclog.db"

// Store is the allocation log database. Its methods are safe for concurrent use, also by
// several processes (the server and `ferry logs`): SQLite's WAL mode lets readers run beside
// the writer and a busy timeout serialises writers.
type Store struct {
	db   *sql.DB
	path string
}

// dsn opens path with the pragmas every connection needs: WAL, secure_delete (deleted rows
// are overwritten with zeros), temp data in memory (no temp files with personal data), a
// busy timeout for the other process's writes.
func dsn(path string, busy time.Duration) string {
	q := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "secure_delete(ON)", "temp_store(MEMORY)",
		fmt.Sprintf("busy_timeout(%d)", busy.Milliseconds()), "synchronous(NORMAL)"} {
		q.Add("_pragma", p)
	}
	return "file:" + path + "?" + q.Encode()
}

// defaultBusyTimeout is how long an operation waits for another process's write lock.
const defaultBusyTimeout = 5 * time.Second

// OpenStore opens (creating if needed) the database at path. It fails with a clear error when
// the file is corrupt, is not an SQLite database, or cannot be written.
func OpenStore(ctx context.Context, path string) (*Store, error) {
	return openStore(ctx, path, 0)
}

func openStore(ctx context.Context, path string, busy time.Duration) (*Store, error) {
	if busy <= 0 {
		busy = defaultBusyTimeout
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("alloclog: %w", err)
	}
	db, err := sql.Open("sqlite", dsn(path, busy))
	if err != nil {
		return nil, fmt.Errorf("alloclog: open %s: %w", path, err)
	}
	s := &Store{db: db, path: path}
	if err := s.init(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) init(ctx context.Context) error {
	var check string
	if err := s.db.QueryRowContext(ctx, "PRAGMA quick_check").Scan(&check); err != nil {
		return fmt.Errorf("alloclog: %s is not a readable SQLite database (%v); move it aside to start a new log", s.path, err)
	}
	if check != "ok" {
		return fmt.Errorf("alloclog: %s is corrupt (quick_check: %s); move it aside to start a new log", s.path, check)
	}
	var version int
	if err := s.db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return fmt.Errorf("alloclog: %s: %w", s.path, err)
	}
	if version > schemaVersion {
		return fmt.Errorf("alloclog: %s has schema version %d, newer than this ferry's %d", s.path, version, schemaVersion)
	}
	if _, err := s.db.ExecContext(ctx, schema); err != nil {
		return fmt.Errorf("alloclog: %s is not writable: %w", s.path, err)
	}
	if _, err := s.db.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", schemaVersion)); err != nil {
		return fmt.Errorf("alloclog: %s is not writable: %w", s.path, err)
	}
	if err := os.Chmod(s.path, 0o600); err != nil {
		return fmt.Errorf("alloclog: %w", err)
	}
	return nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Path returns the database file.
func (s *Store) Path() string { return s.path }

// checkpoint moves the WAL into the database and truncates it, so that deleted rows leave
// no copy in the -wal file (secure_delete already zeroed them in the pages).
func (s *Store) checkpoint(ctx context.Context) error {
	var busy, logFrames, done int
	if err := s.db.QueryRowContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logFrames, &done); err != nil {
		return fmt.Errorf("alloclog: checkpoint: %w", err)
	}
	if busy != 0 {
		return errors.New("alloclog: checkpoint incomplete: the database is busy; the next purge retries")
	}
	return nil
}

// Counts are numbers of records by kind.
type Counts struct {
	Allocations  int64 `json:"allocations"`
	Permissions  int64 `json:"permissions"`
	HTTPRequests int64 `json:"http_requests"`
}

// Total is the number of records of all kinds.
func (c Counts) Total() int64 { return c.Allocations + c.Permissions + c.HTTPRequests }

// Purge deletes every record that started before cutoff (allocations with their
// permissions, HTTP requests) and checkpoints, so the bytes leave the disk.
func (s *Store) Purge(ctx context.Context, cutoff time.Time) (Counts, error) {
	ms := cutoff.UnixMilli()
	return s.deleteWhere(ctx,
		"DELETE FROM permissions WHERE allocation_id IN (SELECT id FROM allocations WHERE start_ms < ?)", []any{ms},
		"DELETE FROM allocations WHERE start_ms < ?", []any{ms},
		"DELETE FROM http_requests WHERE time_ms < ?", []any{ms})
}

// Filter selects records: by client or peer IP address, by user id, and by time range
// (start time for allocations, request time for HTTP requests). Zero fields match all.
type Filter struct {
	IP     netip.Addr
	UserID *string
	Since  time.Time // inclusive
	Until  time.Time // exclusive
}

// Erase deletes every record about an IP address (as client or peer) or a user id
// (GDPR Art. 17) and checkpoints. It refuses a filter without IP or user.
func (s *Store) Erase(ctx context.Context, f Filter) (Counts, error) {
	switch {
	case f.IP.IsValid() && f.UserID == nil:
		ip := canonIP(f.IP)
		return s.deleteWhere(ctx,
			"DELETE FROM permissions WHERE peer_ip = ? OR allocation_id IN (SELECT id FROM allocations WHERE client_ip = ?)", []any{ip, ip},
			"DELETE FROM allocations WHERE client_ip = ?", []any{ip},
			"DELETE FROM http_requests WHERE client_ip = ?", []any{ip})
	case f.UserID != nil && !f.IP.IsValid():
		return s.deleteWhere(ctx,
			"DELETE FROM permissions WHERE allocation_id IN (SELECT id FROM allocations WHERE user_id = ?)", []any{*f.UserID},
			"DELETE FROM allocations WHERE user_id = ?", []any{*f.UserID},
			"", nil)
	}
	return Counts{}, errors.New("alloclog: erase needs exactly one of an IP address or a user id")
}

// deleteWhere runs the three deletes (permissions, allocations, HTTP requests) in one
// transaction, then checkpoints.
func (s *Store) deleteWhere(ctx context.Context, perms string, pa []any, allocs string, aa []any, reqs string, ra []any) (Counts, error) {
	var c Counts
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return c, fmt.Errorf("alloclog: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	for _, q := range []struct {
		sql  string
		args []any
		n    *int64
	}{{perms, pa, &c.Permissions}, {allocs, aa, &c.Allocations}, {reqs, ra, &c.HTTPRequests}} {
		if q.sql == "" {
			continue
		}
		res, err := tx.ExecContext(ctx, q.sql, q.args...)
		if err != nil {
			return Counts{}, fmt.Errorf("alloclog: delete: %w", err)
		}
		*q.n, _ = res.RowsAffected()
	}
	if err := tx.Commit(); err != nil {
		return Counts{}, fmt.Errorf("alloclog: delete: %w", err)
	}
	return c, s.checkpoint(ctx)
}

// canonIP is the stored text form of an address: IPv4-mapped IPv6 unmapped, IPv6
// compressed and lower case, no zone.
func canonIP(ip netip.Addr) string { return ip.Unmap().WithZone("").String() }

// Stats describes what the log holds.
type Stats struct {
	Counts
	// Oldest is the start of the oldest record; zero when the log is empty.
	Oldest time.Time `json:"oldest,omitzero"`
}

// Stats counts the records and finds the oldest one.
func (s *Store) Stats(ctx context.Context) (Stats, error) {
	var st Stats
	var oldest sql.NullInt64
	err := s.db.QueryRowContext(ctx, `SELECT
		(SELECT COUNT(*) FROM allocations), (SELECT COUNT(*) FROM permissions),
		(SELECT COUNT(*) FROM http_requests),
		(SELECT MIN(t) FROM (SELECT MIN(start_ms) AS t FROM allocations UNION ALL SELECT MIN(time_ms) FROM http_requests))`).
		Scan(&st.Allocations, &st.Permissions, &st.HTTPRequests, &oldest)
	if err != nil {
		return st, fmt.Errorf("alloclog: stats: %w", err)
	}
	if oldest.Valid {
		st.Oldest = time.UnixMilli(oldest.Int64).UTC()
	}
	return st, nil
}

// AllocationRecord is an allocation as stored.
type AllocationRecord struct {
	ID              uint64       `json:"id"`
	Start           time.Time    `json:"start"`
	End             *time.Time   `json:"end,omitempty"`
	Transport       string       `json:"transport"`
	ClientIP        string       `json:"client_ip"`
	ClientPort      int          `json:"client_port"`
	Server          string       `json:"server"`
	Relayed         string       `json:"relayed"`
	UserID          string       `json:"user_id"`
	Realm           string       `json:"realm"`
	Peers           []PeerRecord `json:"peers"`
	BytesToPeer     int64        `json:"bytes_to_peer"`
	PacketsToPeer   int64        `json:"packets_to_peer"`
	BytesToClient   int64        `json:"bytes_to_client"`
	PacketsToClient int64        `json:"packets_to_client"`
	EndReason       string       `json:"end_reason,omitempty"`
}

// PeerRecord is a peer IP an allocation was permitted to reach, with the first permission.
type PeerRecord struct {
	IP    string    `json:"ip"`
	First time.Time `json:"first_permission"`
}

// HTTPRecord is a signaling HTTP request as stored.
type HTTPRecord struct {
	Time      time.Time `json:"time"`
	ClientIP  string    `json:"client_ip"`
	Route     string    `json:"route"`
	Status    int       `json:"status"`
	UserAgent string    `json:"user_agent"`
}

// Records are the result of a query.
type Records struct {
	Allocations  []AllocationRecord `json:"allocations"`
	HTTPRequests []HTTPRecord       `json:"http_requests"`
}

// Query returns the records matching f (GDPR Art. 15/20 export). An IP matches allocations
// where it is the client or a permitted peer, and HTTP requests from it; a user id matches
// allocations only.
func (s *Store) Query(ctx context.Context, f Filter) (Records, error) {
	out := Records{Allocations: []AllocationRecord{}, HTTPRequests: []HTTPRecord{}}
	var err error
	if out.Allocations, err = s.queryAllocations(ctx, f); err != nil {
		return out, fmt.Errorf("alloclog: query: %w", err)
	}
	if f.UserID != nil {
		return out, nil // HTTP requests carry no user
	}
	if out.HTTPRequests, err = s.queryHTTP(ctx, f); err != nil {
		return out, fmt.Errorf("alloclog: query: %w", err)
	}
	return out, nil
}

// queryAllocations returns the allocations matching f, each with its permitted peers.
func (s *Store) queryAllocations(ctx context.Context, f Filter) ([]AllocationRecord, error) {
	var where []string
	var args []any
	if f.IP.IsValid() {
		ip := canonIP(f.IP)
		where = append(where, "(a.client_ip = ? OR a.id IN (SELECT allocation_id FROM permissions WHERE peer_ip = ?))")
		args = append(args, ip, ip)
	}
	if f.UserID != nil {
		where = append(where, "a.user_id = ?")
		args = append(args, *f.UserID)
	}
	where, args = timeRange(where, args, "a.start_ms", f)
	q := `SELECT a.id, a.start_ms, a.end_ms, a.transport, a.client_ip, a.client_port, a.server, a.relayed,
		a.user_id, a.realm, a.bytes_to_peer, a.packets_to_peer, a.bytes_to_client, a.packets_to_client,
		COALESCE(a.end_reason, ''), COALESCE(p.peer_ip, ''), COALESCE(p.first_ms, 0)
		FROM allocations a LEFT JOIN permissions p ON p.allocation_id = a.id` + whereClause(where) +
		" ORDER BY a.start_ms, a.id, p.first_ms"
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []AllocationRecord{}
	for rows.Next() {
		var r AllocationRecord
		var start, firstMS, id int64
		var end sql.NullInt64
		var peer string
		if err := rows.Scan(&id, &start, &end, &r.Transport, &r.ClientIP, &r.ClientPort, &r.Server, &r.Relayed,
			&r.UserID, &r.Realm, &r.BytesToPeer, &r.PacketsToPeer, &r.BytesToClient, &r.PacketsToClient,
			&r.EndReason, &peer, &firstMS); err != nil {
			return nil, err
		}
		r.ID = uint64(id)
		if n := len(out); n == 0 || out[n-1].ID != r.ID { // a row per permission: one record per allocation
			r.Start = time.UnixMilli(start).UTC()
			if end.Valid {
				e := time.UnixMilli(end.Int64).UTC()
				r.End = &e
			}
			r.Peers = []PeerRecord{}
			out = append(out, r)
		}
		if peer != "" {
			last := &out[len(out)-1]
			last.Peers = append(last.Peers, PeerRecord{peer, time.UnixMilli(firstMS).UTC()})
		}
	}
	return out, rows.Err()
}

// queryHTTP returns the signaling requests matching f's address and time range.
func (s *Store) queryHTTP(ctx context.Context, f Filter) ([]HTTPRecord, error) {
	var where []string
	var args []any
	if f.IP.IsValid() {
		where = append(where, "client_ip = ?")
		args = append(args, canonIP(f.IP))
	}
	where, args = timeRange(where, args, "time_ms", f)
	q := "SELECT time_ms, client_ip, route, status, user_agent FROM http_requests" + whereClause(where) + " ORDER BY time_ms, id"
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []HTTPRecord{}
	for rows.Next() {
		var r HTTPRecord
		var t int64
		if err := rows.Scan(&t, &r.ClientIP, &r.Route, &r.Status, &r.UserAgent); err != nil {
			return nil, err
		}
		r.Time = time.UnixMilli(t).UTC()
		out = append(out, r)
	}
	return out, rows.Err()
}

// timeRange adds f's Since and Until on column (Unix milliseconds) to a WHERE clause.
func timeRange(where []string, args []any, column string, f Filter) ([]string, []any) {
	if !f.Since.IsZero() {
		where, args = append(where, column+" >= ?"), append(args, f.Since.UnixMilli())
	}
	if !f.Until.IsZero() {
		where, args = append(where, column+" < ?"), append(args, f.Until.UnixMilli())
	}
	return where, args
}

func whereClause(where []string) string {
	if len(where) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(where, " AND ")
}
