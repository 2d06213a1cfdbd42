package alloc

import (
	"testing"
	"time"

	"github.com/ferryrelay/ferry/relay/internal/policy"
	"github.com/ferryrelay/ferry/relay/internal/stats"
	"github.com/ferryrelay/ferry/relay/internal/wire"
)

// recordingPoller is an event loop that only remembers what it was asked to watch.
type recordingPoller struct {
	fd    int
	token uint64
}

func (p *recordingPoller) Watch(fd int, token uint64) error {
	p.fd, p.token = fd, token
	return nil
}

// An event loop's read of a relay socket allocates nothing per wakeup: the reader's read
// function is bound once (a closure per read would allocate, and did).
func TestRelayReaderAllocatesNothing(t *testing.T) {
	if !RawSockets {
		t.Skip("relay sockets join event loops on Linux only")
	}
	f := newFixture(t)
	p := &recordingPoller{}
	client := addrOf(f.client)
	a, _, err := f.t.Create(Request{Key: Key{Transport: wire.UDP, Client: client, Server: addrOf(f.listener.Conn())},
		Username: "1:u", UserID: "u", Client: Client{UDP: f.listener, Addr: client, Poller: p}, Family: 4, Lifetime: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if p.token == 0 {
		t.Fatal("the relay socket was not given to the event loop")
	}
	if res := f.t.BindChannel(a, 0x4000, addrOf(f.sink), policy.Local, 10*time.Minute, 5*time.Minute, 64, 64); res != ChannelBound {
		t.Fatalf("bind: %v", res)
	}
	go drain(f.client)
	r := f.t.NewRelayReader()
	payload := make([]byte, 100)
	send := func() {
		if _, err := f.sink.WriteToUDPAddrPort(payload, a.Relayed); err != nil {
			t.Fatal(err)
		}
	}
	base := testing.AllocsPerRun(200, send)
	if n := testing.AllocsPerRun(1000, func() { send(); r.Readable(p.token) }); n > base {
		t.Errorf("%v allocations per relay socket read (the peer's send alone: %v)", n-base, base)
	}
	if _, pkts := a.Traffic(stats.ToClient); pkts < 1000 {
		t.Fatalf("relayed %d datagrams to the client, want 1000 or more", pkts)
	}
}
