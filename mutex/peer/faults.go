package peer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dlockfs/dlockfs/mutex"
)

// forgedLogEvery rate-limits the warning about a member's forgeries (each
// is counted in the status's dropped_by "forged" all the same).
const forgedLogEvery = 10 * time.Second

// logFaults logs what the core found out about misbehaving members (issue
// 14), and this peer's own eviction.
func (p *Peer) logFaults(rs []mutex.FaultReport) {
	for _, r := range rs {
		switch r.Kind {
		case mutex.FaultSuspect:
			if r.Lock == "" {
				p.log.Warn("member suspected of refusing to answer: it left a probe unanswered "+
					"(another voter reported it)", "member", r.Peer, "for", r.For)
				continue
			}
			p.log.Warn("member suspected of refusing to answer: it owes an answer to our request "+
				"(in majority mode a majority of the voters suspecting it evicts it)",
				"member", r.Peer, "lock", r.Lock, "request", r.ReqTime, "for", r.For)
		case mutex.FaultAnswered:
			// At the level its suspicion was logged at, so that the default
			// level shows both.
			if r.Why == mutex.AnsweredGone {
				p.log.Warn("suspected member is gone (failed, left, restarted or no longer a voter): "+
					"no longer suspected", "member", r.Peer)
				continue
			}
			p.log.Warn("suspected member answers again: no longer suspected", "member", r.Peer)
		case mutex.FaultSuspectedBy:
			p.log.Warn("a member suspects this peer of not answering its request; answering again",
				"member", r.Peer, "lock", r.Lock, "request", r.ReqTime)
		case mutex.FaultForged:
			if t, ok := p.forgedLog[r.Peer]; ok && time.Since(t) < forgedLogEvery {
				continue
			}
			if p.forgedLog == nil {
				p.forgedLog = map[string]time.Time{}
			}
			p.forgedLog[r.Peer] = time.Now()
			p.log.Warn("message with a forged timestamp dropped; its sender is suspected of misbehaving",
				"member", r.Peer, "lock", r.Lock, "request", r.ReqTime, "why", r.Why)
		case mutex.FaultBreak:
			if r.Peer == p.name {
				p.log.Error("an operator broke this peer's hold of a lock: the voters evict this peer "+
					"(its holds are revoked when its lease lapses)", "lock", r.Lock, "token", r.ReqTime, "asked_at", r.Why)
			} else {
				p.log.Warn("an operator broke a member's hold of a lock: it is suspected at once, "+
					"and evicted once a majority of the voters suspect it", "member", r.Peer, "lock", r.Lock,
					"token", r.ReqTime, "asked_at", r.Why)
			}
			if r.Why == p.name {
				p.breakDone(r.Lock, nil)
			}
		case mutex.FaultBreakNone:
			p.log.Warn("operator's break: nobody holds the lock; nothing done", "lock", r.Lock)
			p.breakDone(r.Lock, fmt.Errorf("peer: break %q: %w", r.Lock, mutex.ErrNotHeld))
		case mutex.FaultEvictedSelf:
			p.log.Error("this peer was declared evicted (silent, or suspected of refusing to answer): "+
				"its holds are revoked when its lease lapses, and it starts a new session",
				"declared_by", r.Peer, "session", r.ReqTime)
		case mutex.FaultBack:
			p.log.Warn("this peer is back after its eviction: a majority of the voters grant its lease again, "+
				"in a new session", "session", r.ReqTime)
		}
	}
}

// breakDone answers the Break calls waiting on lock.
func (p *Peer) breakDone(lock string, err error) {
	for _, c := range p.breakWait[lock] {
		c <- err
	}
	delete(p.breakWait, lock)
}

// Break asks, on an operator's word, that the majority evict the current
// holder of lock name at once (majority mode, on a voter): the voters are
// asked who holds it, and each suspects the holder without waiting for
// evidence of its own; the holder's lease lapses and its hold is revoked
// before anyone else is granted the lock (after the lock-delay). It
// returns once the holder is found and the voters are told, with an error
// wrapping [mutex.ErrNotHeld] if nobody holds name, [mutex.ErrHeldHere] if
// this peer holds it, or when ctx ends.
func (p *Peer) Break(ctx context.Context, name string) error {
	if p.quorum != mutex.QuorumMajority {
		return fmt.Errorf("peer: break %q: only in majority mode", name)
	}
	errc := make(chan error, 1)
	select {
	case p.calls <- call{kind: callBreak, lock: name, errc: errc}:
	case <-p.done:
		return fmt.Errorf("peer: break %q: %w", name, ErrClosed)
	case <-ctx.Done():
		return fmt.Errorf("peer: break %q: %w", name, ctx.Err())
	}
	select {
	case err := <-errc:
		if err != nil && !errors.Is(err, mutex.ErrNotHeld) {
			return fmt.Errorf("peer: %w", err)
		}
		return err
	case <-p.done:
		return fmt.Errorf("peer: break %q: %w", name, ErrClosed)
	case <-ctx.Done():
		return fmt.Errorf("peer: break %q: %w", name, ctx.Err())
	}
}
