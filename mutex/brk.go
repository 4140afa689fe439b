package mutex

import (
	"errors"
	"fmt"
	"time"
)

// An operator's break (issue 14): `dlockfs break NAME` on a voter asks the
// majority to evict the current holder of lock NAME at once. The rules,
// checked by the simulation (fsim_test.go, "break"):
//
//   - The voter asks every other voter whether it holds NAME (MsgBreak with
//     Target empty); the holder answers with its token, as it answers a
//     probe. If none says so within the answer-timeout (or all say no),
//     the break is reported as finding no holder, and changes nothing.
//   - On the holder's answer the voter suspects the holder's session at
//     once, as if MaxHold had passed, and tells every voter (MsgBreak with
//     Target set), the holder included. A voter so told suspects it at
//     once too, without evidence of its own: the operator's word is the
//     evidence. Every peer reports the break, with the voter that asked.
//   - The rest is the existing eviction: a suspect gets no lease grant,
//     and is declared evicted once nobody granted it for the lock-delay,
//     so its lease has lapsed, and its hold is revoked, before a majority
//     counts it as having answered and anyone else enters. Safety does not
//     rest on the break: it only makes voters suspect a member sooner.
//   - A broken member stays suspected until that session is evicted (or
//     it restarts, or starts a new session), or for the lock-delay plus
//     four answer-timeouts if no majority follows; then the usual rules
//     end the suspicion once it answers.
//
// A member may claim a break it was never asked for: a voter cannot tell
// an operator's word from a member's. That is the command's power: any
// voter's operator can evict any holder (by way of the lock-delay).

// ErrNotHeld: a break found no holder of its lock.
var ErrNotHeld = errors.New("nobody holds the lock")

// ErrHeldHere: a break of a lock held on this very peer (release it).
var ErrHeldHere = errors.New("held on this peer: release it there")

// broken is an operator's break of a suspect's hold.
type broken struct {
	by   string        // the voter whose operator asked
	lock string        // the lock broken
	at   time.Duration // when we suspected it so
	sess uint64        // its session then
	inc  uint64        // its incarnation then
}

// breakQuery is a break of ours, looking for the holder.
type breakQuery struct {
	ts      uint64          // its ReqTime
	since   time.Duration   // when asked
	waiting map[string]bool // the voters yet to answer
}

// Break asks, on an operator's word, that the current holder of lock name
// be evicted at once (majority mode, on a voter with an answer-timeout).
// The holder is looked for by asking the voters; Ready.Faults reports
// FaultBreak naming it, or FaultBreakNone if nobody holds name. A hold of
// name on this peer itself is an error (ErrHeldHere): release it instead.
func (c *Core) Break(name string) error {
	q, f := c.q, c.f
	if err := ValidLockName(name); err != nil {
		return fmt.Errorf("mutex: break %q: %w", name, err)
	}
	switch {
	case q == nil:
		return fmt.Errorf("mutex: break %q: only in majority mode", name)
	case !q.voter:
		return fmt.Errorf("mutex: break %q: this peer is not a voter", name)
	case f.timeout == 0:
		return fmt.Errorf("mutex: break %q: needs an answer-timeout", name)
	}
	if l := c.locks[name]; l != nil && l.phase == Holding {
		return fmt.Errorf("mutex: break %q: %w", name, ErrHeldHere)
	}
	ts := uint64(c.clock.Increment())
	bq := &breakQuery{ts: ts, since: f.now, waiting: map[string]bool{}}
	for _, v := range q.voters {
		if _, ok := c.members[v]; ok && v != c.cfg.Name {
			bq.waiting[v] = true
			c.send(Message{Type: MsgBreak, To: v, Lock: name, ReqTime: ts})
		}
	}
	f.breaks[name] = bq
	if len(bq.waiting) == 0 {
		c.breakNone(name)
	}
	return nil
}

func (c *Core) breakNone(name string) {
	delete(c.f.breaks, name)
	c.report(FaultReport{Kind: FaultBreakNone, Peer: c.cfg.Name, Lock: name})
}

// scanBreaks ends our breaks unanswered for the answer-timeout.
func (c *Core) scanBreaks() {
	f := c.f
	for _, name := range keysSorted(f.breaks) {
		if f.now-f.breaks[name].since >= f.timeout {
			c.breakNone(name)
		}
	}
}

// onBreak handles MsgBreak.
func (c *Core) onBreak(m Message) error {
	q, f := c.q, c.f
	if ValidLockName(m.Lock) != nil || m.ReqTime == 0 || q == nil {
		return fmt.Errorf("%w: %v", ErrMalformed, m)
	}
	switch {
	case m.Try: // an answer to our query
		bq := f.breaks[m.Lock]
		if bq == nil || bq.ts != m.ReqTime || !bq.waiting[m.From] {
			return nil
		}
		delete(bq.waiting, m.From)
		if m.TargetInc == 1 {
			delete(f.breaks, m.Lock)
			c.breakHolder(m.From, m.Lock, m.Reserve, c.cfg.Name)
			return nil
		}
		if len(bq.waiting) == 0 {
			c.breakNone(m.Lock)
		}
	case m.Target == "": // a query: do we hold it?
		ans := Message{Type: MsgBreak, To: m.From, Try: true, Lock: m.Lock, ReqTime: m.ReqTime}
		if l := c.locks[m.Lock]; l != nil && l.phase == Holding {
			ans.TargetInc, ans.Reserve = 1, l.token
		}
		c.send(ans)
	case m.Target == c.cfg.Name:
		c.report(FaultReport{Kind: FaultBreak, Peer: m.Target, Lock: m.Lock, ReqTime: m.Reserve, Why: m.From})
	default:
		c.breakHolder(m.Target, m.Lock, m.Reserve, m.From)
	}
	return nil
}

// breakHolder suspects voter p at once, its hold (token) of lock broken on
// the word of voter by's operator; if by is us, it tells the voters.
func (c *Core) breakHolder(p, lock string, token uint64, by string) {
	q, f := c.q, c.f
	c.report(FaultReport{Kind: FaultBreak, Peer: p, Lock: lock, ReqTime: token, Why: by})
	if by == c.cfg.Name {
		for _, v := range q.voters {
			if _, ok := c.members[v]; ok && v != c.cfg.Name {
				c.send(Message{Type: MsgBreak, To: v, Target: p, Lock: lock, ReqTime: uint64(c.clock.Time()), Reserve: token})
			}
		}
	}
	if !q.voter || !q.isVoter(p) || !c.faultTarget(p) {
		return
	}
	inc, ok := c.members[p]
	if !ok {
		return // silent: eviction by silence covers it
	}
	b := &broken{by: by, lock: lock, at: f.now, sess: q.peer(p).session, inc: inc}
	if sus := f.sus[p]; sus != nil {
		sus.broken = b
	} else {
		f.sus[p] = &suspicion{probe: true, lock: lock, since: f.now, inc: inc, broken: b}
		f.suspicions++
	}
	f.broken++
	q.nextCheck = q.now
	if f.planted(f.bugBreakGrants) {
		// Wrong: as if it were evicted already, its hold still on.
		for _, l := range c.sortedLocks() {
			delete(l.awaiting, p)
			delete(l.perm, p)
			c.maybeEnter(l)
		}
	}
}

// breakStands reports whether suspect p is held suspected by a break: until
// the session broken is evicted, or it starts afresh, or (no majority
// following) for the lock-delay plus four answer-timeouts.
func (c *Core) breakStands(p string, sus *suspicion) bool {
	b, q, f := sus.broken, c.q, c.f
	if b == nil || q == nil {
		return false
	}
	qp := q.peers[p]
	inc, member := c.members[p]
	done := !member || inc != b.inc || qp == nil || qp.session > b.sess ||
		(qp.evicted && qp.evictedAt >= b.sess) || f.now-b.at >= f.delay+4*f.timeout
	if done {
		sus.broken = nil
	}
	return !done
}
