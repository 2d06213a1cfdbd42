package alloclog

import (
	"bytes"
	"context"
	"database/sql"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

var t0 = time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC)

func openTest(t *testing.T, mutate ...func(*Config)) (*Log, *clock, *prometheus.Registry) {
	t.Helper()
	c := &clock{t: t0}
	reg := prometheus.NewRegistry()
	cfg := Config{Path: filepath.Join(t.TempDir(), FileName), Now: c.Now, Registerer: reg}
	for _, m := range mutate {
		m(&cfg)
	}
	l, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, c, reg
}

func flush(t *testing.T, l *Log) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

var (
	clientV4 = netip.MustParseAddrPort("203.0.113.77:40123")
	clientV6 = netip.MustParseAddrPort("[2001:db8:feed::77]:40124")
	peerV4   = netip.MustParseAddr("198.51.100.99")
	server   = netip.MustParseAddrPort("192.0.2.1:3478")
)

func allocation(id uint64, start time.Time, client netip.AddrPort, user string) Allocation {
	return Allocation{ID: id, Start: start, Transport: "udp", Client: client, Server: server,
		Relayed: netip.MustParseAddrPort("192.0.2.1:50000"), UserID: user, Realm: "ferry"}
}

func count(t *testing.T, l *Log) Counts {
	t.Helper()
	st, err := l.Store().Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.Counts
}

// A record written at t is still there at t+47h59m and gone at t+48h plus one purge
// interval, with the purge loop running on the injected clock.
func TestRetentionFakeClock(t *testing.T) {
	l, c, reg := openTest(t, func(cfg *Config) { cfg.PurgeInterval = 20 * time.Millisecond })
	l.AllocationStarted(allocation(1, t0, clientV4, "u-1"))
	l.PermissionCreated(1, peerV4, t0.Add(time.Second))
	l.HTTPRequest(HTTPRequest{Time: t0, ClientIP: clientV4.Addr(), Route: "/v1/ice-servers", Status: 200})
	flush(t, l)
	if got := count(t, l); got.Total() != 3 {
		t.Fatalf("written: %+v", got)
	}
	c.Set(t0.Add(47*time.Hour + 59*time.Minute))
	time.Sleep(200 * time.Millisecond) // ten purge intervals
	if got := count(t, l); got.Total() != 3 {
		t.Fatalf("purged before 48 h: %+v", got)
	}
	if age := testutil.ToFloat64(oldestGauge(t, reg)); age != (47*time.Hour + 59*time.Minute).Seconds() {
		t.Fatalf("oldest record age gauge: %v", age)
	}
	c.Set(t0.Add(48*time.Hour + time.Millisecond))
	deadline := time.Now().Add(2 * time.Second)
	for count(t, l).Total() != 0 || testutil.ToFloat64(l.m.purged.WithLabelValues("allocation")) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("not purged (and counted) within the purge interval: %+v", count(t, l))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func oldestGauge(t *testing.T, reg *prometheus.Registry) prometheus.Collector {
	t.Helper()
	return gaugeCollector{reg, "ferry_alloclog_oldest_record_age_seconds"}
}

// gaugeCollector exposes one metric of a registry to testutil.ToFloat64.
type gaugeCollector struct {
	reg  *prometheus.Registry
	name string
}

func (g gaugeCollector) Describe(ch chan<- *prometheus.Desc) {}
func (g gaugeCollector) Collect(ch chan<- prometheus.Metric) {
	mfs, _ := g.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == g.name {
			ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(g.name, "", nil, nil), prometheus.GaugeValue, mf.Metric[0].GetGauge().GetValue())
		}
	}
}

// needles are every form in which the purged personal data could linger on disk.
func needles(user string) map[string][]byte {
	v4 := clientV4.Addr().As4()
	v6 := clientV6.Addr().As16()
	p4 := peerV4.As4()
	return map[string][]byte{
		"client IPv4 text":   []byte(clientV4.Addr().String()),
		"client IPv4 binary": v4[:],
		"client IPv6 text":   []byte(clientV6.Addr().String()),
		"client IPv6 long":   []byte("2001:0db8:feed:0000:0000:0000:0000:0077"),
		"client IPv6 binary": v6[:],
		"peer IPv4 text":     []byte(peerV4.String()),
		"peer IPv4 binary":   p4[:],
		"user id":            []byte(user),
	}
}

func scanFiles(t *testing.T, dbPath string, needles map[string][]byte) []string {
	t.Helper()
	var found []string
	for _, suffix := range []string{"", "-wal", "-shm"} {
		data, err := os.ReadFile(dbPath + suffix)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		for name, n := range needles {
			if bytes.Contains(data, n) {
				found = append(found, name+" in "+filepath.Base(dbPath+suffix))
			}
		}
	}
	return found
}

// After a purge the IP addresses and user ids are nowhere in the bytes of the database,
// its -wal or its -shm, as text or as binary.
func TestPurgedDataLeavesTheDisk(t *testing.T) {
	l, c, _ := openTest(t)
	const user = "patient-x7q9z"
	write := func(base uint64, start time.Time, withTargets bool, peer netip.Addr) {
		for i := range uint64(300) {
			client := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), 4000)
			u := "other-" + strconv.Itoa(int(i))
			if withTargets && i%3 == 0 {
				client, u = clientV4, user
			}
			if withTargets && i%3 == 1 {
				client, u = clientV6, user
			}
			l.AllocationStarted(allocation(base+i, start, client, u))
			l.PermissionCreated(base+i, peer, start)
			l.AllocationEnded(AllocationEnd{ID: base + i, End: start.Add(time.Minute), Reason: "expired", BytesToPeer: 1000})
			l.HTTPRequest(HTTPRequest{Time: start, ClientIP: client.Addr(), Route: "/v1/ice-servers", Status: 200, UserAgent: "ua"})
		}
		flush(t, l)
	}
	write(1, t0, true, peerV4)                                                    // old: the targets
	write(10_000, t0.Add(30*time.Hour), false, netip.MustParseAddr("192.0.2.50")) // newer, kept

	path := l.Store().Path()
	if found := scanFiles(t, path, needles(user)); len(found) < 4 {
		t.Fatalf("the test data never reached the files: %v", found)
	}
	c.Set(t0.Add(48*time.Hour + time.Minute))
	if err := l.purge(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := count(t, l); got.Allocations != 300 || got.HTTPRequests != 300 {
		t.Fatalf("kept records: %+v", got)
	}
	if found := scanFiles(t, path, needles(user)); len(found) != 0 {
		t.Fatalf("purged personal data still on disk: %v", found)
	}
}

// Erase by user and by IP, and query by time range, while a writer keeps writing.
func TestEraseAndQueryWhileWriting(t *testing.T) {
	l, _, _ := openTest(t)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var next atomic.Uint64
	next.Store(100_000)
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			id := next.Add(1)
			c := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 2, byte(id >> 8), byte(id)}), 5000)
			l.AllocationStarted(allocation(id, t0.Add(time.Hour), c, "busy-"+strconv.Itoa(int(id))))
			time.Sleep(100 * time.Microsecond)
		}
	})
	for i := range uint64(20) {
		l.AllocationStarted(allocation(i+1, t0.Add(time.Duration(i)*time.Minute), clientV4, "dr:who"))
		l.PermissionCreated(i+1, peerV4, t0)
	}
	l.AllocationStarted(allocation(50, t0, clientV6, "someone"))
	l.HTTPRequest(HTTPRequest{Time: t0, ClientIP: clientV4.Addr(), Route: "/v1/ice-servers", Status: 401})
	flush(t, l)

	ctx := context.Background()
	s := l.Store()
	recs, err := s.Query(ctx, Filter{Since: t0.Add(5 * time.Minute), Until: t0.Add(10 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs.Allocations) != 5 || recs.Allocations[0].Start != t0.Add(5*time.Minute) || len(recs.Allocations[0].Peers) != 1 {
		t.Fatalf("time range query: %d records", len(recs.Allocations))
	}
	user := "dr:who"
	recs, _ = s.Query(ctx, Filter{UserID: &user})
	if len(recs.Allocations) != 20 || len(recs.HTTPRequests) != 0 {
		t.Fatalf("user query: %d allocations, %d http", len(recs.Allocations), len(recs.HTTPRequests))
	}
	// By IP, in another spelling: the client and the peer side both count.
	recs, _ = s.Query(ctx, Filter{IP: netip.MustParseAddr("::ffff:203.0.113.77")})
	if len(recs.Allocations) != 20 || len(recs.HTTPRequests) != 1 {
		t.Fatalf("IP query: %d allocations, %d http", len(recs.Allocations), len(recs.HTTPRequests))
	}
	recs, _ = s.Query(ctx, Filter{IP: peerV4})
	if len(recs.Allocations) != 20 {
		t.Fatalf("peer IP query: %d", len(recs.Allocations))
	}

	n, err := s.Erase(ctx, Filter{UserID: &user})
	if err != nil || n.Allocations != 20 || n.Permissions != 20 {
		t.Fatalf("erase by user: %+v %v", n, err)
	}
	n, err = s.Erase(ctx, Filter{IP: netip.MustParseAddr("2001:DB8:FEED::77")})
	if err != nil || n.Allocations != 1 {
		t.Fatalf("erase by IP: %+v %v", n, err)
	}
	n, err = s.Erase(ctx, Filter{IP: clientV4.Addr()})
	if err != nil || n.HTTPRequests != 1 {
		t.Fatalf("erase HTTP records by IP: %+v %v", n, err)
	}
	if _, err := s.Erase(ctx, Filter{}); err == nil {
		t.Fatal("an erase without IP or user must be refused")
	}
	for next.Load() < 100_010 { // on a busy machine the writer may have had few turns yet
		time.Sleep(time.Millisecond)
	}
	close(stop)
	wg.Wait()
	flush(t, l)
	recs, _ = s.Query(ctx, Filter{UserID: &user})
	if len(recs.Allocations) != 0 {
		t.Fatal("erased records came back")
	}
	if got := count(t, l); got.Allocations < 10 {
		t.Fatalf("the concurrent writer's records are missing: %+v", got)
	}
	if found := scanFiles(t, s.Path(), map[string][]byte{"user": []byte(user), "ipv6": []byte("2001:db8:feed::77")}); len(found) != 0 {
		t.Fatalf("erased data still on disk: %v", found)
	}
}

func TestOpenFailuresAreClear(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.db")
	os.WriteFile(garbage, bytes.Repeat([]byte("not sqlite "), 1000), 0o600)
	if _, err := Open(context.Background(), Config{Path: garbage}); err == nil ||
		!strings.Contains(err.Error(), garbage) || !strings.Contains(err.Error(), "move it aside") {
		t.Fatalf("garbage file: %v", err)
	}

	// A real database with a damaged page.
	good := filepath.Join(dir, "damaged.db")
	l, err := Open(context.Background(), Config{Path: good})
	if err != nil {
		t.Fatal(err)
	}
	for i := range uint64(500) {
		l.AllocationStarted(allocation(i+1, t0, clientV4, strings.Repeat("u", 100)))
	}
	flush(t, l)
	l.Close()
	data, _ := os.ReadFile(good)
	for i := 4096; i < 2*4096; i++ { // page 2, the allocations table's root
		data[i] = 0xFF
	}
	os.WriteFile(good, data, 0o600)
	os.Remove(good + "-wal")
	if _, err := Open(context.Background(), Config{Path: good}); err == nil || !strings.Contains(err.Error(), good) {
		t.Fatalf("damaged database: %v", err)
	}

	blocker := filepath.Join(dir, "file")
	os.WriteFile(blocker, nil, 0o600)
	if _, err := Open(context.Background(), Config{Path: filepath.Join(blocker, FileName)}); err == nil {
		t.Fatal("a database under a file must fail")
	}
}

// A full disk while running: writes fail, records are dropped and counted, the log keeps
// going and writes again once there is room.
func TestFullDiskDropsAndRecovers(t *testing.T) {
	l, _, _ := openTest(t)
	if _, err := l.store.db.Exec("PRAGMA max_page_count = 10"); err != nil { // SQLITE_FULL soon
		t.Fatal(err)
	}
	for i := range uint64(2000) {
		l.AllocationStarted(allocation(i+1, t0, clientV4, strings.Repeat("x", 200)))
	}
	flush(t, l)
	dropped := testutil.ToFloat64(l.m.dropped.WithLabelValues("write_error"))
	if dropped == 0 {
		t.Fatal("no write errors with a full database")
	}
	if _, err := l.store.db.Exec("PRAGMA max_page_count = 1000000"); err != nil {
		t.Fatal(err)
	}
	before := testutil.ToFloat64(l.m.written.WithLabelValues("allocation"))
	l.AllocationStarted(allocation(99_999, t0, clientV4, "after"))
	flush(t, l)
	if testutil.ToFloat64(l.m.written.WithLabelValues("allocation")) != before+1 {
		t.Fatal("the log did not recover after the disk had room again")
	}
}

// A database locked by another process (a long `ferry logs erase`): writes time out, are
// dropped and counted, and resume when the lock goes.
func TestLockedDatabaseDropsAndRecovers(t *testing.T) {
	l, _, _ := openTest(t, func(c *Config) { c.BusyTimeout = 100 * time.Millisecond })
	other, err := sql.Open("sqlite", dsn(l.store.Path(), time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	other.SetMaxOpenConns(1)
	tx, err := other.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec("INSERT INTO http_requests (time_ms, client_ip, route, status, user_agent) VALUES (0, 'x', 'x', 0, 'x')"); err != nil {
		t.Fatal(err)
	}
	l.AllocationStarted(allocation(1, t0, clientV4, "locked-out"))
	flush(t, l)
	if testutil.ToFloat64(l.m.dropped.WithLabelValues("write_error")) != 1 {
		t.Fatal("a write against a locked database was not counted as dropped")
	}
	tx.Rollback()
	l.AllocationStarted(allocation(2, t0, clientV4, "after-lock"))
	flush(t, l)
	if got := count(t, l); got.Allocations != 1 {
		t.Fatalf("after the lock: %+v", got)
	}
}

// The queue is bounded: when the writer cannot keep up, records are dropped and counted and
// the caller never blocks.
func TestQueueFullDropsWithoutBlocking(t *testing.T) {
	l, _, _ := openTest(t, func(c *Config) { c.QueueLen = 1 })
	start := time.Now()
	for i := range uint64(50_000) {
		l.AllocationStarted(allocation(i+1, t0, clientV4, "u"))
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("enqueueing blocked: %s", d)
	}
	flush(t, l)
	if testutil.ToFloat64(l.m.dropped.WithLabelValues("queue_full")) == 0 {
		t.Fatal("no drops counted with a one-slot queue")
	}
}

// BenchmarkAllocationLog measures the records per second the log sustains: each allocation
// is three records (start, one permission, end).
// BenchmarkAllocationLog writes each allocation's three records. Allocation ids that grow
// with time (as the relay issues them) append to the B-tree; random ids dirty a page per row
// and make every commit write most of the table again.
func BenchmarkAllocationLog(b *testing.B) {
	for _, ids := range []string{"time-ordered", "random"} {
		b.Run(ids, func(b *testing.B) {
			c := &clock{t: t0}
			l, err := Open(context.Background(), Config{Path: filepath.Join(b.TempDir(), FileName), Now: c.Now, QueueLen: 1 << 20})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			ctx := context.Background()
			b.ResetTimer()
			for i := range uint64(b.N) {
				id := i + 1
				if ids == "random" {
					id = rand.Uint64() >> 1
				}
				l.AllocationStarted(allocation(id, t0, clientV4, "bench-user"))
				l.PermissionCreated(id, peerV4, t0)
				l.AllocationEnded(AllocationEnd{ID: id, End: t0.Add(time.Minute), Reason: "expired", BytesToPeer: 1234})
				if i%10000 == 9999 {
					if err := l.Flush(ctx); err != nil {
						b.Fatal(err)
					}
				}
			}
			if err := l.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if d := testutil.ToFloat64(l.m.dropped.WithLabelValues("queue_full")); d != 0 {
				b.Fatalf("dropped %v records", d)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "allocations/s")
			b.ReportMetric(3*float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
