package mutex

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// Refusal to answer (the seed's second fault). Ricart–Agrawala stalls for
// good if one member never answers a request; majority mode's eviction only
// covers members that fall silent. The rules, each checked by the
// simulation (fsim_test.go):
//
//   - A request unanswered for half the answer-timeout is probed: its
//     sender asks the receiver (MsgProbe) to answer it again, and an
//     honest receiver that defers it (it holds the lock, or asked first)
//     says so with a MsgDeferred. A deferred request is not owed any more,
//     so an honest peer never owes an answer for longer than a round trip,
//     however long it holds, and without long holds nothing is added to
//     Ricart–Agrawala's 2(N−1) messages per grant.
//   - A member that has owed an answer to one of our requests for
//     Config.AnswerTimeout while it is a member is suspected: Status and
//     Ready.Faults name it, the lock, the request and for how long.
//   - Majority mode: a voter that suspects another stops granting its lease
//     and tells every voter (MsgSuspect). A voter told so does not take it
//     on trust: it probes the suspect (MsgProbe), which must answer the
//     request again and acknowledge; while the probe is unanswered it
//     withholds its grants too, and once it has been unanswered for the
//     answer-timeout it suspects the member itself. A suspect is declared
//     evicted by the existing rule (no grant for the lock-delay), so a
//     majority of voters must suspect it, each on its own evidence, and its
//     lease has surely expired when it counts as having answered. One
//     voter's suspicion, right or wrong, only costs the suspect that
//     voter's grants: it cannot evict anyone.
//   - The evicted member learns it from the declarations (or from refused
//     lease renewals), revokes its holds, reports why, and comes back in a
//     new session, asked again like any other voter; it reports that it is
//     back once a majority grants it a lease in that session. A voter that
//     still suspects it counts it as having answered, so it keeps the
//     member's requests deferred, even as it releases the lock, until the
//     member answers it too (holdsBack): the voters that no longer suspect
//     it may already grant its new session a lease.
//
// Time is an input here too: the clock is the one Tick sets.

// owedKey names one answer owed to us: peer's answer to our request ts on
// lock.
type owedKey struct {
	lock, peer string
	ts         uint64
}

type owed struct {
	since     time.Duration // when we asked
	deferred  bool          // answered with a MsgDeferred
	nudged    bool          // probed at half the answer-timeout
	holding   bool          // the deferral said the sender holds the lock ...
	heldSince time.Duration // ... as we first learnt then
	nudgedAt  time.Duration // the last nudge
}

// probe is what we asked a suspect on another voter's word.
type probe struct {
	open  bool          // not acknowledged yet
	first time.Duration // the first probe not acknowledged
	last  time.Duration // the last probe sent
	// holdLock and holdSince: every acknowledgement since holdSince
	// said it holds holdLock (MaxHold), the last one at heldAt.
	holdLock  string
	holdToken uint64
	holdSince time.Duration
	heldAt    time.Duration
	// asked is the last probe we sent on another voter's word (whose
	// request, on which lock), to send again.
	asked Message
}

// suspicion is a member we suspect of refusing to answer.
type suspicion struct {
	lock     string // the oldest request it owed us an answer to ...
	ts       uint64
	since    time.Duration // ... since
	probe    bool          // on a probe it left unanswered instead
	inc      uint64        // its incarnation
	answered bool          // it answered since the last scan
	forgedAt time.Duration // its last forged message (0: none)
	broken   *broken       // an operator broke its hold (brk.go)
}

// faults is a core's state for spotting members that misbehave.
type faults struct {
	timeout  time.Duration
	maxHold  time.Duration
	delay    time.Duration        // how long past maxHold a holder may defer us
	holds    map[string]holdStart // by lock: our own holds
	now      time.Duration
	nextScan time.Duration
	owed     map[owedKey]*owed
	sus      map[string]*suspicion    // the members we suspect
	told     map[string]time.Duration // last MsgSuspect we sent about a member
	probes   map[string]*probe        // by suspect
	seen     map[[2]string]seenHold   // by member and lock: its holds as we learnt of them
	selfSus  uint64                   // the session whose eviction we last reported
	backFrom uint64                   // ... plus one, until a lease in such a session is reported (0: none)
	heard    map[string]heardTime     // the highest Time received from each member
	stamped  map[string]stampedSeen   // by lock: what each member had been heard at, when stamped
	accepted bool                     // a message was accepted: our clock is the cluster's

	breaks map[string]*breakQuery // by lock: our operator's breaks, looking for the holder (brk.go)

	suspicions, forgeries, broken uint64

	// Faults injected by tests only; the simulation must catch each.
	bugTrustSuspect  bool // suspect whoever another voter suspects, no probe
	bugNoSuspect     bool // never suspect anyone
	bugNoForgery     bool // accept any timestamp
	bugNoMaxHold     bool // never time a holder's deferral
	bugBreakGrants   bool // a break frees the lock at once: its voters grant the waiters, lock-delay skipped
	bugAnswerSuspect bool // a release answers the deferred requests of an evicted suspect too
	bugLateWithhold  bool // a voter told of a suspect grants it until it suspects it too
	bugHits
}

// seenHold is a member's hold of a lock as we learnt of it, from its
// deferrals of our requests and its acknowledgements of our probes.
type seenHold struct {
	inc, token  uint64
	since, last time.Duration // first learnt; last relied on
}

// probedHog reports whether the acknowledgements of our probes show that
// the member holds one lock for longer than MaxHold plus the delay: the
// last one that said so came that long after the hold began, and lately
// (within two answer-timeouts: another voter's reports, on which we probe,
// come once an answer-timeout while it suspects the member). The time
// since the last acknowledgement is no evidence: a voter once went on
// timing a hold that one acknowledgement had shown, after the holder had
// released and nobody reported it again, and suspected an honest peer
// (TestProbedHoldGoesStale).
func (f *faults) probedHog(pr *probe) bool {
	return pr != nil && f.maxHold > 0 && pr.holdLock != "" &&
		pr.heldAt-pr.holdSince >= f.maxHold+f.delay && f.now-pr.heldAt < 2*f.timeout
}

// holdStart is when our hold of a lock (token) began.
type holdStart struct {
	token uint64
	since time.Duration
}

// heardTime is the highest Time received from one incarnation of a member.
type heardTime struct{ inc, time uint64 }

// stampedSeen is, for the request ts of a lock, the Time heard from each
// member when it was stamped: the Seen its copies carry.
type stampedSeen struct {
	ts   uint64
	seen map[string]heardTime
}

// MaxClockJump bounds how far ahead of this peer's Lamport clock a
// timestamp may be (Time, ReqTime, Reserve, Config): an honest clock runs
// ahead of another's by what a restart's floor adds (2^26) and a lease's
// reservation (2^20), far less. A timestamp beyond is forged, so no member
// can push the clocks to their end in one message: at most 2^32 a message,
// so 2^32 of them for the 64-bit clock. A peer that knows no cluster yet
// (plain mode, or majority mode with no voter set: it just started, with
// no state kept) takes the first message's clock as it is.
const MaxClockJump = 1 << 32

func newFaults(cfg Config) *faults {
	delay := cfg.LockDelay
	if cfg.Quorum != QuorumMajority {
		delay = cfg.AnswerTimeout
	}
	return &faults{timeout: cfg.AnswerTimeout, maxHold: cfg.MaxHold, delay: delay, holds: map[string]holdStart{},
		owed: map[owedKey]*owed{}, sus: map[string]*suspicion{},
		told: map[string]time.Duration{}, probes: map[string]*probe{}, seen: map[[2]string]seenHold{},
		heard:   map[string]heardTime{},
		stamped: map[string]stampedSeen{}, breaks: map[string]*breakQuery{}}
}

// shrink remakes the maps kept by lock name, as Core.shrink does the
// core's: Go maps keep their largest size (and maps.Clone copies it).
func (f *faults) shrink() {
	f.stamped = remake(f.stamped)
	f.owed = remake(f.owed)
	f.holds = remake(f.holds)
	f.seen = remake(f.seen)
}

// holdSeen records that member p (incarnation inc) holds lock under token,
// and returns since when we know that hold: the same hold keeps its start
// across our requests, so that a requester that cancels and asks again does
// not restart the MaxHold clock (a hog's waiters came and went, and it held
// for long before any of them suspected it). Token 0 (a sender that does
// not say) is never the same hold.
func (f *faults) holdSeen(p string, inc uint64, lock string, token uint64) time.Duration {
	k := [2]string{p, lock}
	h, ok := f.seen[k]
	if !ok || h.inc != inc || h.token != token || token == 0 {
		h = seenHold{inc: inc, token: token, since: f.now}
	}
	h.last = f.now
	f.seen[k] = h
	return h.since
}

// relyOnHold marks p's hold of lock as still relied on: kept while one of
// our requests or probes is deferred by it, and for an answer-timeout after.
func (f *faults) relyOnHold(p, lock string) {
	k := [2]string{p, lock}
	if h, ok := f.seen[k]; ok {
		h.last = f.now
		f.seen[k] = h
	}
}

// remake returns a copy of m sized for what it holds now.
func remake[K comparable, V any](m map[K]V) map[K]V {
	n := make(map[K]V, len(m))
	for k, v := range m {
		n[k] = v
	}
	return n
}

// FaultKind is what a [FaultReport] reports.
type FaultKind uint8

// The fault reports.
const (
	// FaultSuspect: Peer has owed an answer to our request ReqTime on
	// Lock for For (or, with Lock empty, left a probe unanswered for For).
	FaultSuspect FaultKind = iota + 1
	// FaultAnswered: Peer, suspected before, owes nothing overdue now:
	// it answered, or (Why is "gone") it failed, left, restarted or is no
	// longer a voter.
	FaultAnswered
	// FaultSuspectedBy: Peer suspects us of owing an answer to its
	// request ReqTime on Lock; we answer it again.
	FaultSuspectedBy
	// FaultEvictedSelf: Peer declared our session ReqTime evicted; our
	// lease lapses (if it has not) and we start afresh.
	FaultEvictedSelf
	// FaultForged: a message from Peer (about Lock and ReqTime) carried
	// a forged timestamp; it was dropped (Why says how it was forged).
	FaultForged
	// FaultBreak: the operator of voter Why broke Peer's hold (token
	// ReqTime) of Lock; Peer is suspected at once (brk.go).
	FaultBreak
	// FaultBreakNone: this peer's break of Lock found nobody holding it
	// (nobody said so within the answer-timeout).
	FaultBreakNone
	// FaultBack: after a FaultEvictedSelf, this peer holds a lease again,
	// in session ReqTime, later than the one declared: it is back.
	FaultBack
)

// String names the kind as the log does.
func (k FaultKind) String() string {
	switch k {
	case FaultSuspect:
		return "suspect"
	case FaultAnswered:
		return "answered"
	case FaultSuspectedBy:
		return "suspected-by"
	case FaultEvictedSelf:
		return "evicted-self"
	case FaultForged:
		return "forged"
	case FaultBreak:
		return "break"
	case FaultBreakNone:
		return "break-none"
	case FaultBack:
		return "back"
	}
	return fmt.Sprintf("fault(%d)", uint8(k))
}

// FaultReport is one observation about a misbehaving member (or about this
// peer's own eviction), for the log.
type FaultReport struct {
	Kind    FaultKind
	Peer    string
	Lock    string
	ReqTime uint64
	For     time.Duration
	Why     string // FaultForged: how; FaultAnswered: "gone" or empty
}

// AnsweredGone is a FaultAnswered report's Why when the suspected member
// owes nothing because it is no longer the member it was.
const AnsweredGone = "gone"

// String renders the report for logs and failing tests.
func (r FaultReport) String() string {
	return fmt.Sprintf("%v %s lock=%q req=%d for=%v %s", r.Kind, r.Peer, r.Lock, r.ReqTime, r.For, r.Why)
}

// Suspect is a member this peer suspects of refusing to answer.
type Suspect struct {
	Name string
	// Lock and ReqTime name the oldest request of ours it owes an
	// answer to, For how long; empty when the suspicion rests on a
	// probe it left unanswered (another voter's report) instead.
	Lock    string
	ReqTime uint64
	For     time.Duration
	// Probe: it left a probe unanswered for the answer-timeout.
	Probe bool
}

func (c *Core) report(r FaultReport) {
	c.out.Faults = append(c.out.Faults, r)
}

// tickFaults sets the clock and, on its cadence, looks for suspects.
func (c *Core) tickFaults(now time.Duration) {
	f := c.f
	if now <= f.now && f.now != 0 {
		return
	}
	f.now = now
	if f.maxHold > 0 {
		c.checkHolds()
	}
	if f.timeout > 0 && now >= f.nextScan {
		c.scanFaults()
		c.scanBreaks()
	}
}

// checkHolds revokes our own holds that reached MaxHold.
func (c *Core) checkHolds() {
	f := c.f
	for _, l := range c.sortedLocks() {
		if l.phase != Holding || l.name == cfgLock {
			delete(f.holds, l.name)
			continue
		}
		h, ok := f.holds[l.name]
		if !ok || h.token != l.token {
			f.holds[l.name] = holdStart{token: l.token, since: f.now}
			continue
		}
		if f.now-h.since < f.maxHold || l.revoked {
			continue
		}
		op := l.queue[0].op
		c.out.Revocations = append(c.out.Revocations, Revocation{Opener: op, Lock: l.name, Token: l.token, MaxHold: true})
		if q := c.q; q != nil {
			// As a lapse revokes: the lock stays held here, its
			// deferred requests unanswered, for the grace.
			clear(l.perm)
			l.revoked, l.revokedAt = true, q.now
			q.revokedHeld++
			q.revocations++
			continue
		}
		c.endTurn(l)
	}
	for name := range f.holds {
		if l := c.locks[name]; l == nil || l.phase != Holding {
			delete(f.holds, name)
		}
	}
}

// noteAsked records that peer p is asked for l's request (again): its
// answer is owed from now.
func (c *Core) noteAsked(l *lockState, p string) {
	if f := c.f; f.timeout > 0 {
		f.owed[owedKey{l.name, p, l.reqTime}] = &owed{since: f.now}
	}
}

// faultTarget reports whether member p may be suspected: in majority mode
// only voters that are not evicted are awaited.
func (c *Core) faultTarget(p string) bool {
	q := c.q
	if q == nil {
		return true
	}
	qp := q.peers[p]
	return q.isVoter(p) && (qp == nil || !qp.evicted)
}

// scanFaults finds the members that owe an answer overdue, reports the
// changes, and in majority mode tells the voters.
//
// A suspicion sticks: it ends only when the member answers (a reply, busy
// or deferral to us, or the acknowledgement of our probe) and owes nothing
// overdue, or when it is no member or voter any more, or restarts. So an
// eviction does not end it, and a suspect's new session gets no lease from
// us until it has answered.
func (c *Core) scanFaults() {
	f := c.f
	f.nextScan = f.now + max(f.timeout/16, time.Millisecond)
	overdue := map[string]owedKey{}
	seen := map[owedKey]bool{}
	for _, l := range c.sortedLocks() {
		if l.phase != Requesting {
			continue
		}
		for _, p := range c.names {
			if !l.awaiting[p] {
				continue
			}
			k := owedKey{l.name, p, l.reqTime}
			o := f.owed[k]
			if o == nil {
				o = &owed{since: f.now}
				f.owed[k] = o
			}
			seen[k] = true
			renudge := f.maxHold > 0 && o.deferred && !o.holding && f.now-o.nudgedAt >= f.timeout/2
			if (!o.deferred && !o.nudged && f.now-o.since >= f.timeout/2) || renudge {
				// Ask it to answer again: a deferral comes back (and
				// says whether it holds, for MaxHold).
				o.nudged, o.nudgedAt = true, f.now
				c.send(Message{Type: MsgProbe, To: p, Target: c.cfg.Name, Lock: l.name, ReqTime: l.reqTime})
			}
			if o.holding {
				f.relyOnHold(p, l.name)
			}
			hogging := f.maxHold > 0 && o.holding && f.now-o.heldSince >= f.maxHold+f.delay && !f.planted(f.bugNoMaxHold)
			if (o.deferred && !hogging) || f.now-o.since < f.timeout || !c.faultTarget(p) || f.planted(f.bugNoSuspect) {
				continue
			}
			if cur, ok := overdue[p]; !ok || f.owed[cur].since > o.since {
				overdue[p] = k
			}
		}
	}
	for k := range f.owed {
		if !seen[k] {
			delete(f.owed, k)
		}
	}
	for k, h := range f.seen {
		if f.now-h.last >= f.timeout {
			delete(f.seen, k)
		}
	}
	changed := false
	for _, p := range keysSorted(overdue) {
		k := overdue[p]
		if sus := f.sus[p]; sus != nil {
			sus.answered = false
			if sus.probe { // now on our own evidence too
				sus.probe, sus.lock, sus.ts = false, k.lock, k.ts
			}
		} else {
			f.sus[p] = &suspicion{lock: k.lock, ts: k.ts, since: f.owed[k].since, inc: c.members[p]}
			f.suspicions++
			changed = true
			c.report(FaultReport{Kind: FaultSuspect, Peer: p, Lock: k.lock, ReqTime: k.ts, For: f.now - f.owed[k].since})
		}
	}
	for _, p := range keysSorted(f.probes) {
		pr := f.probes[p]
		if c.q == nil || !c.q.isVoter(p) {
			delete(f.probes, p)
			continue
		}
		if f.maxHold > 0 && pr.holdLock != "" && pr.holdLock == pr.asked.Lock && !pr.open && f.now-pr.heldAt < 2*f.timeout &&
			pr.heldAt-pr.holdSince < f.maxHold+f.delay && f.now-pr.holdSince >= f.maxHold+f.delay {
			// The hold it showed is past the bound by now: ask again
			// (the same probe) rather than wait for the next report to
			// (probedHog).
			pr.open, pr.first, pr.last = true, f.now, f.now
			c.send(pr.asked)
		}
		hogging := f.probedHog(pr) && !f.planted(f.bugNoMaxHold)
		if (hogging || (pr.open && f.now-pr.first >= f.timeout)) && f.sus[p] == nil && !f.planted(f.bugNoSuspect) {
			f.sus[p] = &suspicion{probe: true, since: pr.first, inc: c.members[p]}
			f.suspicions++
			changed = true
			c.report(FaultReport{Kind: FaultSuspect, Peer: p, For: f.now - pr.first})
		}
		if !pr.open && f.now-pr.last >= f.timeout && (pr.holdLock == "" || f.now-pr.last >= 3*f.timeout) {
			// (A hold it reported is timed across the reports, which
			// come once an answer-timeout.)
			delete(f.probes, p)
		}
	}
	for _, p := range keysSorted(f.sus) {
		sus := f.sus[p]
		inc, member := c.members[p]
		_, owes := overdue[p]
		pr := f.probes[p]
		hogging := f.probedHog(pr)
		// No longer the member it was: restarted, not a voter, or gone.
		gone := (member && inc != sus.inc) || (c.q != nil && !c.q.isVoter(p)) || (c.q == nil && !member)
		switch {
		case hogging:
			// It says it holds, for longer than MaxHold allows.
		case c.breakStands(p, sus):
			// An operator broke its hold: suspected until evicted.
		case sus.forgedAt != 0 && f.now-sus.forgedAt < f.timeout:
			// Forged lately: suspected whatever it answers.
		case gone,
			sus.answered && !owes && (pr == nil || !pr.open),
			(sus.probe || sus.forgedAt != 0) && !owes && (pr == nil || !pr.open):
			r := FaultReport{Kind: FaultAnswered, Peer: p}
			if gone {
				r.Why = AnsweredGone
			}
			delete(f.sus, p)
			delete(f.told, p)
			changed = true
			c.report(r)
			c.rejoin(p)
			continue
		}
		if t, ok := f.told[p]; member && (!ok || f.now-t >= f.timeout) {
			f.told[p] = f.now
			if !sus.probe && (c.q == nil || c.q.voter) && owes {
				// Name the request it owes: a suspicion for a forgery
				// names the forged message, perhaps about no lock or
				// request (a malformed report once).
				c.tellSuspect(p, overdue[p])
			} else {
				// Owed nothing now (evicted, perhaps): ask it to
				// answer again, so that it can come back.
				lock, ts := sus.lock, sus.ts
				if ts == 0 || lock == "" {
					// A break's, or a forgery's in a message about
					// no lock: about no request of ours.
					lock, ts = "", 0
				}
				c.send(Message{Type: MsgProbe, To: p, Target: c.cfg.Name, Lock: lock, ReqTime: ts})
			}
		}
	}
	if changed && c.q != nil {
		c.q.nextCheck = c.q.now // declare soon, if it comes to that
	}
}

// probeAcked takes the acknowledgement m of a probe (or of a nudge: a
// probe about our own request): the member answers. (If it still owes an
// answer overdue, the suspicion stands all the same.)
func (c *Core) probeAcked(m Message) {
	if pr := c.f.probes[m.From]; pr != nil {
		pr.open = false
		switch {
		case m.Lock == "": // about no lock: says nothing of holds
		case m.TargetInc == 0:
			pr.holdLock = ""
		case pr.holdLock != m.Lock || pr.holdToken != m.Reserve:
			since := c.f.holdSeen(m.From, m.FromIncarnation, m.Lock, m.Reserve)
			pr.holdLock, pr.holdToken, pr.holdSince, pr.heldAt = m.Lock, m.Reserve, since, c.f.now
		default:
			c.f.relyOnHold(m.From, m.Lock)
			pr.heldAt = c.f.now
		}
	}
	c.answered(m.From)
}

// rejoin takes back voter p, evicted while we suspected it and heard from
// in a later session since, now that it answers: it is asked again, and the
// requests we deferred for it are answered as the rules say.
func (c *Core) rejoin(name string) {
	q := c.q
	if q == nil {
		return
	}
	p := q.peers[name]
	if p == nil || !p.evicted {
		return
	}
	// The sessions it had while evicted get no grant from us: told so
	// when it asks, it starts afresh (dropping any permission it kept),
	// as after any eviction, and a later session is asked again.
	p.declared, p.refused = true, max(p.refused, p.session)
	if p.session <= p.evictedAt {
		return
	}
	c.unevict(name, p)
	for _, l := range c.sortedLocks() {
		in := l.in[name]
		if in == nil || in.state != inDeferred || !q.everLeased {
			continue
		}
		if l.phase == Holding || (l.phase == Requesting && before(l.reqTime, c.cfg.Name, in.ts, name)) {
			continue
		}
		in.state = inReplied
		c.answer(MsgReply, name, l.name, in.ts)
		c.forget(l)
	}
}

// holdsBack reports whether a request of p that we defer must stay
// deferred when we release the lock (or give it up): p is evicted here
// while we suspect it, so we count it as having answered every request of
// ours, and its later session may hold a lease from voters that no longer
// suspect it. A reply would let it enter while we are granted without
// asking it. rejoin answers the request once p answers again.
func (c *Core) holdsBack(p string) bool {
	return c.q != nil && c.evictedSuspect(p) && !c.f.planted(c.f.bugAnswerSuspect)
}

// answered notes an answer from member p (a reply, busy or deferral): a
// suspicion of it ends at the next scan unless it still owes one overdue.
func (c *Core) answered(p string) {
	if sus := c.f.sus[p]; sus != nil {
		sus.answered = true
	}
}

// tellSuspect sends MsgSuspect about p: to p itself (it answers again), and
// in majority mode to every other voter, which probes p.
func (c *Core) tellSuspect(p string, k owedKey) {
	m := Message{Type: MsgSuspect, Target: p, Lock: k.lock, ReqTime: k.ts}
	m.To = p
	c.send(m)
	if c.q == nil {
		return
	}
	for _, v := range c.q.voters {
		if _, ok := c.members[v]; ok && v != p && v != c.cfg.Name {
			m.To = v
			c.send(m)
		}
	}
}

// suspected reports whether we suspect voter v of refusing to answer, on
// our own evidence: majority mode's eviction then proceeds as if it were
// silent.
func (c *Core) suspected(v string) bool {
	f := c.f
	return f.sus[v] != nil
}

// withholdGrant reports whether we refuse to grant voter v's lease now: we
// suspect it, or a probe of it is unanswered.
func (c *Core) withholdGrant(v string) bool {
	pr := c.f.probes[v]
	return c.suspected(v) || (pr != nil && pr.open && !c.f.planted(c.f.bugLateWithhold))
}

// faultLock checks the lock named by a fault message.
func (c *Core) faultLock(m Message) error {
	if m.Type == MsgProbe && m.Lock == "" && m.ReqTime == 0 {
		return nil // about no request: it only asks for an acknowledgement
	}
	if (ValidLockName(m.Lock) != nil && (c.q == nil || m.Lock != cfgLock)) || m.ReqTime == 0 {
		return fmt.Errorf("%w: %v", ErrMalformed, m)
	}
	return nil
}

// onFault handles MsgDeferred, MsgSuspect and MsgProbe.
func (c *Core) onFault(m Message) error {
	if err := c.faultLock(m); err != nil {
		return err
	}
	switch m.Type {
	case MsgDeferred:
		return c.onDeferred(m)
	case MsgSuspect:
		return c.onSuspect(m)
	default:
		return c.onProbe(m)
	}
}

func (c *Core) onDeferred(m Message) error {
	l := c.locks[m.Lock]
	if l == nil || l.phase != Requesting || l.reqTime != m.ReqTime || !l.awaiting[m.From] {
		return fmt.Errorf("%w: %v", ErrUnexpected, m)
	}
	f := c.f
	if f.timeout > 0 {
		k := owedKey{m.Lock, m.From, m.ReqTime}
		o := f.owed[k]
		if o == nil {
			o = &owed{since: f.now}
			f.owed[k] = o
		}
		o.deferred = true
		if m.Try && !o.holding {
			o.holding, o.heldSince = true, f.holdSeen(m.From, m.FromIncarnation, m.Lock, m.Reserve)
		}
	}
	c.answered(m.From)
	return nil
}

// onSuspect: the sender suspects Target of owing it an answer.
func (c *Core) onSuspect(m Message) error {
	f, q := c.f, c.q
	if m.Target == c.cfg.Name {
		c.report(FaultReport{Kind: FaultSuspectedBy, Peer: m.From, Lock: m.Lock, ReqTime: m.ReqTime})
		c.reanswer(m.From, m.Lock, m.ReqTime)
		return nil
	}
	if q == nil || !q.voter || f.timeout == 0 || !q.isVoter(m.Target) || !c.faultTarget(m.Target) {
		return nil
	}
	if _, ok := c.members[m.Target]; !ok {
		return nil // silent: eviction by silence covers it
	}
	if f.planted(f.bugTrustSuspect) {
		if f.sus[m.Target] == nil {
			f.sus[m.Target] = &suspicion{probe: true, since: f.now, inc: c.members[m.Target]}
		}
		return nil
	}
	pr := f.probes[m.Target]
	if pr != nil && f.now-pr.last < f.timeout/2 {
		// One probe per half answer-timeout, whoever asks and
		// whether it was answered or not: a flood of reports
		// cannot keep us from granting a member that answers.
		return nil
	}
	if pr == nil {
		pr = &probe{}
		f.probes[m.Target] = pr
	}
	if !pr.open {
		pr.open, pr.first = true, f.now
	}
	pr.last = f.now
	pr.asked = Message{Type: MsgProbe, To: m.Target, Target: m.From, Lock: m.Lock, ReqTime: m.ReqTime}
	c.send(pr.asked)
	return nil
}

// onProbe answers a probe (answering again the request it names) or takes
// an acknowledgement.
func (c *Core) onProbe(m Message) error {
	if m.Try {
		c.probeAcked(m)
		return nil
	}
	if m.Target != c.cfg.Name && m.Lock != "" {
		c.reanswer(m.Target, m.Lock, m.ReqTime)
	}
	ack := Message{Type: MsgProbe, To: m.From, Try: true, Target: m.Target, Lock: m.Lock, ReqTime: m.ReqTime}
	if l := c.locks[m.Lock]; m.Lock != "" && l != nil && l.phase == Holding {
		ack.TargetInc, ack.Reserve = 1, l.token // we hold it: the prober times the hold (MaxHold)
	}
	c.send(ack)
	return nil
}

// reanswer sends peer p again our answer to its request ts on lock; a
// request we never saw gets a hello, on which p sends it again.
func (c *Core) reanswer(p, lock string, ts uint64) {
	if _, ok := c.members[p]; !ok {
		return
	}
	var in *inbound
	if l := c.locks[lock]; l != nil {
		in = l.in[p]
	}
	switch {
	case in == nil || in.ts < ts:
		c.send(Message{Type: MsgHello, To: p})
	case in.ts > ts:
		// It has asked again since: that request is answered.
	case in.state == inReplied:
		c.answer(MsgReply, p, lock, ts)
	case in.state == inBusy:
		c.answer(MsgBusy, p, lock, ts)
	case in.state == inDeferred:
		l := c.locks[lock]
		d := Message{Type: MsgDeferred, To: p, Lock: lock, ReqTime: ts, Try: l.phase == Holding}
		if d.Try {
			d.Reserve = l.token // the requester times the hold (MaxHold) across its requests
		}
		c.send(d)
	}
}

// reportEvicted reports, once per session, that voter by declared our
// session sess evicted.
func (c *Core) reportEvicted(by string, sess uint64) {
	f := c.f
	if sess < c.q.session || (f.selfSus == sess+1) {
		return
	}
	f.selfSus = sess + 1
	f.backFrom = max(f.backFrom, sess+1)
	c.report(FaultReport{Kind: FaultEvictedSelf, Peer: by, ReqTime: sess})
}

// reportBack reports, once after its eviction was reported, that this peer
// holds a lease in a later session than the one declared (called as a
// lease round succeeds).
func (c *Core) reportBack() {
	f := c.f
	if f.backFrom == 0 || c.q.session < f.backFrom {
		return
	}
	f.backFrom = 0
	c.report(FaultReport{Kind: FaultBack, Peer: c.cfg.Name, ReqTime: c.q.session})
}

// faultStatus fills the fault parts of a Status.
func (c *Core) faultStatus(s *Status) {
	f := c.f
	for _, p := range keysSorted(f.sus) {
		sus := f.sus[p]
		s.Suspects = append(s.Suspects, Suspect{Name: p, Lock: sus.lock, ReqTime: sus.ts, For: f.now - sus.since, Probe: sus.probe})
	}
	for i := range s.Locks {
		ls := &s.Locks[i]
		if ls.Phase != Requesting {
			continue
		}
		for _, p := range ls.Awaiting {
			o := f.owed[owedKey{ls.Name, p, ls.ReqTime}]
			if o != nil && !o.deferred && f.timeout > 0 && f.now-o.since >= f.timeout {
				ls.Slow = append(ls.Slow, SlowPeer{Name: p, ReqTime: ls.ReqTime, For: f.now - o.since})
			}
		}
	}
}

func keysSorted[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// seenFor returns the Seen of message m: for a request, what the receiver
// had been heard at when the request was stamped; else what it has been
// heard at now.
func (c *Core) seenFor(m Message) uint64 {
	f := c.f
	if m.Type == MsgRequest {
		if st, ok := f.stamped[m.Lock]; ok && st.ts == m.ReqTime {
			if h := st.seen[m.To]; h.inc == m.ToIncarnation {
				return h.time
			}
		}
		return 0
	}
	if h := f.heard[m.To]; h.inc == m.ToIncarnation {
		return h.time
	}
	return 0
}

// noteStamped records, for l's new request, what each member had been
// heard at.
func (c *Core) noteStamped(l *lockState) {
	f := c.f
	if len(f.stamped) > 2*len(c.locks)+16 {
		for name, st := range f.stamped {
			if sl := c.locks[name]; sl == nil || sl.phase != Requesting || sl.reqTime != st.ts {
				delete(f.stamped, name)
			}
		}
	}
	seen := make(map[string]heardTime, len(c.names))
	for _, p := range c.names {
		if h := f.heard[p]; h.inc == c.members[p] && h.time > 0 {
			seen[p] = h
		}
	}
	f.stamped[l.name] = stampedSeen{ts: l.reqTime, seen: seen}
}

// checkForged rejects message m (from a current member) if its timestamps
// cannot be honest, and otherwise records its Time as heard. Forgeries are
// dropped, counted (drop reason "forged"), reported, and make the sender a
// suspect for an answer-timeout: no lease grant from us meanwhile, so a
// member that forges to a majority of the voters is evicted.
func (c *Core) checkForged(m Message) error {
	f := c.f
	now := uint64(c.clock.Time())
	why := ""
	switch {
	case m.Seen > now:
		why = fmt.Sprintf("claims to have seen clock %d, above ours (%d)", m.Seen, now)
	case m.Type == MsgRequest && m.Seen > 0 && m.ReqTime <= m.Seen:
		why = fmt.Sprintf("request stamped %d, not above clock %d it had seen from us", m.ReqTime, m.Seen)
	case f.accepted && now < math.MaxUint64-MaxClockJump &&
		max(m.Time, m.ReqTime, m.Reserve, m.Config) > now+MaxClockJump:
		why = fmt.Sprintf("clock %d is more than %d ahead of ours (%d)", max(m.Time, m.ReqTime, m.Reserve, m.Config), uint64(MaxClockJump), now)
	}
	if why == "" || f.planted(f.bugNoForgery) {
		f.accepted = true
		h := f.heard[m.From]
		if h.inc != m.FromIncarnation {
			h = heardTime{inc: m.FromIncarnation}
		}
		h.time = max(h.time, m.Time)
		f.heard[m.From] = h
		return nil
	}
	f.forgeries++
	c.report(FaultReport{Kind: FaultForged, Peer: m.From, Lock: m.Lock, ReqTime: m.ReqTime, Why: why})
	if f.timeout > 0 {
		sus := f.sus[m.From]
		if sus == nil {
			sus = &suspicion{since: f.now, inc: m.FromIncarnation, lock: m.Lock, ts: m.ReqTime}
			f.sus[m.From] = sus
			f.suspicions++
			if c.q != nil {
				c.q.nextCheck = c.q.now
			}
		}
		sus.forgedAt = max(f.now, 1)
	}
	return fmt.Errorf("%w: %s: %v", ErrForged, why, m)
}
