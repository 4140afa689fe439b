package peer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/serf/serf"

	"github.com/dlockfs/dlockfs/mutex"
)

// lifeState is where a peer is in its life. One goroutine, the lifecycle
// goroutine ([Peer.lifecycle]), reads and changes it; everybody else asks it
// through Peer.life and learns the end from Peer.done. The transitions,
// and no others:
//
//	from               on                                  to
//	starting           Start's join is over (or none)      joined
//	starting, joined   Leave, or Serf down on its own      leaving
//	starting, joined   kill (a crash, or a failed Start)   stopped
//	leaving            the leave's steps are over          stopped
//	leaving            kill: the steps are cut short       (leaving)
//	stopped            anything                            (stopped)
//
// What each does:
//   - Into leaving, the leave's steps (leaveSteps: withdraw everyone,
//     leave the voters, flush the lock channel, leave Serf) start on a
//     goroutine of their own, so that the lifecycle goroutine stays ready
//     for a kill; the driver keeps answering peers until they are over.
//     When Serf shut down on its own, the cause ([ErrSerfDown]) is kept,
//     and the steps announce nothing: only the core's shutdown and a flush
//     of a second at most.
//   - A kill from starting or joined stops at once, as a crash would: no
//     core shutdown, no flush, no Serf leave.
//   - A kill while leaving cancels the steps' waits and skips Serf's Leave
//     if it has not begun; the peer stops when the step under way returns.
//     So Serf is never shut down while its Leave runs (memberlist panics:
//     "leave after shutdown").
//   - Into stopped (terminate, then publish): Serf shut down, the driver
//     ended, the lock channel closed, and what the peer leaves behind
//     recorded in Peer.end before Peer.done is closed.
//
// Leave and kill are safe from every state and idempotent: a second Leave
// returns the first one's result, a Leave after a kill the cause (nil).
type lifeState uint8

const (
	stateStarting lifeState = iota
	stateJoined
	stateLeaving
	stateStopped
)

func (s lifeState) String() string {
	switch s {
	case stateStarting:
		return "starting"
	case stateJoined:
		return "joined"
	case stateLeaving:
		return "leaving"
	}
	return "stopped"
}

// lifeKind is what a request to the lifecycle goroutine asks for.
type lifeKind uint8

const (
	lifeJoined lifeKind = iota // Start: the join is over (reply: nil, or why not)
	lifeLeave                  // Leave: leave gracefully, ctx bounding the waits
	lifeKill                   // kill: stop now
	lifeQuery                  // tests: report the state
)

// lifeReq is one request to the lifecycle goroutine.
type lifeReq struct {
	kind  lifeKind
	ctx   context.Context  // lifeLeave
	reply chan<- error     // lifeJoined, buffered
	state chan<- lifeState // lifeQuery, buffered
}

// ending is what a stopped peer leaves behind: what Leave, Err, Names and
// Status answer once the driver is gone.
type ending struct {
	cause  error        // why the peer stopped on its own, or nil
	result error        // what Leave returns
	final  mutex.Status // the core's last status
}

// begin starts the driver and the lifecycle goroutine; serfDown is Serf's
// ShutdownCh (nil without Serf).
func (p *Peer) begin(serfDown <-chan struct{}) {
	go p.run()
	go p.lifecycle(serfDown)
}

// lifecycle is the lifecycle goroutine: it owns the peer's lifeState (see
// there for the transitions) and ends when the peer has stopped.
func (p *Peer) lifecycle(serfDown <-chan struct{}) {
	state := stateStarting
	var (
		cause  error
		steps  chan error         // the leave's result, while leaving
		kill   chan struct{}      // closed to cut the leave's steps short
		cancel context.CancelFunc // ends the leave's waits
	)
	leave := func(ctx context.Context, announce bool) {
		state = stateLeaving
		steps, kill = make(chan error, 1), make(chan struct{})
		if announce {
			ctx, cancel = context.WithCancel(ctx)
		} else {
			// Serf is down: send what the core owes for a second at
			// most (nobody else will), and stop.
			ctx, cancel = context.WithTimeout(context.Background(), time.Second)
		}
		go func(res chan<- error, kill <-chan struct{}) {
			res <- p.leaveSteps(ctx, kill, announce)
		}(steps, kill)
	}
	for state != stateStopped {
		select {
		case r := <-p.life:
			switch r.kind {
			case lifeQuery:
				r.state <- state
			case lifeJoined:
				if state != stateStarting {
					r.reply <- p.stoppedErr(cause)
					break
				}
				state = stateJoined
				r.reply <- nil
			case lifeLeave:
				if state == stateStarting || state == stateJoined {
					leave(r.ctx, true)
				} // leaving: the caller waits for the running leave
			case lifeKill:
				if state != stateLeaving {
					final, _ := p.terminate() // a crash reports nothing
					p.publish(ending{result: cause, final: final})
					state = stateStopped
				} else if kill != nil {
					close(kill)
					kill = nil
					cancel()
				}
			}
		case <-serfDown:
			serfDown = nil
			if state != stateStarting && state != stateJoined {
				break // leaving: the steps go on, skipping Serf's Leave
			}
			cause = ErrSerfDown
			p.setCause(cause)
			p.log.Error("peer stopping", "err", cause)
			leave(context.Background(), false)
		case err := <-steps:
			cancel()
			final, terr := p.terminate()
			p.publish(ending{result: errors.Join(err, terr, cause), final: final})
			state = stateStopped
		}
	}
}

// ask sends r to the lifecycle goroutine, reporting false if the peer
// stopped first.
func (p *Peer) ask(r lifeReq) bool {
	select {
	case p.life <- r:
		return true
	case <-p.done:
		return false
	}
}

// markJoined tells the lifecycle goroutine that Start's join is over. It
// fails if the peer is leaving or stopped already (Serf shut down).
func (p *Peer) markJoined() error {
	reply := make(chan error, 1)
	if !p.ask(lifeReq{kind: lifeJoined, reply: reply}) {
		return p.stoppedErr(p.Err())
	}
	return <-reply
}

// stoppedErr is the error of a call that found the peer stopped.
func (p *Peer) stoppedErr(cause error) error {
	if cause != nil {
		return cause
	}
	return ErrClosed
}

// lifeStateNow reports the peer's state (for tests).
func (p *Peer) lifeStateNow() lifeState {
	res := make(chan lifeState, 1)
	if !p.ask(lifeReq{kind: lifeQuery, state: res}) {
		return stateStopped
	}
	return <-res
}

// Done is closed when the peer has stopped: after Leave, or on its own
// (see [Peer.Err]).
func (p *Peer) Done() <-chan struct{} { return p.done }

// Err returns why the peer stopped on its own ([ErrSerfDown]), or nil.
func (p *Peer) Err() error {
	p.endMu.Lock()
	defer p.endMu.Unlock()
	return p.end.cause
}

func (p *Peer) setCause(err error) {
	p.endMu.Lock()
	defer p.endMu.Unlock()
	p.end.cause = err
}

// ended returns what the stopped peer left behind.
func (p *Peer) ended() ending {
	p.endMu.Lock()
	defer p.endMu.Unlock()
	return p.end
}

// Leave leaves the cluster gracefully: waiting Lock calls return
// [ErrClosed], holds are released and deferred replies sent, the lock
// channel is flushed (until ctx ends), Serf announces the leave (bounded by
// Serf's own timeouts, not by ctx), and every goroutine ends. It is safe in
// any state: calling it again returns the first result, and after a kill
// or a stop on its own it returns [Peer.Err].
func (p *Peer) Leave(ctx context.Context) error {
	p.ask(lifeReq{kind: lifeLeave, ctx: ctx})
	<-p.done
	return p.ended().result
}

// kill stops the peer as a crash would: no core shutdown, no leave, no
// flush; during a Leave, it cuts the Leave short. Peers notice by failure
// detection. Safe in any state; it returns once the peer has stopped. For
// tests and failed starts.
func (p *Peer) kill() {
	p.ask(lifeReq{kind: lifeKill})
	<-p.done
}

// leaveSteps are the leave's steps, in order; it runs on a goroutine of its
// own (see lifeState). announce is false when Serf is down already. ctx
// ends, and kill is closed, when the peer is killed meanwhile.
func (p *Peer) leaveSteps(ctx context.Context, kill <-chan struct{}, announce bool) error {
	var errs []error
	// Withdraw and release everything; the driver keeps answering peers
	// until Serf has told them we left. The driver runs until terminate,
	// so the call is always taken.
	ack := make(chan struct{})
	p.calls <- call{kind: callShutdown, ack: ack}
	<-ack
	if announce {
		if err := p.leaveVoters(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if err := p.tr.Flush(ctx); err != nil {
		errs = append(errs, fmt.Errorf("peer: leave: flush lock channel: %w", err))
	}
	// Serf's Leave is not cut short by ctx: shutting Serf down while it
	// runs makes memberlist panic ("leave after shutdown"), and it is
	// bounded by Serf's own broadcast timeouts. A kill before it skips it.
	select {
	case <-kill:
		announce = false
	default:
	}
	if announce && p.serf != nil && p.serf.State() == serf.SerfAlive {
		if err := p.serf.Leave(); err != nil {
			errs = append(errs, fmt.Errorf("peer: leave: serf: %w", err))
		}
	}
	if announce {
		p.log.Info("peer left")
	}
	return errors.Join(errs...)
}

// terminate shuts Serf down, ends the driver (which hands over the core's
// last status) and closes the lock channel. Only the lifecycle goroutine
// calls it, once, never while the leave's steps run.
func (p *Peer) terminate() (mutex.Status, error) {
	var errs []error
	if p.serf != nil {
		if err := p.serf.Shutdown(); err != nil {
			errs = append(errs, fmt.Errorf("peer: serf shutdown: %w", err))
		}
	}
	final := make(chan mutex.Status, 1)
	p.calls <- call{kind: callStop, status: final}
	st := <-final
	if err := p.tr.Close(); err != nil {
		errs = append(errs, fmt.Errorf("peer: close lock channel: %w", err))
	}
	return st, errors.Join(errs...)
}

// publish records what the stopped peer leaves behind and closes done.
func (p *Peer) publish(end ending) {
	p.endMu.Lock()
	end.cause = p.end.cause
	p.end = end
	p.endMu.Unlock()
	close(p.done)
}
