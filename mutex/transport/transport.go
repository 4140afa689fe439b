package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dlockfs/dlockfs/mutex"
)

// ErrClosed is returned by a [Transport] that has been closed.
var ErrClosed = errors.New("transport: closed")

// Incoming is one lock message received from a peer.
type Incoming struct {
	// Msg is the message, checked to be from the connection's peer and
	// addressed to us by name (ToIncarnation is left to the core).
	Msg mutex.Message
	// Remote is the address the message's connection came from.
	Remote string
}

// Stats are the transport's counters (since Listen) and gauges (now).
type Stats struct {
	Encrypted     bool `json:"encrypted"`      // a Key is in use
	Peers         int  `json:"peers"`          // peers added and not removed
	OutboundConns int  `json:"outbound_conns"` // outgoing connections established now
	InboundConns  int  `json:"inbound_conns"`  // accepted connections open now (handshaking ones included)
	Queued        int  `json:"queued"`         // messages waiting in the send queues
	// OldKeyConns counts the established connections (either way) made
	// with a key since removed from the Keyring: closed within
	// KeyCheckInterval, so normally 0.
	OldKeyConns int `json:"old_key_conns"`

	FramesSent     uint64 `json:"frames_sent"`     // messages written and flushed to a socket
	FramesReceived uint64 `json:"frames_received"` // messages delivered (on Incoming or to Config.Deliver)
	BytesSent      uint64 `json:"bytes_sent"`      // frame bytes, handshakes excluded
	BytesReceived  uint64 `json:"bytes_received"`

	Dials             uint64 `json:"dials"`              // outgoing TCP dials attempted
	DialFailures      uint64 `json:"dial_failures"`      // dials that failed
	Connects          uint64 `json:"connects"`           // outgoing handshakes completed (= values sent on Connected)
	Disconnects       uint64 `json:"disconnects"`        // established outgoing connections lost
	Accepts           uint64 `json:"accepts"`            // inbound handshakes completed
	HandshakeFailures uint64 `json:"handshake_failures"` // either direction: timeout, garbage, wrong key, mode or name mismatch

	DroppedQueueFull uint64 `json:"dropped_queue_full"` // Send to a full queue
	DroppedNoPeer    uint64 `json:"dropped_no_peer"`    // Send to a peer not added
	DroppedInvalid   uint64 `json:"dropped_invalid"`    // Send of a message we cannot or must not encode
	DroppedUnsent    uint64 `json:"dropped_unsent"`     // batches lost with a broken connection

	BadFrames     uint64 `json:"bad_frames"`     // inbound frames malformed, oversized, unauthenticated, stalled or misattributed (connection closed)
	Floods        uint64 `json:"floods"`         // inbound connections closed for exceeding MaxFrameRate
	RejectedConns uint64 `json:"rejected_conns"` // inbound connections refused over MaxConns
	// Rekeys counts outgoing connections switched to a new primary key
	// in band, without being dropped (rekey.go).
	Rekeys uint64 `json:"rekeys"`

	// SentByType and ReceivedByType split FramesSent and FramesReceived
	// by message type (its String: "request", "reply", ...).
	SentByType     map[string]uint64 `json:"sent_by_type"`
	ReceivedByType map[string]uint64 `json:"received_by_type"`
}

type counters struct {
	framesSent, framesReceived, bytesSent, bytesReceived atomic.Uint64
	dials, dialFailures, connects, disconnects, accepts  atomic.Uint64
	handshakeFailures                                    atomic.Uint64
	droppedQueueFull, droppedNoPeer, droppedInvalid      atomic.Uint64
	droppedUnsent, badFrames, floods, rejectedConns      atomic.Uint64
	rekeys                                               atomic.Uint64
	outboundConns, inboundConns                          atomic.Int64
	sentByType, receivedByType                           [256]atomic.Uint64 // by mutex.MsgType
}

// Transport is the lock-message channel of one peer: a TCP listener for
// the messages peers send us, and one persistent outgoing connection per
// peer for the messages we send. All methods are safe for concurrent use.
type Transport struct {
	cfg  Config
	log  *slog.Logger
	mode byte
	keys Keyring // nil: plaintext
	ln   net.Listener

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	incoming  chan Incoming
	connected chan string

	mu      sync.RWMutex
	closed  bool
	peers   map[string]*peer
	inbound map[string]*inConn // by hello name: the newest connection

	progressMu   sync.Mutex
	progress     chan struct{} // closed and replaced when a send queue progresses
	flushWaiters atomic.Int32

	status    statusHandler // answers status queries (query.go)
	st        counters
	warns     warnLimiter
	closeOnce sync.Once
	closeErr  error
}

// Listen validates cfg, starts listening on cfg.ListenAddr and returns the
// running transport. Close it when done.
func Listen(cfg Config) (*Transport, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if cfg.Key != nil {
		cfg.Key = append([]byte(nil), cfg.Key...)
	}
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("transport: listen: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t := &Transport{
		cfg:       cfg,
		log:       cfg.Logger,
		ln:        ln,
		ctx:       ctx,
		cancel:    cancel,
		incoming:  make(chan Incoming, cfg.IncomingLen),
		connected: make(chan string, 256),
		peers:     make(map[string]*peer),
		inbound:   make(map[string]*inConn),
		progress:  make(chan struct{}),
	}
	t.warns.bucket = *newTokenBucket(warnRate)
	switch {
	case cfg.Keyring != nil:
		t.keys = cfg.Keyring
	case cfg.Key != nil:
		t.keys = staticKeyring{key: cfg.Key}
	}
	if t.keys != nil {
		t.mode = modeAESGCM
	}
	t.wg.Add(1)
	go t.acceptLoop()
	if cfg.Keyring != nil {
		t.wg.Add(2)
		go t.watchKeys()
		go t.watchPrimary()
	}
	t.log.Debug("transport listening", "addr", ln.Addr().String(), "mode", modeName(t.mode))
	return t, nil
}

// watchKeys runs CheckKeys every KeyCheckInterval until Close.
func (t *Transport) watchKeys() {
	defer t.wg.Done()
	tick := time.NewTicker(t.cfg.KeyCheckInterval)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			t.CheckKeys()
		case <-t.ctx.Done():
			return
		}
	}
}

// Addr returns the address peers should dial: AdvertiseAddr if set, else
// the address the listener is bound to.
func (t *Transport) Addr() string {
	if t.cfg.AdvertiseAddr != "" {
		return t.cfg.AdvertiseAddr
	}
	return t.ln.Addr().String()
}

// Encrypted reports whether the channel is sealed with a cluster key.
func (t *Transport) Encrypted() bool { return t.mode == modeAESGCM }

// Incoming delivers the lock messages received from peers, each already
// checked to come from the peer that opened its connection and to be
// addressed to us by name (unless Config.Deliver takes them). It is closed
// when Close returns.
func (t *Transport) Incoming() <-chan Incoming { return t.incoming }

// Connected delivers a peer's name each time an outgoing connection to it
// is (re)established and ready; the caller then re-sends what it owes that
// peer (messages lost with a previous connection are not re-sent by the
// transport). It is closed when Close returns.
func (t *Transport) Connected() <-chan string { return t.connected }

// AddPeer makes sure there is a persistent outgoing connection to the peer
// name (incarnation inc) at addr. For a peer already added with another
// address or incarnation, the connection is re-targeted (closed and
// redialled); the queued messages stay. Adding ourselves is ignored.
func (t *Transport) AddPeer(name string, inc uint64, addr string) {
	if name == t.cfg.Name || mutex.ValidNodeName(name) != nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	if p, ok := t.peers[name]; ok {
		if p.retarget(inc, addr) {
			t.log.Debug("transport: peer re-targeted", "peer", name, "addr", addr, "incarnation", inc)
		}
		return
	}
	p := newPeer(t.ctx, name, inc, addr, t.cfg.QueueLen)
	t.peers[name] = p
	t.wg.Add(1)
	go t.runPeer(p)
}

// RemovePeer closes the outgoing connection to name and discards the
// messages queued for it.
func (t *Transport) RemovePeer(name string) {
	t.mu.Lock()
	p, ok := t.peers[name]
	delete(t.peers, name)
	t.mu.Unlock()
	if ok {
		p.cancel()
		t.notifyProgress()
	}
}

// Send queues m for the peer m.To and returns at once. A message for a
// peer that was not added, one the queue has no room for, or one that is
// not from us (From/FromIncarnation) is dropped and counted. A full queue
// also drops the connection, so that Connected fires again once the peer is
// reachable and the caller re-sends what the drop lost.
func (t *Transport) Send(m mutex.Message) {
	t.mu.RLock()
	p := t.peers[m.To]
	t.mu.RUnlock()
	if p == nil {
		t.st.droppedNoPeer.Add(1)
		t.log.Debug("transport: send to unknown peer dropped", "msg", m)
		return
	}
	if m.From != t.cfg.Name || m.FromIncarnation != t.cfg.Incarnation ||
		m.Type < mutex.MsgRequest || m.Type > mutex.MaxMsgType || len(m.Lock) > mutex.MaxNameLen {
		t.st.droppedInvalid.Add(1)
		t.log.Error("transport: invalid message dropped", "msg", m)
		return
	}
	p.enqueued.Add(1)
	if t.sendDirect(p, m) {
		return
	}
	if !p.q.push(m) {
		p.settled.Add(1)
		t.st.droppedQueueFull.Add(1)
		t.log.Debug("transport: queue full, message dropped; reconnecting", "peer", m.To)
		// A lost message is recovered only through Connected, on which
		// the driver re-sends what it owes: force a new connection. The
		// close ends a write blocked on a peer that stopped reading.
		select {
		case p.kick <- struct{}{}:
		default:
		}
		p.mu.Lock()
		c := p.conn
		p.mu.Unlock()
		if c != nil {
			c.Close()
		}
	}
}

// Flush waits until every message queued before the call has been written
// to its peer's socket (or lost with a broken connection, or dropped with a
// removed peer). It fails when ctx ends first, or the transport is closed.
func (t *Transport) Flush(ctx context.Context) error {
	if t.ctx.Err() != nil {
		return fmt.Errorf("transport: flush: %w", ErrClosed)
	}
	t.flushWaiters.Add(1)
	defer t.flushWaiters.Add(-1)
	targets := make(map[*peer]uint64)
	t.mu.RLock()
	for _, p := range t.peers {
		targets[p] = p.enqueued.Load()
	}
	t.mu.RUnlock()
	for {
		t.progressMu.Lock()
		ch := t.progress
		t.progressMu.Unlock()
		var remaining uint64
		for p, n := range targets {
			if s := p.settled.Load(); s < n && p.ctx.Err() == nil {
				remaining += n - s
			}
		}
		if remaining == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("transport: flush: %d messages not written: %w", remaining, ctx.Err())
		case <-t.ctx.Done():
			return fmt.Errorf("transport: flush: %w", ErrClosed)
		}
	}
}

func (t *Transport) notifyProgress() {
	if t.flushWaiters.Load() == 0 {
		return
	}
	t.progressMu.Lock()
	close(t.progress)
	t.progress = make(chan struct{})
	t.progressMu.Unlock()
}

// Stats returns the transport's counters.
func (t *Transport) Stats() Stats {
	s := Stats{
		Encrypted:         t.Encrypted(),
		OutboundConns:     int(t.st.outboundConns.Load()),
		InboundConns:      int(t.st.inboundConns.Load()),
		FramesSent:        t.st.framesSent.Load(),
		FramesReceived:    t.st.framesReceived.Load(),
		BytesSent:         t.st.bytesSent.Load(),
		BytesReceived:     t.st.bytesReceived.Load(),
		Dials:             t.st.dials.Load(),
		DialFailures:      t.st.dialFailures.Load(),
		Connects:          t.st.connects.Load(),
		Disconnects:       t.st.disconnects.Load(),
		Accepts:           t.st.accepts.Load(),
		HandshakeFailures: t.st.handshakeFailures.Load(),
		DroppedQueueFull:  t.st.droppedQueueFull.Load(),
		DroppedNoPeer:     t.st.droppedNoPeer.Load(),
		DroppedInvalid:    t.st.droppedInvalid.Load(),
		DroppedUnsent:     t.st.droppedUnsent.Load(),
		BadFrames:         t.st.badFrames.Load(),
		Floods:            t.st.floods.Load(),
		RejectedConns:     t.st.rejectedConns.Load(),
		Rekeys:            t.st.rekeys.Load(),
		SentByType:        byType(&t.st.sentByType),
		ReceivedByType:    byType(&t.st.receivedByType),
	}
	stale, kick := t.staleConns()
	s.OldKeyConns = len(stale) + len(kick)
	t.mu.RLock()
	s.Peers = len(t.peers)
	for _, p := range t.peers {
		s.Queued += p.q.len()
	}
	t.mu.RUnlock()
	return s
}

// PeerState is the outgoing side towards one added peer.
type PeerState struct {
	Name        string `json:"name"`
	Incarnation uint64 `json:"incarnation,string"`
	Addr        string `json:"addr"`
	// Connected reports an established outgoing connection: messages
	// sent now go out at once.
	Connected bool `json:"connected"`
	// Queued counts the messages waiting to be written.
	Queued int `json:"queued"`
	// FailedAttempts counts the consecutive failed attempts to connect
	// (dial or handshake) since the last established connection.
	FailedAttempts int64 `json:"failed_attempts"`
}

// PeerStates returns the state of the outgoing side towards every added
// peer, sorted by name.
func (t *Transport) PeerStates() []PeerState {
	t.mu.RLock()
	ps := make([]PeerState, 0, len(t.peers))
	for _, p := range t.peers {
		p.mu.Lock()
		ps = append(ps, PeerState{
			Name: p.name, Incarnation: p.inc, Addr: p.addr, Connected: p.conn != nil,
			Queued: p.q.len(), FailedAttempts: p.streak.Load(),
		})
		p.mu.Unlock()
	}
	t.mu.RUnlock()
	slices.SortFunc(ps, func(a, b PeerState) int { return strings.Compare(a.Name, b.Name) })
	return ps
}

// Close stops listening, closes every connection, ends every goroutine of
// the transport and then closes Incoming and Connected. Messages still
// queued are discarded (call Flush first for a graceful leave).
func (t *Transport) Close() error {
	t.closeOnce.Do(func() {
		t.mu.Lock()
		t.closed = true
		t.mu.Unlock()
		t.cancel()
		if err := t.ln.Close(); err != nil {
			t.closeErr = fmt.Errorf("transport: close listener: %w", err)
		}
		t.wg.Wait()
		close(t.incoming)
		close(t.connected)
	})
	return t.closeErr
}

// byType renders per-type counters, leaving out the types never seen.
func byType(c *[256]atomic.Uint64) map[string]uint64 {
	m := map[string]uint64{}
	for i := range c {
		if n := c[i].Load(); n > 0 {
			m[mutex.MsgType(i).String()] = n
		}
	}
	return m
}
