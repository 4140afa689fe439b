package peer

import (
	"context"
	"errors"
	"time"

	"github.com/hashicorp/serf/serf"

	"github.com/dlockfs/dlockfs/mutex"
)

// callKind is the kind of a local call into the driver.
type callKind uint8

const (
	callAcquire     callKind = iota // Lock or TryLock (try), shared or not
	callCancel                      // a Lock's ctx ended: withdraw or release op
	callRelease                     // Unlock
	callStatus                      // Status
	callNames                       // Names
	callShutdown                    // Leave: core.Shutdown
	callMembers                     // after a join: add the members Serf knows
	callLeaveVoters                 // majority mode: ask the voters to remove us (ack when done)
	callForget                      // majority mode: remove voter lock (try: force) from the voter set
	callBreak                       // majority mode: an operator's break of lock (errc: once the holder is found)
	callStop                        // the lifecycle's terminate: end the driver (status: the last one)
)

// call is one local call into the driver.
type call struct {
	kind   callKind
	op     mutex.OpenerID
	lock   string
	try    bool
	shared bool                // callAcquire: a shared hold
	res    chan<- result       // callAcquire, buffered
	errc   chan<- error        // callRelease, buffered
	status chan<- mutex.Status // callStatus, callStop, buffered
	names  chan<- []string     // callNames, buffered
	ack    chan<- struct{}     // callShutdown, callMembers: outputs performed
	mems   []serf.Member       // callMembers
}

// result answers a Lock or TryLock.
type result struct {
	grant mutex.Grant
	err   error
}

// waiter is a local opener waiting for its grant.
type waiter struct {
	res  chan<- result
	lock string
}

// dropWarnEvery rate-limits the warning about dropped lock messages.
const dropWarnEvery = 10 * time.Second

// run is the driver: the goroutine that owns the core, sharing it (under
// coreMu) only with the lock channel's readers (inbox) and Lock and Unlock
// calls (direct) while it runs. Every input is a step of the core, after
// which its outputs are performed. It ends on callStop, which only the
// lifecycle goroutine sends (see lifecycle.go).
func (p *Peer) run() {
	incoming := p.tr.Incoming()
	connected := p.tr.Connected()
	ticker := time.NewTicker(p.tickEvery())
	defer ticker.Stop()
	// Time first: a lease that lapsed is revoked before any input is
	// acted on. Each input is followed by a Tick and a flush (below), so
	// the next turn of the loop needs none before it waits.
	p.coreMu.Lock()
	p.core.Tick(p.now())
	p.flush()
	p.running = true
	p.coreMu.Unlock()
	if p.inbox != nil {
		close(p.inbox.ready)
	}
	for {
		select {
		case <-ticker.C:
			p.coreMu.Lock() // settle ticks the core
		case c := <-p.calls:
			p.coreMu.Lock()
			if c.kind == callStop {
				p.running = false
				defer p.coreMu.Unlock()
				p.core.Tick(p.now())
				for op, w := range p.waiters {
					w.res <- result{err: ErrClosed}
					delete(p.waiters, op)
				}
				c.status <- p.core.Status()
				return
			}
			p.handleCall(c)
		case in, ok := <-incoming:
			if !ok {
				incoming = nil
				continue
			}
			p.coreMu.Lock()
			p.step(in)
		case name, ok := <-connected:
			if !ok {
				connected = nil
				continue
			}
			p.coreMu.Lock()
			p.reconnected(name)
		case ev := <-p.events:
			p.coreMu.Lock()
			p.handleEvent(ev)
		}
		p.settle()
		p.coreMu.Unlock()
	}
}

// settle follows every input (under coreMu): time, then the outputs.
func (p *Peer) settle() {
	p.core.Tick(p.now())
	p.flush()
	if p.leftAck != nil && p.core.LeftVoters() {
		close(p.leftAck)
		p.leftAck = nil
	}
}

// inbox is the lock channel's Deliver: it steps the core with each
// message on the goroutine that read it, instead of handing it to the
// driver goroutine through a channel (one goroutine wake-up less per
// message on a lock round's path).
type inbox struct {
	p     *Peer         // set before ready is closed
	ready chan struct{} // closed once the driver runs
}

// deliver waits until the driver runs (or the lock channel closes), then
// steps the message. One connection's messages arrive in order, as on
// the channel.
func (b *inbox) deliver(ctx context.Context, in incoming) {
	select {
	case <-b.ready:
	case <-ctx.Done():
		return
	}
	b.p.deliver(in)
}

// deliver steps one incoming message and performs the outputs, as the
// driver does; after the driver stopped, the message is dropped (as one
// left in the channel once the driver has stopped reading it).
func (p *Peer) deliver(in incoming) {
	p.coreMu.Lock()
	defer p.coreMu.Unlock()
	if !p.running {
		return
	}
	p.step(in)
	p.settle()
}

// direct performs a Lock's, a cancelled Lock's or an Unlock's call
// (callAcquire, callCancel, callRelease) on the caller's goroutine, as the
// driver would, and reports whether it did (not once the driver has
// stopped). Their answers go to buffered channels, so handleCall never
// blocks here.
func (p *Peer) direct(c call) bool {
	p.coreMu.Lock()
	defer p.coreMu.Unlock()
	if !p.running {
		return false
	}
	p.handleCall(c)
	p.settle()
	return true
}

// flush performs the core's outputs: messages, then grants, then refusals.
// A grant for an opener that went away is given back, which may produce
// more outputs, hence the loop (bounded: each round removes a grant).
func (p *Peer) flush() {
	for range 1 << 20 {
		rd := p.core.Ready()
		if rd.Empty() {
			return
		}
		p.performHardState(rd.HardState)
		p.performRevocations(rd.Revocations)
		p.logFaults(rd.Faults)
		rd.Messages = p.misbehave(rd.Messages)
		for _, m := range rd.Messages {
			p.tr.Send(m)
		}
		for _, g := range rd.Grants {
			w, ok := p.waiters[g.Opener]
			if !ok || p.closed {
				if err := p.core.Release(g.Opener); err != nil {
					p.log.Error("give back an unwanted grant", "lock", g.Lock, "err", err)
				}
				continue
			}
			delete(p.waiters, g.Opener)
			p.held[g.Opener] = g.Lock
			p.heldPeak = max(p.heldPeak, len(p.held))
			w.res <- result{grant: g}
		}
		for _, r := range rd.Refusals {
			if w, ok := p.waiters[r.Opener]; ok {
				delete(p.waiters, r.Opener)
				w.res <- result{err: mutex.ErrLocked}
			}
		}
	}
	p.log.Error("core keeps producing outputs; giving up this round")
}

func (p *Peer) handleCall(c call) {
	switch c.kind {
	case callAcquire:
		if p.closed {
			c.res <- result{err: ErrClosed}
			return
		}
		var err error
		switch {
		case c.try && c.shared:
			err = p.core.TryAcquireShared(c.op, c.lock)
		case c.try:
			err = p.core.TryAcquire(c.op, c.lock)
		case c.shared:
			err = p.core.AcquireShared(c.op, c.lock)
		default:
			err = p.core.Acquire(c.op, c.lock)
		}
		if err != nil {
			c.res <- result{err: err}
			return
		}
		p.waiters[c.op] = waiter{res: c.res, lock: c.lock}
		p.heldPeak = max(p.heldPeak, len(p.waiters))
	case callCancel:
		p.takeRevoked(c.op)
		_, waiting := p.waiters[c.op]
		_, holding := p.held[c.op]
		if waiting || holding {
			delete(p.waiters, c.op)
			delete(p.held, c.op)
			p.core.Cancel(c.op)
		}
	case callRelease:
		lock, ok := p.held[c.op]
		switch {
		case p.closed:
			c.errc <- ErrClosed
		case !ok && p.takeRevoked(c.op):
			c.errc <- nil // revoked: nothing left to release
		case !ok || lock != c.lock:
			c.errc <- ErrNotHeld
		default:
			delete(p.held, c.op)
			c.errc <- p.core.Release(c.op)
			p.shrinkIdle()
		}
	case callStatus:
		c.status <- p.core.Status()
	case callNames:
		c.names <- p.core.LockNames()
	case callShutdown:
		p.shutdownCore()
		// The caller flushes the lock channel next: what Shutdown
		// sends (replies, cancels, the hellos that carry our Lamport
		// time) must be queued before it is acknowledged.
		p.flush()
		close(c.ack)
	case callLeaveVoters:
		p.core.LeaveVoters()
		p.leftAck = c.ack
		if p.core.LeftVoters() {
			close(c.ack)
			p.leftAck = nil
		}
	case callBreak:
		if err := p.core.Break(c.lock); err != nil {
			c.errc <- err
			break
		}
		p.log.Warn("operator's break: asking the voters to evict the holder of the lock", "lock", c.lock)
		if p.breakWait == nil {
			p.breakWait = map[string][]chan<- error{}
		}
		p.breakWait[c.lock] = append(p.breakWait[c.lock], c.errc)
	case callForget:
		if c.try {
			c.errc <- p.core.ForceForget(c.lock)
		} else {
			c.errc <- p.core.Forget(c.lock)
		}
		if c.try {
			p.log.Warn("voter removed by force, on this peer's word alone", "voter", c.lock)
		} else {
			p.log.Info("removing voter (needs a majority)", "voter", c.lock)
		}
	case callMembers:
		for _, m := range c.mems {
			if m.Name != p.name && m.Status == serf.StatusAlive {
				p.memberUp(m)
			}
		}
		// Start returns on the ack: the hellos go out first.
		p.flush()
		close(c.ack)
	}
}

// shrinkIdle makes waiters and held anew once both are empty after they
// grew large: a Go map keeps the memory of its largest size, so a peer
// that once held many locks would otherwise never return to idle.
func (p *Peer) shrinkIdle() {
	const small = 64
	if p.heldPeak > small && len(p.held) == 0 && len(p.waiters) == 0 {
		p.held = make(map[mutex.OpenerID]string)
		p.waiters = make(map[mutex.OpenerID]waiter)
		p.heldPeak = 0
	}
}

// shutdownCore withdraws every local opener and releases every hold: after
// it nobody waits on this peer. The driver still answers peers' requests.
func (p *Peer) shutdownCore() {
	if p.closed {
		return
	}
	p.closed = true
	p.core.Shutdown()
	for op, w := range p.waiters {
		w.res <- result{err: ErrClosed}
		delete(p.waiters, op)
	}
	clear(p.held)
}

// reconnected handles a (re)established outgoing connection to a member:
// what we sent it before may be lost, and the core sends it again (see
// mutex.Core.Reconnected).
func (p *Peer) reconnected(name string) {
	if _, ok := p.members[name]; ok {
		p.core.Reconnected(name)
	}
}

// step feeds one incoming message to the core.
func (p *Peer) step(in incoming) {
	err := p.core.Step(in.Msg)
	if err == nil {
		return
	}
	p.log.Debug("dropped lock message", "remote", in.Remote, "msg", in.Msg.String(), "err", err)
	if errors.Is(err, mutex.ErrDuplicate) || errors.Is(err, mutex.ErrStale) ||
		errors.Is(err, mutex.ErrUnknownPeer) || errors.Is(err, mutex.ErrUnexpected) ||
		errors.Is(err, mutex.ErrConfig) || errors.Is(err, mutex.ErrNotVoter) {
		// Expected around reconnections and membership changes: a
		// request re-sent after a hello is answered twice, a message
		// from a peer we have not added yet is dropped until its hello.
		return
	}
	p.dropsQuiet++
	if now := time.Now(); now.Sub(p.dropWarn) >= dropWarnEvery {
		p.log.Warn("dropped lock message", "remote", in.Remote, "msg", in.Msg.String(), "err", err,
			"dropped_since_last_warning", p.dropsQuiet)
		p.dropWarn = now
		p.dropsQuiet = 0
	}
}

// handleEvent applies a Serf member event to the core and the transport.
func (p *Peer) handleEvent(ev serf.Event) {
	me, ok := ev.(serf.MemberEvent)
	if !ok {
		return
	}
	for _, m := range me.Members {
		if m.Name == p.name {
			continue
		}
		switch me.Type {
		case serf.EventMemberJoin, serf.EventMemberUpdate:
			p.memberUp(m)
		case serf.EventMemberLeave, serf.EventMemberFailed, serf.EventMemberReap:
			p.memberDown(m, me.Type)
		}
	}
}
