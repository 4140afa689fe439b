package peer

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/dlockfs/dlockfs/mutex"
)

// memNet is an in-memory lock channel: a set of memTransports addressed by
// "mem:N". Delivery is FIFO per sender; a closed transport drops what is
// sent to it, like a crashed process.
type memNet struct {
	mu    sync.Mutex
	next  int
	nodes map[string]*memTransport
}

func newMemNet() *memNet { return &memNet{nodes: map[string]*memTransport{}} }

// listen is the start() hook that makes a memTransport.
func (n *memNet) listen(cfg transportConfig) (lockTransport, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.next++
	t := &memTransport{
		net:       n,
		addr:      fmt.Sprintf("mem:%d", n.next),
		name:      cfg.Name,
		in:        make(chan incoming),
		connected: make(chan string, 1024),
		peers:     map[string]string{},
		holding:   map[string]bool{},
		held:      map[string][]mutex.Message{},
		flushed:   make(chan struct{}),
		wake:      make(chan struct{}, 1),
		closed:    make(chan struct{}),
		pumpDone:  make(chan struct{}),
	}
	n.nodes[t.addr] = t
	go t.pump()
	return t, nil
}

type memTransport struct {
	net       *memNet
	addr      string
	name      string
	in        chan incoming
	connected chan string
	wake      chan struct{}
	closed    chan struct{}
	pumpDone  chan struct{}
	closeOnce sync.Once

	mu    sync.Mutex
	peers map[string]string // name -> addr
	queue []incoming        // received, not yet handed to the driver
	sent  uint64
	recv  uint64
	lost  uint64
	// cut, when set, drops messages to that peer name (a broken conn).
	cut map[string]bool
	// held keeps the messages to a peer name instead of delivering them,
	// while holding[name] (see hold).
	holding map[string]bool
	held    map[string][]mutex.Message
	// ops logs the calls to Send ("send TYPE TO LOCK") and Flush ("flush")
	// in order.
	ops []string
	// onSend, if set, runs at the start of every Send.
	onSend func(mutex.Message)
	// flushed is closed by the first Flush.
	flushed     chan struct{}
	flushedOnce sync.Once
	// flushGate, if set, holds Flush until it is closed or ctx ends.
	flushGate chan struct{}
}

func (t *memTransport) Addr() string { return t.addr }

func (t *memTransport) AddPeer(name string, inc uint64, addr string) {
	t.mu.Lock()
	t.peers[name] = addr
	t.mu.Unlock()
	select {
	case t.connected <- name:
	default:
	}
}

func (t *memTransport) RemovePeer(name string) {
	t.mu.Lock()
	delete(t.peers, name)
	t.mu.Unlock()
}

func (t *memTransport) Send(m mutex.Message) {
	t.mu.Lock()
	hook := t.onSend
	t.mu.Unlock()
	if hook != nil {
		hook(m)
	}
	t.mu.Lock()
	t.ops = append(t.ops, fmt.Sprintf("send %s %s %s", m.Type, m.To, m.Lock))
	t.sent++
	if t.holding[m.To] {
		t.held[m.To] = append(t.held[m.To], m)
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()
	t.route(m)
}

// route delivers m to its peer, or counts it lost.
func (t *memTransport) route(m mutex.Message) {
	t.mu.Lock()
	addr, ok := t.peers[m.To]
	cut := t.cut[m.To]
	if !ok || cut {
		t.lost++
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()
	t.net.mu.Lock()
	dst := t.net.nodes[addr]
	t.net.mu.Unlock()
	if dst == nil {
		t.mu.Lock()
		t.lost++
		t.mu.Unlock()
		return
	}
	dst.deliver(incoming{Msg: m, Remote: t.addr})
}

func (t *memTransport) deliver(in incoming) {
	select {
	case <-t.closed:
		return
	default:
	}
	t.mu.Lock()
	t.queue = append(t.queue, in)
	t.recv++
	t.mu.Unlock()
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// pump hands queued messages to the driver in order.
func (t *memTransport) pump() {
	defer close(t.pumpDone)
	for {
		t.mu.Lock()
		var next *incoming
		if len(t.queue) > 0 {
			next = &t.queue[0]
			t.queue = t.queue[1:]
		}
		t.mu.Unlock()
		if next == nil {
			select {
			case <-t.wake:
				continue
			case <-t.closed:
				return
			}
		}
		select {
		case t.in <- *next:
		case <-t.closed:
			return
		}
	}
}

// breakConn simulates a connection to peer name that breaks and comes
// back: what was in flight to it is lost, then the driver hears
// Connected.
func (t *memTransport) breakConn(name string, lost func()) {
	t.mu.Lock()
	if t.cut == nil {
		t.cut = map[string]bool{}
	}
	t.cut[name] = true
	t.mu.Unlock()
	if lost != nil {
		lost()
	}
	t.mu.Lock()
	delete(t.cut, name)
	t.mu.Unlock()
	t.connected <- name
}

func (t *memTransport) Incoming() <-chan incoming { return t.in }
func (t *memTransport) Connected() <-chan string  { return t.connected }

func (t *memTransport) Flush(ctx context.Context) error {
	t.mu.Lock()
	t.ops = append(t.ops, "flush")
	gate := t.flushGate
	t.mu.Unlock()
	t.flushedOnce.Do(func() { close(t.flushed) })
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// gateFlush makes Flush wait until the returned channel is closed.
func (t *memTransport) gateFlush() chan struct{} {
	gate := make(chan struct{})
	t.mu.Lock()
	t.flushGate = gate
	t.mu.Unlock()
	return gate
}

// hold keeps the messages sent to name from now on, until release.
func (t *memTransport) hold(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.holding[name] = true
}

// heldFor returns the messages held for name.
func (t *memTransport) heldFor(name string) []mutex.Message {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.held[name])
}

// release delivers the messages held for name, in order, and stops
// holding them.
func (t *memTransport) release(name string) {
	t.mu.Lock()
	msgs := t.held[name]
	delete(t.held, name)
	delete(t.holding, name)
	t.mu.Unlock()
	for _, m := range msgs {
		t.route(m)
	}
}

// opLog returns the Send and Flush calls so far.
func (t *memTransport) opLog() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.ops)
}

// setOnSend installs a hook run at the start of every Send.
func (t *memTransport) setOnSend(f func(mutex.Message)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.onSend = f
}

func (t *memTransport) Stats() transportStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return transportStats{FramesSent: t.sent, FramesReceived: t.recv, DroppedUnsent: t.lost}
}

func (t *memTransport) PeerStates() []peerState {
	t.mu.Lock()
	defer t.mu.Unlock()
	var ps []peerState
	for name, addr := range t.peers {
		ps = append(ps, peerState{Name: name, Addr: addr, Connected: !t.cut[name]})
	}
	slices.SortFunc(ps, func(a, b peerState) int { return strings.Compare(a.Name, b.Name) })
	return ps
}

func (t *memTransport) Close() error {
	t.closeOnce.Do(func() {
		close(t.closed)
		t.net.mu.Lock()
		delete(t.net.nodes, t.addr)
		t.net.mu.Unlock()
	})
	<-t.pumpDone
	return nil
}
