package signaling

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"
)

// Bounds of one connection.
const (
	// queueLen is the messages waiting to be written; beyond, the connection closes with
	// CloseTooSlow (and, within the grace, gets its unconfirmed messages again on reconnect).
	queueLen = DefaultOutboxMessages + 256
	// confirmEvery asks for a ping early once this many relayed messages are unconfirmed;
	// confirmBytes once this many bytes of them were written since the last early ping, so
	// that a few large SDPs do not fill the addressee's outbox (DefaultOutboxBytes) with
	// messages its browser already has.
	confirmEvery = 32
	confirmBytes = DefaultOutboxBytes / 4
	// writeTimeout bounds one write to a client that does not read.
	writeTimeout = 10 * time.Second
)

// item is one queued message: a room event, or bytes this connection made itself.
type item struct {
	ev      Event
	raw     []byte
	refresh bool // time to push fresh ICE servers
}

// wsConn is one room WebSocket connection. The handler goroutine reads (run); a writer
// goroutine writes the queue in order and does the closing handshake; a pinger goroutine
// pings and confirms delivery. run waits for both before it returns.
type wsConn struct {
	h     *Handler
	cfg   *RoomsConfig
	ws    *websocket.Conn
	ctx   context.Context // done when the connection is to end
	end   context.CancelFunc
	queue chan item
	kick  chan struct{}
	sess  Session
	wg    sync.WaitGroup

	whyOnce sync.Once
	why     CloseReason

	lastRead  atomic.Int64  // unix nanoseconds of the last message, by the clock
	written   atomic.Uint64 // seq of the last relayed message written
	confirmed atomic.Uint64
	pongs     atomic.Uint64 // answered pings

	mu        sync.Mutex // guards the timers
	stopIdle  func() bool
	stopFresh func() bool

	room string // the ticket's room: its participants get the same relay (Config.Relays)

	// Owned by the writer.
	you      string
	admitted bool
	unasked  int // bytes of relayed messages written since the last early ping
}

func newWSConn(h *Handler, ws *websocket.Conn) *wsConn {
	ctx, end := context.WithCancel(context.Background())
	return &wsConn{h: h, cfg: h.cfg.Rooms, ws: ws, ctx: ctx, end: end,
		queue: make(chan item, queueLen), kick: make(chan struct{}, 1)}
}

// stop ends the connection for why (the first reason wins).
func (c *wsConn) stop(why CloseReason) {
	c.whyOnce.Do(func() { c.why = why })
	c.end()
}

// Deliver implements Conn.
func (c *wsConn) Deliver(ev Event) { c.push(item{ev: ev}) }

func (c *wsConn) push(it item) {
	select {
	case c.queue <- it:
	default:
		c.stop(CloseTooSlow)
	}
}

// run joins the room and serves the connection until it ends.
func (c *wsConn) run(t Ticket) {
	c.room = t.Room
	c.touch()
	c.wg.Add(1)
	go c.writeLoop()
	sess, err := c.cfg.Rooms.Join(c.ctx, t, c)
	if err != nil {
		var ref *Refusal
		if !errors.As(err, &ref) {
			ref = &Refusal{CloseGoingAway}
		}
		c.stop(ref.Close)
		c.wg.Wait()
		c.h.countClose(ref.Close)
		return
	}
	c.sess = sess
	c.h.gaugeConns(1)
	c.wg.Add(1)
	go c.pingLoop()
	c.armIdle(c.cfg.IdleTimeout)
	left := c.readLoop()
	c.mu.Lock()
	for _, stop := range []func() bool{c.stopIdle, c.stopFresh} {
		if stop != nil {
			stop()
		}
	}
	c.mu.Unlock()
	c.wg.Wait()
	sess.Leave(left)
	c.h.gaugeConns(-1)
	c.whyOnce.Do(func() { c.why = closeDead })
	c.h.countClose(c.why)
	c.cfg.Logger.Debug("room connection closed", "reason", c.why.Label)
}

// readLoop reads client messages until the connection ends; left reports a clean close
// by the client (1000), which leaves the room at once.
func (c *wsConn) readLoop() (left bool) {
	lim := rate.NewLimiter(rate.Limit(c.cfg.MessageRate), c.cfg.MessageBurst)
	for {
		typ, data, err := c.ws.Read(context.Background()) // ends when the writer closes
		if err != nil {
			switch {
			case websocket.CloseStatus(err) == websocket.StatusNormalClosure:
				c.stop(closeClient)
				return true
			case errors.Is(err, websocket.ErrMessageTooBig):
				c.stop(closeTooLarge)
			default:
				c.stop(closeDead)
			}
			return false
		}
		c.touch()
		if !lim.AllowN(c.cfg.Clock.Now(), 1) {
			c.stop(CloseRateLimited)
			continue // keep reading until the writer has closed
		}
		if typ != websocket.MessageText {
			c.sendError(ErrCodeNotText, "ferry.v1 messages are JSON text", "", "")
			continue
		}
		c.handle(data)
	}
}

func (c *wsConn) touch() { c.lastRead.Store(c.cfg.Clock.Now().UnixNano()) }

// armIdle checks after d whether the client has been silent for the idle timeout.
func (c *wsConn) armIdle(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx.Err() != nil {
		return
	}
	c.stopIdle = c.cfg.Clock.AfterFunc(d, func() {
		silent := c.cfg.Clock.Now().Sub(time.Unix(0, c.lastRead.Load()))
		if silent >= c.cfg.IdleTimeout {
			c.stop(CloseIdle)
			return
		}
		c.armIdle(c.cfg.IdleTimeout - silent)
	})
}

// armRefresh schedules an ice-servers push RefreshBefore expires.
func (c *wsConn) armRefresh(expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopFresh != nil {
		c.stopFresh()
	}
	if c.ctx.Err() != nil {
		return
	}
	d := max(expires.Sub(c.cfg.Clock.Now())-c.cfg.RefreshBefore, 0)
	c.stopFresh = c.cfg.Clock.AfterFunc(d, func() { c.push(item{refresh: true}) })
}

func (c *wsConn) disarmRefresh() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopFresh != nil {
		c.stopFresh()
		c.stopFresh = nil
	}
}

// writeLoop writes queued messages in order until the connection ends, then closes it.
func (c *wsConn) writeLoop() {
	defer c.wg.Done()
	for {
		select {
		case <-c.ctx.Done():
			c.closeWS()
			return
		case it := <-c.queue:
			if !c.write(it) {
				c.closeWS()
				return
			}
		}
	}
}

// write writes one item; false when the connection is to end after it.
func (c *wsConn) write(it item) bool {
	data := it.raw
	if data == nil {
		var err error
		if data, err = c.encode(it); err != nil {
			c.cfg.Logger.Warn("room message not encoded", "err", err)
			data = nil
		}
	}
	if data != nil {
		// Not c.ctx: a write cancelled midway would drop the connection before its close frame.
		ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
		err := c.ws.Write(ctx, websocket.MessageText, data)
		cancel()
		if err != nil {
			c.stop(closeDead)
			return false
		}
	}
	if it.ev.Seq > 0 {
		c.written.Store(it.ev.Seq)
		c.unasked += len(data)
		if it.ev.Seq-c.confirmed.Load() >= confirmEvery || c.unasked >= confirmBytes {
			c.unasked = 0
			select {
			case c.kick <- struct{}{}:
			default:
			}
		}
	}
	if it.ev.Close != nil {
		c.stop(*it.ev.Close)
		return false
	}
	return true
}

// closeWS closes the WebSocket for the recorded reason: with a close frame, or at once
// when the client is gone.
func (c *wsConn) closeWS() {
	c.stop(CloseGoingAway) // no-op unless nothing was recorded
	switch c.why.Label {
	case closeDead.Label, closeClient.Label, closeTooLarge.Label:
		_ = c.ws.CloseNow()
	default:
		_ = c.ws.Close(websocket.StatusCode(c.why.Code), c.why.Reason)
	}
}

// pingLoop pings every PingInterval (or early, when many relayed messages await
// confirmation). A pong confirms every relayed message written before the ping: TCP keeps
// order. An unanswered ping marks the connection dead.
func (c *wsConn) pingLoop() {
	defer c.wg.Done()
	tick := make(chan struct{}, 1)
	signal := func() {
		select {
		case tick <- struct{}{}:
		default:
		}
	}
	for {
		stop := c.cfg.Clock.AfterFunc(c.cfg.PingInterval, signal)
		select {
		case <-c.ctx.Done():
			stop()
			return
		case <-tick:
		case <-c.kick:
			stop()
		}
		seq := c.written.Load()
		ctx, cancel := context.WithCancel(context.Background()) // see write
		stopTimeout := c.cfg.Clock.AfterFunc(c.cfg.PingInterval, cancel)
		err := c.ws.Ping(ctx)
		stopTimeout()
		cancel()
		if err != nil {
			c.stop(closeDead)
			return
		}
		c.pongs.Add(1)
		if seq > c.confirmed.Load() {
			c.confirmed.Store(seq)
			c.sess.Confirm(seq)
		}
	}
}
