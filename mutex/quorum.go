package mutex

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/serf/serf"
)

// Majority mode (Config.Quorum == QuorumMajority). The rules, each enforced
// in this file and checked by the simulation (sim_test.go):
//
//   - Voters. A versioned voter set, the same on every peer once messages
//     flow: a message whose Config differs from ours is not acted on; the
//     side with the older set is sent the newer one and adopts it. The set
//     changes one voter at a time, by the holder of the internal lock
//     cfgLock, and a change counts once a majority of the old set has
//     acknowledged it (Raft's single-server change), so any majority of the
//     old set and any majority of the new one intersect. A version is the
//     fencing token of the hold that made it, so versions strictly rise.
//   - Leases. A voter asks every voter for its lease every Lease/4; a lease
//     round granted by a majority (itself included) is valid until the
//     round's start plus Lease, on its own clock. It is granted locks only
//     while its lease is valid, and when the lease lapses it revokes its
//     holds, withdraws its requests, answers what it deferred, drops kept
//     permissions and starts a new session: as if it had restarted.
//   - Eviction. A voter that has heard nothing from a voter for a Lease (or
//     that Serf reports down) and has not granted it a lease for LockDelay
//     stops granting that session for good and declares it evicted to all.
//     A voter declared by a majority counts as having answered every
//     request. Any majority that granted it a later lease would include a
//     declarer, which no longer grants: so its lease has surely expired.
//   - Tokens. A lease round reserves tokens: it carries Reserve, the
//     highest token the asker may issue until its next round, and granters
//     record it. An eviction declaration carries the recorded Reserve, and
//     whoever counts the evicted peer as answered first witnesses the
//     highest one, so its own tokens exceed every token the evicted peer
//     could have handed out. A restarted peer learns its earlier life's
//     Reserve from its first lease grants before it answers any request.
//
// Time is an input: [Core.Tick] sets now, and nothing here reads a clock.

// cfgLock is the internal lock whose holder changes the voter set. It is not
// a valid lock name, so no user lock can collide with it.
const cfgLock = "\x00voters"

// cfgOpenerBase numbers the core's own openers of cfgLock, far above any
// caller's ids.
const cfgOpenerBase OpenerID = 1 << 62

// reserveSpan is how many tokens a lease round reserves.
const reserveSpan = 1 << 20

// maxRounds bounds the lease rounds awaiting grants.
const maxRounds = 8

// ErrNotVoter: the message needs a voter and its sender is not one.
var ErrNotVoter = errors.New("sender is not a voter")

// ErrConfig: the message was sent under another voter set version; it is
// answered with the newer set, not acted on.
var ErrConfig = errors.New("voter set version differs")

// ErrNotEvicted: Forget of a voter that a majority has not declared evicted
// (it may be alive).
var ErrNotEvicted = errors.New("voter is not evicted")

// ErrNoMajority: the operation needs a majority of voters that this peer
// cannot reach.
var ErrNoMajority = errors.New("no majority of voters")

type evVote struct {
	session, inc, reserve uint64
}

// qpeer is what majority mode keeps about one voter (self excluded).
type qpeer struct {
	inc       uint64        // the incarnation the rest refers to (0: unknown)
	lastHeard time.Duration // last message received from it
	lastGrant time.Duration // last lease grant we gave it (granted)
	granted   bool
	down      bool   // Serf reports it failed or gone
	session   uint64 // highest session seen from it
	declared  bool   // we declared it evicted ...
	refused   uint64 // ... and grant no session up to this one
	resv      uint64 // highest Reserve it sent (this incarnation)
	resvPrev  uint64 // highest Reserve of its earlier incarnations
	evicted   bool   // a majority declared session evictedAt
	evictedAt uint64
	votes     map[string]evVote // declarer -> its declaration
	asked     time.Duration     // last time it asked to be a voter (asking)
	asking    bool
	// refuseFirst: we declared it before we knew its incarnation; the
	// first session we hear of is refused too.
	refuseFirst bool
	configSent  uint64 // the voter set version last pushed to it
}

type leaseRound struct {
	seq     uint64
	sentAt  time.Duration
	reserve uint64
	grants  map[string]bool
	// evicted is what this peer counted as evicted when it asked
	// (voter -> session): every granter confirmed it still refuses them.
	evicted map[string]uint64
}

type change struct {
	add  bool
	name string
}

type cfgOp struct {
	id         OpenerID
	ch         change
	committing bool
	ver        uint64
	old        []string
	acks       map[string]bool
}

// quorum is the majority-mode state of a core.
type quorum struct {
	lease, delay time.Duration
	now          time.Duration
	started      bool
	bootAt       time.Duration
	nextCheck    time.Duration

	ver    uint64
	voters []string // sorted
	voter  bool     // self is in voters

	session    uint64
	leased     bool
	leaseUntil time.Duration
	ceiling    uint64
	leaseEv    map[string]uint64 // the evicted set the valid lease confirmed
	everLeased bool              // until then, requests are deferred (see onRequest)
	seq        uint64
	rounds     []*leaseRound
	nextRenew  time.Duration

	peers   map[string]*qpeer
	changes []change
	op      *cfgOp
	nextOp  OpenerID
	left    bool // our own removal was committed

	lapses, revocations, evictions uint64
	revokedHeld                    int // locks held by a revoked holder, in their grace

	hsFloor uint64 // the ClockFloor last output in a HardState
	hsDirty bool

	// Faults injected by tests only; the simulation must catch each.
	bugNoDelay       bool // declare a silent voter evicted at once
	bugGraceOnWake   bool // a revoked hold's grace runs from when it is noticed
	bugMinorityLease bool // a lease granted by anyone counts
	bugForgetBack    bool // Forget's change commits though the voter is back, not evicted here
	bugUnevictOwn    bool // unevict clears our own vote too
	bugHits
}

func newQuorum(cfg Config) *quorum {
	return &quorum{lease: cfg.Lease, delay: cfg.LockDelay, peers: map[string]*qpeer{}}
}

// hardStateSlack is how far above the highest reservation the stored clock
// floor is put, so that it is rewritten only rarely.
const hardStateSlack = 1 << 26

// restore applies a HardState written by an earlier life.
func (c *Core) restore(hs *HardState) {
	q := c.q
	c.clock.Witness(serf.LamportTime(hs.ClockFloor))
	q.hsFloor = hs.ClockFloor
	if hs.Config != 0 && validVoters(hs.Voters) {
		c.f.accepted = true // our clock is the cluster's (faults.go)
		c.clock.Witness(serf.LamportTime(hs.Config))
		q.ver, q.voters = hs.Config, slices.Clone(hs.Voters)
		q.voter = q.isVoter(c.cfg.Name)
	}
}

// raiseFloor makes sure the stored clock floor is above token t before a
// message that lets t be issued goes out.
func (c *Core) raiseFloor(t uint64) {
	q := c.q
	if t >= q.hsFloor {
		q.hsFloor = t + hardStateSlack
		q.hsDirty = true
	}
}

// hardState returns the HardState to write, if any.
func (c *Core) hardState() *HardState {
	q := c.q
	if q == nil || !q.hsDirty {
		return nil
	}
	q.hsDirty = false
	return &HardState{Config: q.ver, Voters: slices.Clone(q.voters), ClockFloor: q.hsFloor}
}

func (q *quorum) peer(name string) *qpeer {
	p := q.peers[name]
	if p == nil {
		p = &qpeer{lastHeard: q.now, votes: map[string]evVote{}}
		q.peers[name] = p
	}
	return p
}

func (q *quorum) isVoter(name string) bool {
	_, ok := slices.BinarySearch(q.voters, name)
	return ok
}

func majority(n int) int { return n/2 + 1 }

// Bootstrap makes this peer the only voter of a new cluster (majority
// mode; a peer that joins an existing cluster learns the voter set from
// it instead). It does nothing if a voter set is known.
func (c *Core) Bootstrap() {
	q := c.q
	if q == nil || q.ver != 0 {
		return
	}
	c.adopt(uint64(c.clock.Increment()), []string{c.cfg.Name})
}

// Tick tells the core the time on this peer's monotonic clock. The caller
// ticks before every other input and at least every Lease/8; in majority
// mode leases are renewed, lapse and are revoked, and silent voters are
// declared evicted, all on ticks. Time must not go backwards.
func (c *Core) Tick(now time.Duration) {
	c.tickFaults(now)
	q := c.q
	if q == nil {
		return
	}
	if !q.started {
		q.started, q.bootAt = true, now
		for _, p := range q.peers {
			p.lastHeard = now
		}
	}
	if now < q.now {
		return
	}
	q.now = now
	if now < q.nextCheck {
		return
	}
	c.check()
}

// check runs the timers.
func (c *Core) check() {
	q := c.q
	q.nextCheck = q.now + q.lease/8
	if q.leased && q.now >= q.leaseUntil {
		c.lapse()
	}
	if q.revokedHeld > 0 {
		for _, l := range c.sortedLocks() {
			if l.revoked && q.now >= l.revokedAt+q.lease/4 {
				c.endTurn(l) // the grace is over: the opener is forgotten
			}
		}
	}
	switch {
	case q.voter && q.now >= q.nextRenew:
		c.renew()
	case !q.voter && q.ver != 0 && q.now >= q.nextRenew:
		// A member that is not a voter asks to be one until it is
		// (a hello marked Try); one that is shutting down does not.
		q.nextRenew = q.now + q.lease/4
		for _, v := range q.voters {
			if _, ok := c.members[v]; ok {
				c.send(Message{Type: MsgHello, To: v, Try: !c.closed})
			}
		}
	}
	if q.voter {
		for _, v := range q.voters {
			if v != c.cfg.Name {
				c.maybeDeclare(v)
			}
		}
	}
	if q.voter && c.leaseValid() && q.op == nil {
		for _, n := range c.names {
			if !q.isVoter(n) && c.heard(n) {
				c.proposeChange(change{add: true, name: n})
			}
		}
	}
	c.maybeChange()
	if q.leased && q.leaseUntil < q.nextCheck {
		q.nextCheck = q.leaseUntil
	}
	if q.ver != 0 && q.nextRenew < q.nextCheck {
		q.nextCheck = q.nextRenew
	}
}

// leaseValid reports whether this peer may hold locks now.
func (c *Core) leaseValid() bool {
	q := c.q
	return q == nil || (q.voter && q.leased && q.now < q.leaseUntil)
}

// renew starts a lease round.
func (c *Core) renew() {
	q := c.q
	q.nextRenew = q.now + q.lease/4
	q.seq++
	r := &leaseRound{seq: q.seq, sentAt: q.now, reserve: uint64(c.clock.Time()) + reserveSpan,
		grants: map[string]bool{c.cfg.Name: true}, evicted: map[string]uint64{}}
	c.raiseFloor(r.reserve)
	var ev []string // "session:name", for the granters to confirm
	for _, v := range q.voters {
		if p := q.peers[v]; p != nil && p.evicted && v != c.cfg.Name {
			r.evicted[v] = p.evictedAt
			ev = append(ev, strconv.FormatUint(p.evictedAt, 10)+":"+v)
		}
	}
	if len(q.rounds) == maxRounds {
		q.rounds = slices.Delete(q.rounds, 0, 1)
	}
	q.rounds = append(q.rounds, r)
	for _, v := range q.voters {
		if v == c.cfg.Name {
			continue
		}
		if _, ok := c.members[v]; ok {
			vev := ev
			if c.evictedSuspect(v) {
				// Not told of its eviction again (faults.go).
				vev = slices.DeleteFunc(slices.Clone(ev), func(e string) bool { return strings.HasSuffix(e, ":"+v) })
			}
			c.send(Message{Type: MsgLease, To: v, ReqTime: r.seq, Reserve: r.reserve, Voters: vev})
		}
		if op := q.op; op != nil && op.committing && !op.acks[v] {
			c.sendConfig(v) // lost, perhaps: again
		}
		if q.seq%4 == 0 {
			c.resendQuorum(v) // once a lease: declarations may be lost
		}
	}
	c.checkRound(r)
}

func (c *Core) checkRound(r *leaseRound) {
	q := c.q
	n := 0
	for _, v := range q.voters {
		if r.grants[v] {
			n++
		}
	}
	if r.sentAt+q.lease <= q.now {
		return
	}
	if n < majority(len(q.voters)) && !q.planted(q.bugMinorityLease) {
		return
	}
	if !q.leased || r.sentAt+q.lease > q.leaseUntil {
		q.leaseUntil = r.sentAt + q.lease
	}
	q.ceiling = max(q.ceiling, r.reserve)
	q.leaseEv = r.evicted
	wasLeased := q.leased
	q.leased = true
	c.reportBack()
	if q.leaseUntil < q.nextCheck {
		q.nextCheck = q.leaseUntil
	}
	if !q.everLeased {
		q.everLeased = true
		for _, l := range c.sortedLocks() {
			if l.phase == Idle {
				c.answerDeferred(l)
				c.forget(l)
			}
		}
	}
	for _, l := range c.sortedLocks() {
		switch {
		case l.phase == Idle && len(l.queue) > 0:
			c.startRequest(l)
		case l.phase == Requesting:
			c.maybeEnter(l)
		}
	}
	if !wasLeased {
		c.maybeChange()
	}
}

// lapse ends this peer's lease: everything it held or asked for is given
// up, as if it had restarted, and a new session begins.
func (c *Core) lapse() {
	q := c.q
	q.leased = false
	q.lapses++
	q.session++
	q.rounds = q.rounds[:0]
	c.reset()
	if q.voter {
		c.renew()
	}
}

// reset gives up every hold, request and kept permission; locally waiting
// openers stay queued (they are requested again once a lease is held).
func (c *Core) reset() {
	q := c.q
	for _, l := range c.sortedLocks() {
		if l.name == cfgLock && q.op != nil && q.op.committing && l.phase == Holding {
			continue // a change in progress keeps its hold until acknowledged
		}
		switch l.phase {
		case Holding:
			op := l.queue[0].op
			if l.name != cfgLock {
				// (Every reader of a shared group is revoked.)
				// The holder is told, but its process may run on for a
				// moment: the lock stays held here, its deferred
				// requests unanswered, until it releases or a grace
				// passes (Chubby's lock-delay). A peer cut off gives
				// its holder as long: the others evict it only a
				// lock-delay after their last grant.
				// The grace runs from the lease's end: a daemon that was
				// paused past it finds it over (soak seed 1001397: the
				// others had evicted it and granted the lock).
				clear(l.perm)
				if !l.revoked {
					l.revoked, l.revokedAt = true, min(q.now, q.leaseUntil)
					if q.now > q.leaseUntil && q.planted(q.bugGraceOnWake) {
						l.revokedAt = q.now
					}
					q.revokedHeld++
					q.revocations++
					for _, w := range l.queue[:l.group] {
						c.out.Revocations = append(c.out.Revocations, Revocation{Opener: w.op, Lock: l.name, Token: l.token})
					}
				}
				continue
			}
			q.op = nil
			delete(c.openers, op)
			l.queue = l.queue[1:]
		case Requesting:
			c.withdraw(l)
			if l.queue[0].try {
				op := l.queue[0].op
				delete(c.openers, op)
				l.queue = l.queue[1:]
				c.refuse(op, l.name)
			} else if l.name == cfgLock {
				delete(c.openers, l.queue[0].op)
				l.queue = l.queue[1:]
				q.op = nil
			}
		}
		l.phase, l.group, l.shared = Idle, 0, false
		clear(l.awaiting)
		clear(l.perm)
		c.answerDeferred(l)
		c.forget(l)
	}
}

// answerDeferred replies to every request l defers, but those of an
// evicted suspect (holdsBack).
func (c *Core) answerDeferred(l *lockState) {
	for _, p := range c.names {
		if in := l.in[p]; in != nil && in.state == inDeferred && !c.holdsBack(p) {
			in.state = inReplied
			delete(l.perm, p)
			c.answer(MsgReply, p, l.name, in.ts)
		}
	}
}

// raPeers returns the peers a request must be answered by: in majority
// mode every voter that is not evicted, reachable or not.
func (c *Core) raPeers() []string {
	q := c.q
	if q == nil {
		return c.names
	}
	ps := make([]string, 0, len(q.voters))
	for _, v := range q.voters {
		if v == c.cfg.Name {
			continue
		}
		if p := q.peers[v]; p != nil && p.evicted {
			continue
		}
		ps = append(ps, v)
	}
	return ps
}

// canEnter is majority mode's condition for a grant, beyond every answer:
// a valid lease, a token within the reserved ones, and a majority of voters
// not evicted.
func (c *Core) canEnter() bool {
	q := c.q
	if q == nil {
		return true
	}
	if !c.leaseValid() {
		return false
	}
	if uint64(c.clock.Time())+1 > q.ceiling {
		if len(q.rounds) == 0 || q.rounds[len(q.rounds)-1].sentAt != q.now {
			c.renew() // reserve more tokens; the round's grant re-tries
		}
		return false
	}
	n := 0
	for _, v := range q.voters {
		p := q.peers[v]
		if v == c.cfg.Name || p == nil || !p.evicted {
			n++
			continue
		}
		if s, ok := q.leaseEv[v]; !ok || s < p.evictedAt {
			// Counted as answered, but our lease's granters have not
			// confirmed they refuse it: ask them first.
			if len(q.rounds) == 0 || q.rounds[len(q.rounds)-1].sentAt != q.now {
				c.renew()
			}
			return false
		}
	}
	return n >= majority(len(q.voters))
}

// parseEvicted reads a "session:name" entry of a MsgLease.
func parseEvicted(e string) (uint64, string, bool) {
	i := strings.IndexByte(e, ':')
	if i <= 0 {
		return 0, "", false
	}
	s, err := strconv.ParseUint(e[:i], 10, 64)
	return s, e[i+1:], err == nil && i+1 < len(e)
}

// declaredSelf handles news that voters count this peer's session sess as
// evicted: it lapses, and starts afresh in a later session.
func (c *Core) declaredSelf(sess uint64) {
	q := c.q
	if sess < q.session || c.leaseValid() {
		// A valid lease came from a majority that did not declare
		// us: if a majority does, our renewals fail and the lease
		// lapses on its own. Revoking now would only revoke holds
		// the cluster still protects (as every heal would).
		return
	}
	if q.leased {
		c.lapse()
	}
	if q.session <= sess {
		q.session = sess + 1
		q.rounds = q.rounds[:0]
		q.nextRenew = q.now
	}
}

// quorumFilter screens a message in majority mode before the algorithm
// sees it. handled reports that the message needs nothing more.
func (c *Core) quorumFilter(m Message) (handled bool, err error) {
	q := c.q
	switch m.Type {
	case MsgConfig:
		return true, c.onConfig(m)
	case MsgConfigAck:
		return true, c.onConfigAck(m)
	}
	if m.Config != q.ver {
		if m.Config < q.ver {
			c.sendConfig(m.From)
		} else {
			// Ours is older: our hello tells the sender to send its set.
			c.send(Message{Type: MsgHello, To: m.From})
		}
		return true, fmt.Errorf("%w: ours %d: %v", ErrConfig, q.ver, m)
	}
	if !q.isVoter(m.From) {
		np := q.peer(m.From)
		np.lastHeard = q.now
		if m.Type == MsgHello && m.Try {
			np.asked, np.asking = q.now, true
			if q.voter && c.leaseValid() {
				c.proposeChange(change{add: true, name: m.From})
			}
		}
		if m.Type == MsgHello {
			return false, nil
		}
		return true, fmt.Errorf("%w: %v", ErrNotVoter, m)
	}
	p := q.peer(m.From)
	if p.evicted && m.Session <= p.evictedAt {
		if m.Type == MsgProbe && m.Try {
			c.probeAcked(m) // it answers again: it may come back (faults.go)
		}
		return true, fmt.Errorf("%w: from an evicted session: %v", ErrStale, m)
	}
	p.lastHeard = q.now
	if p.refuseFirst {
		p.refuseFirst = false
		p.refused = max(p.refused, m.Session)
		if own, ok := p.votes[c.cfg.Name]; ok {
			own.session = p.refused // the session we now refuse
			p.votes[c.cfg.Name] = own
		}
	}
	if m.Session > p.session {
		p.session = m.Session
		if p.evicted && !c.suspected(m.From) {
			c.unevict(m.From, p)
		}
	}
	switch m.Type {
	case MsgLease:
		return true, c.onLease(m, p)
	case MsgLeaseGrant:
		return true, c.onLeaseGrant(m)
	case MsgEvicted:
		return true, c.onEvicted(m)
	case MsgRequest:
		if c.evictedSuspect(m.From) {
			// Evicted for refusing to answer, and back in a later
			// session: counted as answered, so it gets no reply
			// until it answers again (faults.go).
			return true, c.deferFresh(m)
		}
		if !q.everLeased {
			// A restarted peer has not learnt its earlier life's
			// tokens yet: it answers once it holds a lease.
			return true, c.deferFresh(m)
		}
	}
	return false, nil
}

func (c *Core) onLease(m Message, p *qpeer) error {
	p.resv = max(p.resv, m.Reserve)
	if !c.q.voter {
		return fmt.Errorf("%w: lease asked of a non-voter: %v", ErrUnexpected, m)
	}
	if c.evictedSuspect(m.From) {
		return nil // no grant, and no news (faults.go)
	}
	if p.declared && m.Session <= p.refused {
		// Tell it: it starts afresh in a later session.
		c.send(Message{Type: MsgLeaseGrant, To: m.From, ReqTime: m.ReqTime, TargetInc: m.Session, Try: true,
			Target: m.From, Reserve: p.refused})
		return fmt.Errorf("%w: lease of an evicted session: %v", ErrStale, m)
	}
	// The asker counts these voters as having answered: grant only if
	// we still refuse them too, so that none of them can hold a lease
	// (from a majority, which includes us or another granter) while the
	// asker holds one. Otherwise tell it the session we know.
	for _, e := range m.Voters {
		sess, v, ok := parseEvicted(e)
		if !ok {
			return fmt.Errorf("%w: bad evicted entry %q: %v", ErrMalformed, e, m)
		}
		if v == c.cfg.Name {
			c.declaredSelf(sess)
			c.send(Message{Type: MsgLeaseGrant, To: m.From, ReqTime: m.ReqTime, TargetInc: m.Session, Try: true,
				Target: v, Reserve: c.q.session})
			return nil
		}
		if !c.q.isVoter(v) {
			continue
		}
		vp := c.q.peer(v)
		// A voter we suspect gets no grant from us in any session
		// (faults.go): we refuse its later sessions too.
		refusing := vp.declared && vp.refused >= sess && (vp.refused >= vp.session ||
			(c.evictedSuspect(v) && (!vp.granted || c.q.now-vp.lastGrant >= c.q.delay)))
		if !refusing {
			c.send(Message{Type: MsgLeaseGrant, To: m.From, ReqTime: m.ReqTime, TargetInc: m.Session, Try: true,
				Target: v, Reserve: vp.session})
			return nil
		}
	}
	if c.withholdGrant(m.From) {
		return nil // suspected of refusing to answer (faults.go)
	}
	p.granted, p.lastGrant = true, c.q.now
	c.raiseFloor(p.resv)
	c.send(Message{Type: MsgLeaseGrant, To: m.From, ReqTime: m.ReqTime, TargetInc: m.Session, Reserve: p.resvPrev})
	return nil
}

func (c *Core) onLeaseGrant(m Message) error {
	q := c.q
	if m.Try {
		// Refused. Target is us: our session Reserve was declared
		// evicted. Otherwise the granter does not (or no longer)
		// refuse voter Target, which we count as evicted; Reserve is
		// the session it knows of it; a later one is a new life: ask
		// it again.
		if m.Target == c.cfg.Name {
			c.reportEvicted(m.From, m.Reserve)
			c.declaredSelf(m.Reserve)
			return nil
		}
		if m.Target != "" && q.isVoter(m.Target) {
			p := q.peer(m.Target)
			p.session = max(p.session, m.Reserve)
			if p.evicted && m.Reserve >= p.evictedAt && !c.suspected(m.Target) {
				// Counting it as answered cannot be confirmed:
				// wait for its answers again (always safe).
				c.unevict(m.Target, p)
			}
		}
		return nil
	}
	c.clock.Witness(serf.LamportTime(m.Reserve))
	if m.TargetInc != q.session {
		return fmt.Errorf("%w: grant for session %d: %v", ErrStale, m.TargetInc, m)
	}
	for _, r := range q.rounds {
		if r.seq == m.ReqTime {
			if r.grants[m.From] {
				return fmt.Errorf("%w: %v", ErrDuplicate, m)
			}
			r.grants[m.From] = true
			c.checkRound(r)
			return nil
		}
	}
	return fmt.Errorf("%w: grant for no round in flight: %v", ErrUnexpected, m)
}

// deferFresh defers (or refuses, for a try-lock) a request that arrives
// before this peer's first lease.
func (c *Core) deferFresh(m Message) error {
	if ValidLockName(m.Lock) != nil && m.Lock != cfgLock {
		return fmt.Errorf("%w: %v", ErrMalformed, m)
	}
	l := c.lock(m.Lock)
	if in := l.in[m.From]; in != nil && m.ReqTime <= in.ts {
		return c.onRequest(m) // a copy or a stale one: answered as usual
	}
	in := &inbound{ts: m.ReqTime, state: inDeferred}
	if m.Try {
		in.state = inBusy
		c.answer(MsgBusy, m.From, l.name, m.ReqTime)
	}
	l.in[m.From] = in
	c.forget(l)
	return nil
}

// incMatch reports whether a declaration about incarnation inc of voter v
// applies to the one we know: the same, or either side knows none.
func (c *Core) incMatch(v string, p *qpeer, inc uint64) bool {
	return inc == p.inc || inc == 0 || p.inc == 0
}

// evictedSuspect reports whether voter v is evicted here while we suspect
// it of refusing to answer (faults.go). Such a voter is counted as having
// answered every request of ours, and until it answers again it gets from
// us no lease grant, no reply to its requests (they stay deferred, even as
// we release: holdsBack), no news of its eviction, and its later sessions
// are refused as its evicted one was.
func (c *Core) evictedSuspect(v string) bool {
	p := c.q.peers[v]
	return p != nil && p.evicted && c.suspected(v)
}

// maybeDeclare declares voter v evicted if it has been silent (or down)
// for a Lease and we granted it nothing for LockDelay.
func (c *Core) maybeDeclare(v string) {
	q := c.q
	p := q.peer(v)
	if p.declared && p.refused >= p.session {
		return
	}
	since := q.bootAt
	if p.granted {
		since = max(since, p.lastGrant)
	}
	if c.evictedSuspect(v) {
		if q.now-since < q.delay && !q.planted(q.bugNoDelay) {
			return // we granted it lately: its lease may still run
		}
		// Back in a later session without answering: it stays
		// evicted here, and gets neither grant nor reply from us
		// (faults.go). The other voters are told we refuse this
		// session too, so that they count it; it is not told,
		// which would only start it on yet another session.
		p.declared, p.refused = true, p.session
		p.votes[c.cfg.Name] = evVote{session: p.session, inc: p.inc, reserve: p.resv}
		for _, w := range q.voters {
			if w != c.cfg.Name && w != v {
				c.sendDeclaration(w, v, p)
			}
		}
		c.checkEvicted(v, p)
		return
	}
	if !p.down && q.now-p.lastHeard < q.lease && !c.suspected(v) {
		return
	}
	if q.now-since < q.delay && !q.planted(q.bugNoDelay) {
		return
	}
	p.declared, p.refused = true, p.session
	p.votes[c.cfg.Name] = evVote{session: p.session, inc: p.inc, reserve: p.resv}
	for _, w := range q.voters {
		if w != c.cfg.Name {
			c.sendDeclaration(w, v, p)
		}
	}
	c.checkEvicted(v, p)
}

func (c *Core) sendDeclaration(to, v string, p *qpeer) {
	if _, ok := c.members[to]; ok {
		c.send(Message{Type: MsgEvicted, To: to, Target: v, TargetInc: p.inc, Reserve: p.resv, ReqTime: p.session})
	}
}

// resendQuorum sends peer to, whose channel was (re)opened, what it may
// have lost of majority mode's one-shot messages: our declarations, and
// our voter set.
func (c *Core) resendQuorum(to string) {
	q := c.q
	if q == nil || !q.voter || !q.isVoter(to) {
		return
	}
	for _, v := range q.voters {
		if p := q.peers[v]; p != nil && v != c.cfg.Name && p.declared && p.refused >= p.session &&
			(v != to || !c.evictedSuspect(v)) {
			c.sendDeclaration(to, v, p)
		}
	}
}

// onEvicted records a voter's declaration. ReqTime carries the declared
// session (Session is the sender's own).
func (c *Core) onEvicted(m Message) error {
	q := c.q
	if m.Target == c.cfg.Name {
		if m.TargetInc == c.cfg.Incarnation || m.TargetInc == 0 {
			c.reportEvicted(m.From, m.ReqTime)
			// We were declared evicted: whatever we think of our
			// lease, a majority may soon count us as having
			// answered. Start afresh in a session above the one
			// declared, which the declarers grant again.
			c.declaredSelf(m.ReqTime)
		}
		return nil
	}
	if !q.isVoter(m.Target) {
		return fmt.Errorf("%w: eviction of a non-voter: %v", ErrUnexpected, m)
	}
	p := q.peer(m.Target)
	if p.inc != 0 && m.TargetInc > p.inc {
		// A later life than we know of (incarnations rise across
		// restarts): ours is gone.
		p.resvPrev = max(p.resvPrev, p.resv)
		*p = qpeer{inc: m.TargetInc, lastHeard: p.lastHeard, down: true, resvPrev: p.resvPrev, votes: p.votes}
		clear(p.votes)
	}
	if !c.incMatch(m.Target, p, m.TargetInc) {
		return fmt.Errorf("%w: eviction of another incarnation: %v", ErrStale, m)
	}
	if old, ok := p.votes[m.From]; ok && old.session > m.ReqTime {
		return fmt.Errorf("%w: %v", ErrStale, m)
	}
	p.votes[m.From] = evVote{session: m.ReqTime, inc: m.TargetInc, reserve: m.Reserve}
	if m.ReqTime > p.session && c.incMatch(m.Target, p, m.TargetInc) {
		// A later session than we heard of: our own declaration, if
		// any, must cover it too.
		p.session = m.ReqTime
		q.nextCheck = q.now
	}
	c.checkEvicted(m.Target, p)
	return nil
}

// checkEvicted evicts voter v once a majority has declared its current
// session: it then counts as having answered every request.
func (c *Core) checkEvicted(v string, p *qpeer) {
	q := c.q
	if p.evicted && p.evictedAt >= p.session {
		return
	}
	n := 0
	var resv uint64
	for _, w := range q.voters {
		if vote, ok := p.votes[w]; ok && vote.session >= p.session && c.incMatch(v, p, vote.inc) {
			n++
		}
	}
	at := p.session
	if n < majority(len(q.voters)) {
		return
	}
	for _, vote := range p.votes {
		resv = max(resv, vote.reserve)
	}
	resv = max(resv, p.resv, p.resvPrev)
	c.clock.Witness(serf.LamportTime(resv))
	p.evicted, p.evictedAt = true, at
	q.evictions++
	for _, l := range c.sortedLocks() {
		delete(l.awaiting, v)
		delete(l.perm, v)
		delete(l.in, v)
		c.maybeEnter(l)
		c.forget(l)
	}
}

// unevict takes back an evicted voter heard from in a later session: it
// has started afresh, and is asked again.
func (c *Core) unevict(v string, p *qpeer) {
	p.evicted = false
	// The others' votes are asked for again; ours stands while we still
	// refuse its session: maybeDeclare does not declare again what we
	// declared, so without it we would never count ourselves, and could
	// wait for a dead voter for good (soak seed 1006506). (A vote older
	// than the session we now refuse, which rejoin may have raised, does
	// not count; re-stamping it broke fsim's stamplow bound at seed 176.)
	own, voted := p.votes[c.cfg.Name]
	clear(p.votes)
	if voted && p.declared && p.refused >= p.session && !c.q.planted(c.q.bugUnevictOwn) {
		p.votes[c.cfg.Name] = own
	}
	if _, ok := c.members[v]; !ok {
		return
	}
	c.send(Message{Type: MsgHello, To: v})
	for _, l := range c.sortedLocks() {
		if l.phase == Requesting && !c.hasPerm(l, v) && !l.awaiting[v] {
			c.ask(l, v)
		}
	}
}

// quorumAddMember is AddMember's majority-mode part, after the member is
// recorded: a restart resets what we knew of the voter; a newcomer that is
// not a voter is proposed as one.
func (c *Core) quorumAddMember(name string, inc uint64, restarted bool) {
	q := c.q
	p := q.peer(name)
	if p.inc != inc {
		if p.inc != 0 || restarted {
			p.resvPrev = max(p.resvPrev, p.resv)
		}
		// Declared before we knew any incarnation of it: that
		// declaration may have been counted against this one.
		// Our own vote stands (we refuse its first session): without
		// it we would never count ourselves, and the others might
		// never reach a majority (soak seed 1001151).
		first := p.inc == 0 && p.declared
		own, voted := p.votes[c.cfg.Name]
		*p = qpeer{inc: inc, lastHeard: q.now, resvPrev: p.resvPrev, votes: p.votes}
		clear(p.votes)
		if first {
			p.declared, p.refuseFirst = true, true
			if voted {
				p.votes[c.cfg.Name] = evVote{session: own.session, inc: inc, reserve: own.reserve}
			}
		}
	}
	p.down = false
	p.lastHeard = q.now
}

// quorumRemoveMember is RemoveMember in majority mode: a voter stays a
// voter (it counts as having answered only once evicted); a non-voter goes.
func (c *Core) quorumRemoveMember(name string) bool {
	q := c.q
	if !q.isVoter(name) {
		return false
	}
	q.peer(name).down = true
	q.nextCheck = q.now
	return true
}

// sendConfig pushes our voter set to peer to.
func (c *Core) sendConfig(to string) {
	if _, ok := c.members[to]; !ok {
		return
	}
	c.q.peer(to).configSent = c.q.ver
	c.send(Message{Type: MsgConfig, To: to, Voters: slices.Clone(c.q.voters)})
}

func validVoters(vs []string) bool {
	if len(vs) == 0 || len(vs) > MaxVoters || !slices.IsSorted(vs) {
		return false
	}
	for i, v := range vs {
		if v == "" || len(v) > MaxNameLen || (i > 0 && vs[i-1] == v) {
			return false
		}
	}
	return true
}

func (c *Core) onConfig(m Message) error {
	q := c.q
	if !validVoters(m.Voters) || m.Config == 0 {
		return fmt.Errorf("%w: bad voter set: %v", ErrMalformed, m)
	}
	switch {
	case m.Config < q.ver:
		c.sendConfig(m.From)
		return fmt.Errorf("%w: older voter set: %v", ErrStale, m)
	case m.Config == q.ver:
		if !slices.Equal(m.Voters, q.voters) {
			return fmt.Errorf("%w: voter set %d differs from ours %v: %v", ErrConfig, q.ver, q.voters, m)
		}
	default:
		c.adopt(m.Config, m.Voters)
	}
	c.send(Message{Type: MsgConfigAck, To: m.From})
	return nil
}

func (c *Core) onConfigAck(m Message) error {
	op := c.q.op
	if op == nil || !op.committing || m.Config != op.ver {
		if m.Config < c.q.ver {
			c.sendConfig(m.From)
		}
		return nil
	}
	op.acks[m.From] = true
	c.checkCommit()
	return nil
}

// adopt makes voter set ver, voters ours.
func (c *Core) adopt(ver uint64, voters []string) {
	q := c.q
	c.clock.Witness(serf.LamportTime(ver))
	c.f.accepted = true // our clock is the cluster's (faults.go)
	q.hsDirty = true
	old := q.voters
	q.ver, q.voters = ver, slices.Clone(voters)
	was := q.voter
	q.voter = q.isVoter(c.cfg.Name)
	q.rounds = q.rounds[:0]
	if op := q.op; op != nil && op.committing && ver > op.ver {
		c.endChange(false)
	}
	for _, r := range old {
		if !q.isVoter(r) {
			for _, l := range c.sortedLocks() {
				delete(l.awaiting, r)
				delete(l.perm, r)
			}
			for _, p := range q.peers {
				delete(p.votes, r)
			}
			if p := q.peers[r]; p != nil && p.down {
				c.dropMember(r) // it left (or failed) and is no voter now
			}
		}
	}
	switch {
	case was && !q.voter:
		q.leased = false
		q.session++
		c.reset()
	case q.voter:
		q.nextRenew = q.now // renew at the next check, under the new set
		q.nextCheck = q.now
	}
	for _, a := range q.voters {
		if a == c.cfg.Name || slices.Contains(old, a) {
			continue
		}
		p := q.peer(a)
		p.lastHeard = q.now
		for _, l := range c.sortedLocks() {
			if l.phase == Requesting && !c.hasPerm(l, a) {
				c.ask(l, a)
			}
		}
	}
	for _, v := range q.voters {
		if p := q.peers[v]; p != nil && v != c.cfg.Name {
			c.checkEvicted(v, p)
		}
	}
	if !q.voter {
		q.nextRenew = q.now // ask to be a voter at once
	}
	for _, l := range c.sortedLocks() {
		c.maybeEnter(l)
	}
	// What crossed the change may have been dropped (a message under
	// another version is not acted on): our hello makes peers send their
	// requests again, and we send ours.
	for _, n := range c.names {
		c.send(Message{Type: MsgHello, To: n})
		c.resend(n)
	}
}

// proposeChange queues a voter set change.
func (c *Core) proposeChange(ch change) {
	q := c.q
	if slices.Contains(q.changes, ch) {
		return
	}
	q.changes = append(q.changes, ch)
	c.maybeChange()
}

// heard reports whether a member that is no voter has asked to be one
// within a Lease (a peer that left the voters does not ask).
func (c *Core) heard(name string) bool {
	p := c.q.peers[name]
	_, member := c.members[name]
	return member && p != nil && !p.down && p.asking && c.q.now-p.asked < c.q.lease
}

func (c *Core) noop(ch change) bool {
	return c.q.isVoter(ch.name) == ch.add
}

// maybeChange starts the next queued change: it asks for cfgLock.
func (c *Core) maybeChange() {
	q := c.q
	for len(q.changes) > 0 && c.noop(q.changes[0]) && q.op == nil {
		if !q.changes[0].add && q.changes[0].name == c.cfg.Name {
			q.left = true
		}
		q.changes = q.changes[1:]
	}
	if q.op != nil || len(q.changes) == 0 || !q.voter || !c.leaseValid() {
		return
	}
	q.nextOp++
	op := &cfgOp{id: cfgOpenerBase + q.nextOp, ch: q.changes[0]}
	q.op = op
	l := c.lock(cfgLock)
	l.queue = append(l.queue, waiter{op: op.id})
	c.openers[op.id] = l
	if l.phase == Idle {
		c.startRequest(l)
	}
}

// cfgGranted makes the change, now that we hold cfgLock.
func (c *Core) cfgGranted(l *lockState) {
	q := c.q
	op := q.op
	if op == nil || l.queue[0].op != op.id {
		c.endTurn(l)
		return
	}
	if c.noop(op.ch) || (op.ch.add && !c.heard(op.ch.name)) || (!op.ch.add && len(q.voters) == 1) ||
		(!op.ch.add && op.ch.name != c.cfg.Name && !c.forgettable(op.ch.name) && !q.planted(q.bugForgetBack)) {
		// Done already; or a joiner gone meanwhile (proposed again if
		// it comes back); or the last voter, which stays one; or a
		// voter forgotten (Forget) that is back meanwhile, no longer
		// evicted here: we would stop waiting for its answers while it
		// may hold a lock under a lease in its new session (soak seed
		// 1005117).
		c.endChange(true)
		return
	}
	voters := slices.Clone(q.voters)
	if op.ch.add {
		if len(voters) >= MaxVoters {
			c.endChange(true) // dropped: the set is full
			return
		}
		i, _ := slices.BinarySearch(voters, op.ch.name)
		voters = slices.Insert(voters, i, op.ch.name)
	} else {
		i, _ := slices.BinarySearch(voters, op.ch.name)
		voters = slices.Delete(voters, i, i+1)
	}
	op.committing, op.ver, op.old = true, l.token, q.voters
	op.acks = map[string]bool{c.cfg.Name: true}
	c.adopt(op.ver, voters)
	if q.op != op {
		return
	}
	targets := slices.Clone(op.old)
	if op.ch.add {
		targets = append(targets, op.ch.name)
	}
	for _, v := range targets {
		if v != c.cfg.Name {
			c.sendConfig(v)
		}
	}
	c.checkCommit()
}

func (c *Core) checkCommit() {
	op := c.q.op
	n := 0
	for _, v := range op.old {
		if op.acks[v] {
			n++
		}
	}
	if n >= majority(len(op.old)) {
		c.endChange(true)
	}
}

// endChange ends the change in progress (done: drop it from the queue) and
// gives cfgLock back.
func (c *Core) endChange(done bool) {
	q := c.q
	op := q.op
	q.op = nil
	if done && len(q.changes) > 0 && q.changes[0] == op.ch {
		if !op.ch.add && op.ch.name == c.cfg.Name {
			q.left = true
		}
		q.changes = q.changes[1:]
	}
	if l := c.openers[op.id]; l != nil {
		if l.phase == Holding && l.queue[0].op == op.id {
			c.endTurn(l)
		} else {
			c.Cancel(op.id)
		}
	}
	c.maybeChange()
}

// LeaveVoters asks the voters to remove this peer (majority mode), one
// step of a graceful leave: call it after Shutdown, and leave once
// [Core.LeftVoters] reports true (or give up after a bound).
func (c *Core) LeaveVoters() {
	if c.q == nil || !c.q.isVoter(c.cfg.Name) || len(c.q.voters) == 1 {
		return // the last voter stays one: the cluster ends with it
	}
	c.proposeChange(change{name: c.cfg.Name})
}

// LeftVoters reports whether this peer is no voter (any more): true in
// QuorumNone mode.
func (c *Core) LeftVoters() bool {
	q := c.q
	return q == nil || (!q.isVoter(c.cfg.Name) && q.op == nil) || (len(q.voters) == 1 && q.voter)
}

// Forget removes voter name from the voter set, which takes a majority of
// the voters. It fails with ErrNotEvicted unless a majority has declared
// name evicted (so it is not holding anything), and with ErrNoMajority
// while this peer has no lease.
func (c *Core) Forget(name string) error {
	q := c.q
	if q == nil {
		return fmt.Errorf("mutex: forget %q: %w", name, errors.New("not in majority mode"))
	}
	if name == c.cfg.Name || !q.isVoter(name) {
		return fmt.Errorf("mutex: forget %q: %w", name, ErrUnknownPeer)
	}
	if !c.forgettable(name) {
		return fmt.Errorf("mutex: forget %q: %w", name, ErrNotEvicted)
	}
	if !c.leaseValid() {
		return fmt.Errorf("mutex: forget %q: %w", name, ErrNoMajority)
	}
	c.proposeChange(change{name: name})
	return nil
}

// forgettable reports whether voter name may be removed on Forget's
// change: it is evicted here, so we count it as having answered already
// and removing it changes nothing for our requests. That is enough for the
// other voters too: a voter that holds a lock had every voter's answer to
// its request, ours included, and any message of a later session of it
// that we take un-evicts it here; once we adopt the set without it, we
// answer it no more. (A voter that counted us evicted did not ask us; but
// then a majority declared us, and we hold no lease: canEnter would not
// have given us the voters lock to commit with.)
func (c *Core) forgettable(name string) bool {
	p := c.q.peers[name]
	return p != nil && p.evicted
}

// ForceForget removes voter name from the voter set on this peer's word
// alone, without a majority: the way out of a cluster that lost its
// majority for good (a 2-peer cluster that lost one). It is safe only if
// name is gone for good or cannot reach a majority of the old set without
// this peer (always so with 2 voters); it waits until this peer has
// declared name evicted (LockDelay after its last grant to it).
func (c *Core) ForceForget(name string) error {
	q := c.q
	if q == nil || name == c.cfg.Name || !q.isVoter(name) {
		return fmt.Errorf("mutex: forget %q: %w", name, ErrUnknownPeer)
	}
	if p := q.peers[name]; p == nil || !p.declared || p.refused < p.session {
		return fmt.Errorf("mutex: forget %q: %w: not silent for the lock-delay yet", name, ErrNotEvicted)
	}
	i, _ := slices.BinarySearch(q.voters, name)
	voters := slices.Delete(slices.Clone(q.voters), i, i+1)
	c.adopt(uint64(c.clock.Increment()), voters)
	for _, v := range q.voters {
		if v != c.cfg.Name {
			c.sendConfig(v)
		}
	}
	return nil
}

// QuorumStatus is the majority-mode part of a [Status].
type QuorumStatus struct {
	Version   uint64
	Voters    []VoterStatus
	Majority  int
	Voter     bool
	Lease     bool          // a valid lease now
	LeaseLeft time.Duration // until it lapses, if valid
	LeaseLen  time.Duration
	LockDelay time.Duration
	Session   uint64
	Lapses    uint64 // leases lost
	Revoked   uint64 // holds revoked by a lapse
	Evictions uint64 // voters evicted, as counted here
	Pending   []string
}

// VoterStatus is one voter as majority mode sees it.
type VoterStatus struct {
	Name string
	// State: "self", "alive", "silent" (nothing heard for a Lease),
	// "down" (Serf reports it failed), "evicted".
	State    string
	Declared bool // this peer declared it evicted
}

func (c *Core) quorumStatus() *QuorumStatus {
	q := c.q
	if q == nil {
		return nil
	}
	s := &QuorumStatus{Version: q.ver, Majority: majority(len(q.voters)), Voter: q.voter,
		Lease: c.leaseValid(), LeaseLen: q.lease, LockDelay: q.delay, Session: q.session,
		Lapses: q.lapses, Revoked: q.revocations, Evictions: q.evictions}
	if s.Lease {
		s.LeaseLeft = q.leaseUntil - q.now
	}
	for _, v := range q.voters {
		vs := VoterStatus{Name: v, State: "alive"}
		p := q.peers[v]
		switch {
		case v == c.cfg.Name:
			vs.State = "self"
		case p == nil:
		case p.evicted:
			vs.State = "evicted"
		case p.down:
			vs.State = "down"
		case q.now-p.lastHeard >= q.lease:
			vs.State = "silent"
		}
		if p != nil {
			vs.Declared = p.declared && p.refused >= p.session
		}
		s.Voters = append(s.Voters, vs)
	}
	for _, ch := range q.changes {
		if ch.add {
			s.Pending = append(s.Pending, "add "+ch.name)
		} else {
			s.Pending = append(s.Pending, "remove "+ch.name)
		}
	}
	return s
}
