package alloclog

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults for Config's zero values.
const (
	DefaultRetention     = 48 * time.Hour
	DefaultPurgeInterval = time.Minute
	DefaultQueueLen      = 16384
	// maxBatch bounds the records written in one transaction.
	maxBatch = 512
	// lingerTime is how long the writer waits to fill a batch.
	lingerTime = 20 * time.Millisecond
)

// Config configures a Log.
type Config struct {
	// Path is the database file (FileName in Ferry's data directory).
	Path string
	// Retention: records whose start is older are deleted. Zero means DefaultRetention.
	Retention time.Duration
	// PurgeInterval: how often the purge runs (and so how late a record may outlive its
	// retention at most). Zero means DefaultPurgeInterval.
	PurgeInterval time.Duration
	// QueueLen bounds the records waiting to be written; beyond, records are dropped and
	// counted. Zero means DefaultQueueLen.
	QueueLen int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Registerer receives the log's metrics; nil means a private registry.
	Registerer prometheus.Registerer
	// Logger gets operational messages (never a record's content); nil discards.
	Logger *slog.Logger
	// BusyTimeout is how long a write waits for another process's lock (ferry logs erase)
	// before the batch is dropped. Zero means 5 s.
	BusyTimeout time.Duration
}

// Allocation is a new allocation. It holds personal data.
type Allocation struct {
	ID        uint64
	Start     time.Time
	Transport string
	Client    netip.AddrPort
	Server    netip.AddrPort
	Relayed   netip.AddrPort
	UserID    string
	Realm     string
}

// AllocationEnd is the end of an allocation with its traffic totals.
type AllocationEnd struct {
	ID                             uint64
	End                            time.Time
	Reason                         string
	BytesToPeer, PacketsToPeer     uint64
	BytesToClient, PacketsToClient uint64
}

// HTTPRequest is one signaling HTTP request.
type HTTPRequest struct {
	Time      time.Time
	ClientIP  netip.Addr
	Route     string
	Status    int
	UserAgent string
}

type kind uint8

const (
	kindStart kind = iota + 1
	kindPermission
	kindEnd
	kindHTTP
)

var kindLabels = map[kind]string{kindStart: "allocation", kindPermission: "permission", kindEnd: "allocation_end", kindHTTP: "http_request"}

type event struct {
	kind  kind
	alloc Allocation
	end   AllocationEnd
	peer  netip.Addr
	at    time.Time
	http  HTTPRequest
	flush chan struct{} // a flush marker: closed once everything before it is written
}

// Log is the running allocation log: relay and signaling events arrive through a bounded
// queue (Add* methods never block), one goroutine writes them in batches and purges old
// records every PurgeInterval.
type Log struct {
	store     *Store
	cfg       Config
	now       func() time.Time
	log       *slog.Logger
	queue     chan event
	done      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
	m         logMetrics
	lastWarn  time.Time
}

type logMetrics struct {
	written *prometheus.CounterVec
	dropped *prometheus.CounterVec
	purged  *prometheus.CounterVec
}

// Open opens the database, purges it once and starts the writer. Errors name the file and
// what is wrong with it (corrupt, not a database, not writable).
func Open(ctx context.Context, cfg Config) (*Log, error) {
	cfg.Retention = cmp.Or(cfg.Retention, DefaultRetention)
	cfg.PurgeInterval = cmp.Or(cfg.PurgeInterval, DefaultPurgeInterval)
	cfg.QueueLen = cmp.Or(cfg.QueueLen, DefaultQueueLen)
	l := &Log{cfg: cfg, now: cfg.Now, log: cfg.Logger, queue: make(chan event, cfg.QueueLen), done: make(chan struct{})}
	if l.now == nil {
		l.now = time.Now
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	l.log = l.log.With("component", "alloclog")
	store, err := openStore(ctx, cfg.Path, cfg.BusyTimeout)
	if err != nil {
		return nil, err
	}
	l.store = store
	// One connection writes, so batches and purges never contend with each other.
	store.db.SetMaxOpenConns(1)
	if err := l.registerMetrics(cfg.Registerer); err != nil {
		store.Close()
		return nil, err
	}
	if err := l.purge(ctx); err != nil {
		store.Close()
		return nil, err
	}
	l.wg.Go(l.run)
	return l, nil
}

func (l *Log) registerMetrics(reg prometheus.Registerer) error {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	l.m = logMetrics{
		written: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_alloclog_records_written_total",
			Help: "Records written to the allocation log, by kind.",
		}, []string{"kind"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_alloclog_records_dropped_total",
			Help: "Records lost, by reason: queue_full (the writer fell behind) or write_error (disk full, database locked).",
		}, []string{"reason"}),
		purged: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_alloclog_records_purged_total",
			Help: "Records deleted because they passed the retention, by kind.",
		}, []string{"kind"}),
	}
	oldest := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ferry_alloclog_oldest_record_age_seconds",
		Help: "Age of the oldest record in the allocation log, in seconds (0 when empty). Alert when it exceeds the retention.",
	}, l.oldestAge)
	retention := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "ferry_alloclog_retention_seconds",
		Help: "Configured retention of the allocation log, in seconds.",
	})
	retention.Set(l.cfg.Retention.Seconds())
	for _, c := range []prometheus.Collector{l.m.written, l.m.dropped, l.m.purged, oldest, retention} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("alloclog: metrics: %w", err)
		}
	}
	for _, k := range kindLabels {
		l.m.written.WithLabelValues(k)
	}
	for _, k := range []string{"allocation", "permission", "http_request"} {
		l.m.purged.WithLabelValues(k)
	}
	l.m.dropped.WithLabelValues("queue_full")
	l.m.dropped.WithLabelValues("write_error")
	return nil
}

// oldestAge reads the oldest record's age for the gauge; it uses the database directly, so
// it also sees what another process (ferry logs erase) changed.
func (l *Log) oldestAge() float64 {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := l.store.Stats(ctx)
	if err != nil || st.Oldest.IsZero() {
		return 0
	}
	return l.now().Sub(st.Oldest).Seconds()
}

func (l *Log) enqueue(e event) {
	select {
	case l.queue <- e:
	default:
		l.m.dropped.WithLabelValues("queue_full").Inc()
	}
}

// AllocationStarted records a new allocation. It never blocks.
func (l *Log) AllocationStarted(a Allocation) { l.enqueue(event{kind: kindStart, alloc: a}) }

// PermissionCreated records the first permission of an allocation for peer. It never blocks.
func (l *Log) PermissionCreated(id uint64, peer netip.Addr, at time.Time) {
	l.enqueue(event{kind: kindPermission, alloc: Allocation{ID: id}, peer: peer, at: at})
}

// AllocationEnded records an allocation's end and traffic. It never blocks.
func (l *Log) AllocationEnded(e AllocationEnd) { l.enqueue(event{kind: kindEnd, end: e}) }

// HTTPRequest records a signaling HTTP request. It never blocks.
func (l *Log) HTTPRequest(r HTTPRequest) { l.enqueue(event{kind: kindHTTP, http: r}) }

// Flush waits until every record queued before the call is written (or dropped).
func (l *Log) Flush(ctx context.Context) error {
	ch := make(chan struct{})
	select {
	case l.queue <- event{flush: ch}:
	case <-l.done:
		return errors.New("alloclog: closed")
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Store returns the underlying database (for queries beside the writer).
func (l *Log) Store() *Store { return l.store }

// Close writes what is queued, stops the writer and closes the database. Idempotent.
func (l *Log) Close() error {
	l.closeOnce.Do(func() {
		close(l.done)
		l.wg.Wait()
		l.closeErr = l.store.Close()
	})
	return l.closeErr
}

func (l *Log) run() {
	t := time.NewTicker(l.cfg.PurgeInterval)
	defer t.Stop()
	batch := make([]event, 0, maxBatch)
	for {
		select {
		case e := <-l.queue:
			// Gather more for one transaction: a commit costs far more than a row, and the
			// log can wait a few milliseconds.
			batch = append(batch[:0], e)
			linger := time.NewTimer(lingerTime)
		fill:
			for len(batch) < maxBatch && e.flush == nil {
				select {
				case e = <-l.queue:
					batch = append(batch, e)
				case <-linger.C:
					break fill
				case <-l.done:
					break fill
				}
			}
			linger.Stop()
			l.write(batch)
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			if err := l.purge(ctx); err != nil {
				l.warn("purge failed", err)
			}
			cancel()
		case <-l.done:
			for {
				select {
				case e := <-l.queue:
					l.write([]event{e})
				default:
					return
				}
			}
		}
	}
}

// purge deletes records past the retention and counts them.
func (l *Log) purge(ctx context.Context) error {
	c, err := l.store.Purge(ctx, l.now().Add(-l.cfg.Retention))
	l.m.purged.WithLabelValues("allocation").Add(float64(c.Allocations))
	l.m.purged.WithLabelValues("permission").Add(float64(c.Permissions))
	l.m.purged.WithLabelValues("http_request").Add(float64(c.HTTPRequests))
	return err
}

// warn logs a failure at most once a minute; the message never carries record content.
func (l *Log) warn(msg string, err error) {
	if now := time.Now(); now.Sub(l.lastWarn) >= time.Minute {
		l.lastWarn = now
		l.log.Warn(msg, "err", err)
	}
}

// write stores a batch in one transaction; on failure every record of it is dropped and
// counted, and the relay carries on.
func (l *Log) write(batch []event) {
	var records int
	for _, e := range batch {
		if e.flush == nil {
			records++
		}
	}
	if records > 0 {
		if err := l.writeTx(batch); err != nil {
			l.m.dropped.WithLabelValues("write_error").Add(float64(records))
			l.warn("allocation log write failed; records dropped", err)
		} else {
			for _, e := range batch {
				if e.flush == nil {
					l.m.written.WithLabelValues(kindLabels[e.kind]).Inc()
				}
			}
		}
	}
	for _, e := range batch {
		if e.flush != nil {
			close(e.flush)
		}
	}
}

func (l *Log) writeTx(batch []event) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tx, err := l.store.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // no-op after Commit
	// The transaction carries the timeout (database/sql rolls it back when ctx ends, and
	// later statements fail). Statements run without a deadline of their own: with one,
	// the SQLite driver starts a goroutine per statement to watch it, a third of a row's cost.
	stmtCtx := context.WithoutCancel(ctx)
	var start, perm, end, req *sql.Stmt
	prep := func(s **sql.Stmt, q string) (*sql.Stmt, error) {
		if *s == nil {
			st, err := tx.PrepareContext(stmtCtx, q)
			if err != nil {
				return nil, err
			}
			*s = st
		}
		return *s, nil
	}
	for _, e := range batch {
		var err error
		var st *sql.Stmt
		switch e.kind {
		case kindStart:
			a := e.alloc
			if st, err = prep(&start, `INSERT OR REPLACE INTO allocations (id, start_ms, transport, client_ip,
				client_port, server, relayed, user_id, realm) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`); err == nil {
				_, err = st.ExecContext(stmtCtx, int64(a.ID), a.Start.UnixMilli(), a.Transport, canonIP(a.Client.Addr()),
					int(a.Client.Port()), a.Server.String(), a.Relayed.String(), a.UserID, a.Realm)
			}
		case kindPermission:
			if st, err = prep(&perm, `INSERT OR IGNORE INTO permissions (allocation_id, peer_ip, first_ms)
				VALUES (?, ?, ?)`); err == nil {
				_, err = st.ExecContext(stmtCtx, int64(e.alloc.ID), canonIP(e.peer), e.at.UnixMilli())
			}
		case kindEnd:
			x := e.end
			if st, err = prep(&end, `UPDATE allocations SET end_ms = ?, end_reason = ?, bytes_to_peer = ?,
				packets_to_peer = ?, bytes_to_client = ?, packets_to_client = ? WHERE id = ?`); err == nil {
				_, err = st.ExecContext(stmtCtx, x.End.UnixMilli(), x.Reason, int64(x.BytesToPeer), int64(x.PacketsToPeer),
					int64(x.BytesToClient), int64(x.PacketsToClient), int64(x.ID))
			}
		case kindHTTP:
			r := e.http
			if st, err = prep(&req, `INSERT INTO http_requests (time_ms, client_ip, route, status, user_agent)
				VALUES (?, ?, ?, ?, ?)`); err == nil {
				_, err = st.ExecContext(stmtCtx, r.Time.UnixMilli(), canonIP(r.ClientIP), r.Route, r.Status, r.UserAgent)
			}
		}
		if err != nil {
			return err
		}
	}
	return tx.Commit()
}
