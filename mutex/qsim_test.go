package mutex

import (
	"errors"
	"fmt"
	"math/rand"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The majority-mode simulation adds time to sim_test.go's world: every peer
// has a clock running at its own rate (within ±10 % of real time), ticks as
// time passes, and may be paused (it stops stepping, its clock runs on).
// The network can be cut in any shape (majority/minority, bridge, one-way,
// the holder isolated) and healed; Serf's view of each member is updated at
// random moments, so detection is asymmetric, and is sometimes wrong.
// Peers crash, restart, join, leave and are forgotten, during partitions
// too.
//
// After every step: no two peers hold the same lock with a valid lease at
// the same real time (a holder counts until it revokes, or, if its daemon is
// paused, until its lease has expired in real time), and fencing tokens
// strictly rise across the grants of a lock, with no exemption. After the
// heal, at quiescence: every request has been granted.

const (
	qLease = 800 * time.Millisecond
	qDelay = 2 * qLease
)

type qsimConfig struct {
	peers, maxPeers, locks, steps int
	keepPerms                     bool
	faults                        bool // partitions, pauses, crashes, restarts, joins, leaves, forgets
	shared                        bool // a third of the openers are readers
	bug                           string
	answerTimeout                 time.Duration // Config.AnswerTimeout (0: off)
	maxHold                       time.Duration // Config.MaxHold (0: none)
	bad, badPeer                  string        // a Byzantine-lite peer's behaviour and name (fsim_test.go)
	check                         func(*qsim)   // more invariants, after every step
	breaks                        bool          // an operator breaks the hog's holds (fsim_test.go)
	// lone: the only honest peer that asks for locks (fsim_test.go: the
	// other honest voters, idle, have no evidence of their own).
	lone string
	// muteAt: the mute peer answers honestly until then (fsim_test.go).
	muteAt time.Duration
	// punctual: every message due is delivered before time moves on, so
	// that delays are those drawn (with many peers the random steps
	// deliver too few: the backlog would grow without bound).
	punctual bool
}

type qsimPeer struct {
	name     string
	inc      uint64
	core     *Core
	rate     float64
	offset   time.Duration
	boot     time.Duration
	paused   time.Duration // real time it resumes (0: running)
	leaving  time.Duration // real time a graceful leave gives up (0: not leaving)
	openers  []*simOpener
	serf     map[string]uint64 // member -> incarnation its core was told alive
	linkDown map[string]bool   // outgoing links it saw broken
}

func (p *qsimPeer) local(now time.Duration) time.Duration {
	return p.offset + time.Duration(float64(now-p.boot)*p.rate)
}

// realAt is the real time at which p's clock reads l.
func (p *qsimPeer) realAt(l time.Duration) time.Duration {
	return p.boot + time.Duration(float64(l-p.offset)/p.rate)
}

type qmsg struct {
	m  Message
	at time.Duration
}

type qsim struct {
	t       testing.TB
	bugHits int // decisions the planted bug changed, over every core of the run
	seed    int64
	cfg     qsimConfig
	rng     *rand.Rand
	now     time.Duration
	live    map[string]*qsimPeer
	dead    map[string]bool // crashed, not restarted
	pending []qmsg
	hard    map[string]HardState // what each name's stable storage holds
	cut     map[[2]string]bool
	nextOp  OpenerID
	nextInc uint64
	tok     map[string]*tokens
	forged  map[[2]string]bool       // (to, lock/ts) of the misbehaving peer's forged requests
	reports map[string][]FaultReport // by peer: the fault reports (unit tests read them)
	trace   []traceEntry
	traceAt int
	stats   qsimStats
	failed  string
}

type qsimStats struct {
	steps, grants, refusals, revocations, msgs, lost, crashes, restarts, joins, leaves, forgets,
	partitions, pauses, suspicions int
	maxStall time.Duration // longest real time with waiters and no holder
}

func (a *qsimStats) add(b qsimStats) {
	a.steps += b.steps
	a.grants += b.grants
	a.refusals += b.refusals
	a.revocations += b.revocations
	a.msgs += b.msgs
	a.lost += b.lost
	a.crashes += b.crashes
	a.restarts += b.restarts
	a.joins += b.joins
	a.leaves += b.leaves
	a.forgets += b.forgets
	a.partitions += b.partitions
	a.pauses += b.pauses
	a.suspicions += b.suspicions
	a.maxStall = max(a.maxStall, b.maxStall)
}

func newQsim(t testing.TB, seed int64, cfg qsimConfig) *qsim {
	s := &qsim{t: t, seed: seed, cfg: cfg, rng: rand.New(rand.NewSource(seed)),
		live: map[string]*qsimPeer{}, dead: map[string]bool{}, hard: map[string]HardState{}, cut: map[[2]string]bool{}, tok: map[string]*tokens{},
		forged: map[[2]string]bool{}}
	var voters []string
	for i := 0; i < cfg.peers; i++ {
		voters = append(voters, peerName(i))
	}
	for _, n := range voters {
		p := s.boot(n)
		p.core.Tick(p.local(s.now))
		p.core.adopt(1, voters) // a cluster formed before the run
	}
	for _, n := range voters {
		for _, m := range voters {
			s.live[n].core.AddMember(m, s.live[m].inc)
			s.live[n].serf[m] = s.live[m].inc
		}
		s.drain(s.live[n])
	}
	return s
}

func (s *qsim) boot(name string) *qsimPeer {
	s.nextInc++
	var hs *HardState
	if h, ok := s.hard[name]; ok {
		hs = &h
	}
	c, err := New(Config{Name: name, Incarnation: s.nextInc, KeepPermissions: s.cfg.keepPerms,
		Quorum: QuorumMajority, Lease: qLease, LockDelay: qDelay, HardState: hs, AnswerTimeout: s.answerTimeout(name), MaxHold: s.maxHold(name)})
	if err != nil {
		s.t.Fatal(err)
	}
	switch s.cfg.bug {
	case "nodelay":
		c.q.bugNoDelay = true
	case "graceonwake":
		c.q.bugGraceOnWake = true
	case "minoritylease":
		c.q.bugMinorityLease = true
	case "forgetback":
		c.q.bugForgetBack = true
	case "unevictown":
		c.q.bugUnevictOwn = true
	case "forgetback+unevictown":
		c.q.bugForgetBack, c.q.bugUnevictOwn = true, true
	case "trustsuspect":
		c.f.bugTrustSuspect = true
	case "nosuspect":
		c.f.bugNoSuspect = true
	case "noforgery":
		c.f.bugNoForgery = true
	case "nomaxhold":
		c.f.bugNoMaxHold = true
	case "breakgrants":
		c.f.bugBreakGrants = true
	case "latewithhold":
		c.f.bugLateWithhold = true
	case "answersuspect":
		c.f.bugAnswerSuspect = true
	default:
		setBugs(c, s.cfg.bug)
	}
	p := &qsimPeer{name: name, inc: s.nextInc, core: c, rate: 0.9 + 0.2*s.rng.Float64(),
		offset: time.Duration(s.rng.Int63n(int64(time.Hour))), boot: s.now,
		serf: map[string]uint64{}, linkDown: map[string]bool{}}
	s.live[name] = p
	return p
}

func (s *qsim) logf(format string, args ...any) {
	e := traceEntry{s.stats.steps, "%8v " + format, append([]any{s.now.Round(time.Millisecond)}, args...)}
	if len(s.trace) < 400 {
		s.trace = append(s.trace, e)
		return
	}
	s.trace[s.traceAt] = e
	s.traceAt = (s.traceAt + 1) % len(s.trace)
}

func (s *qsim) fail(format string, args ...any) {
	if s.failed == "" {
		s.failed = fmt.Sprintf(format, args...)
	}
}

func (s *qsim) names() []string {
	ns := make([]string, 0, len(s.live))
	for n := range s.live {
		ns = append(ns, n)
	}
	slices.Sort(ns)
	return ns
}

// running returns the live peers that are not paused.
func (s *qsim) running() []*qsimPeer {
	var ps []*qsimPeer
	for _, n := range s.names() {
		if p := s.live[n]; p.paused == 0 {
			ps = append(ps, p)
		}
	}
	return ps
}

func (s *qsim) pick() *qsimPeer {
	ps := s.running()
	if len(ps) == 0 {
		return nil
	}
	return ps[s.rng.Intn(len(ps))]
}

// tick brings p's clock to now and performs what that produced, before
// the input that follows.
func (s *qsim) tick(p *qsimPeer) {
	p.core.Tick(p.local(s.now))
	s.drain(p)
}

// drain performs p's outputs and checks grants.
func (s *qsim) drain(p *qsimPeer) {
	for op, l := range p.core.openers {
		if p.core.locks[l.name] != l || !slices.ContainsFunc(l.queue, func(w waiter) bool { return w.op == op }) {
			s.fail("%s: opener %d points at lock %q (queue %v), not in the core's locks", p.name, op, l.name, l.queue)
		}
	}
	if q := p.core.q; q != nil {
		s.bugHits += q.hits
		q.hits = 0
	}
	s.bugHits += p.core.f.hits + p.core.hits
	p.core.f.hits, p.core.hits = 0, 0
	rd := p.core.Ready()
	if rd.HardState != nil {
		s.hard[p.name] = *rd.HardState
	}
	for _, r := range rd.Faults {
		s.logf("fault at %s: %v", p.name, r)
		if s.reports != nil {
			s.reports[p.name] = append(s.reports[p.name], r)
		}
	}
	for _, r := range rd.Revocations {
		// The holder is told; until it releases (or the core's grace
		// ends) it still counts as holding.
		s.logf("revoke %s op%d %s token %d", p.name, r.Opener, r.Lock, r.Token)
		s.stats.revocations++
	}
	p.openers = slices.DeleteFunc(p.openers, func(o *simOpener) bool {
		if o.granted && p.core.openers[o.id] == nil {
			s.logf("grace over %s op%d %s", p.name, o.id, o.lock)
			return true
		}
		return false
	})
	for _, m := range rd.Messages {
		if p.name == s.cfg.badPeer && s.badDrops(&m) {
			continue
		}
		s.stats.msgs++
		d := time.Duration(s.rng.Int63n(int64(2 * time.Millisecond)))
		if s.rng.Intn(10) == 0 {
			d = time.Duration(s.rng.Int63n(int64(qLease / 2)))
		}
		s.pending = append(s.pending, qmsg{m: m, at: s.now + d})
	}
	for _, g := range rd.Grants {
		o := p.opener(g.Opener)
		if o == nil || o.granted || o.lock != g.Lock {
			s.fail("grant %+v to unknown or granted opener at %s", g, p.name)
			continue
		}
		s.logf("grant %s op%d %s token %d shared=%v", p.name, g.Opener, g.Lock, g.Token, g.Shared)
		t := s.tok[g.Lock]
		if t == nil {
			t = &tokens{}
			s.tok[g.Lock] = t
		}
		if bad := t.grant(g.Token, o.shared, false); bad != "" || g.Shared != o.shared {
			s.fail("%s on %s (grant at %s, shared=%v)", bad, g.Lock, p.name, g.Shared)
		}
		o.granted = true
		s.stats.grants++
	}
	for _, r := range rd.Refusals {
		s.logf("refuse %s op%d %s", p.name, r.Opener, r.Lock)
		s.stats.refusals++
		p.removeOpener(r.Opener)
	}
}

func (p *qsimPeer) opener(id OpenerID) *simOpener {
	for _, o := range p.openers {
		if o.id == id {
			return o
		}
	}
	return nil
}

func (p *qsimPeer) removeOpener(id OpenerID) {
	p.openers = slices.DeleteFunc(p.openers, func(o *simOpener) bool { return o.id == id })
}

// checkExclusion: no valid holder of a lock now together with a valid
// writer of it (readers hold together).
func (s *qsim) checkExclusion() {
	holders := map[string][]string{}
	writers := map[string]bool{}
	for _, n := range s.names() {
		p := s.live[n]
		for _, o := range p.openers {
			if !o.granted {
				continue
			}
			if p.paused != 0 {
				q := p.core.q
				if !q.leased || s.now >= p.realAt(q.leaseUntil) {
					continue // its lease has expired: fencing covers its process
				}
			}
			holders[o.lock] = append(holders[o.lock], fmt.Sprintf("%s op%d shared=%v", n, o.id, o.shared))
			writers[o.lock] = writers[o.lock] || !o.shared
		}
	}
	for l, hs := range holders {
		if len(hs) > 1 && writers[l] {
			s.fail("mutual exclusion violated on %s: %v", l, hs)
		}
	}
}

func (s *qsim) deliver() bool {
	var idx []int
	for i, pm := range s.pending {
		if pm.at <= s.now {
			if p := s.live[pm.m.To]; p == nil || p.paused == 0 {
				idx = append(idx, i)
			}
		}
	}
	if len(idx) == 0 {
		return false
	}
	i := idx[s.rng.Intn(len(idx))]
	pm := s.pending[i]
	s.pending = slices.Delete(s.pending, i, i+1)
	p := s.live[pm.m.To]
	if p == nil {
		return true
	}
	if s.cut[[2]string{pm.m.From, pm.m.To}] {
		s.stats.lost++
		if q := s.live[pm.m.From]; q != nil && q.inc == pm.m.FromIncarnation {
			q.linkDown[pm.m.To] = true // its connection broke: it will reconnect
		}
		return true
	}
	s.tick(p)
	s.badCheck(pm.m)
	err := p.core.Step(pm.m)
	if (pm.m.Type != MsgLease && pm.m.Type != MsgLeaseGrant) || err != nil {
		s.logf("deliver %v: %v", pm.m, err)
	}
	if errors.Is(err, ErrMalformed) && pm.m.From != s.cfg.badPeer {
		// A core never sends what another takes for malformed (a
		// probe about a lock but no request once was).
		s.fail("malformed: %s sent %v: %v", pm.m.From, pm.m, err)
	}
	s.drain(p)
	return true
}

// advance moves real time on; every running peer ticks.
func (s *qsim) advance(max time.Duration) {
	for i := 0; s.cfg.punctual && i < 100_000 && s.deliver(); i++ {
		s.checkExclusion()
	}
	s.now += time.Millisecond + time.Duration(s.rng.Int63n(int64(max)))
	for _, n := range s.names() {
		p := s.live[n]
		if p.paused != 0 && s.now >= p.paused {
			s.logf("resume %s", n)
			p.paused = 0
		}
		if p.paused != 0 {
			continue
		}
		s.tick(p)
		s.drain(p)
		if p.leaving != 0 && (p.core.LeftVoters() || s.now >= p.leaving) {
			s.gone(p, false)
			if !p.core.LeftVoters() || p.core.q.isVoter(p.name) {
				// Still a voter (perhaps the last one, which the
				// cluster cannot do without): as if crashed.
				s.dead[p.name] = true
			}
		}
	}
}

// serfSync updates one peer's view of one member as Serf would, sooner or
// later: alive when both links are up and the member runs.
func (s *qsim) serfSync(a *qsimPeer, bn string) {
	if a.name == bn {
		return
	}
	b := s.live[bn]
	up := b != nil && b.paused == 0 && !s.cut[[2]string{a.name, bn}] && !s.cut[[2]string{bn, a.name}]
	told, ok := a.serf[bn]
	s.tick(a)
	switch {
	case up && (!ok || told != b.inc):
		s.logf("serf at %s: %s/%d alive", a.name, bn, b.inc)
		a.serf[bn] = b.inc
		a.core.AddMember(bn, b.inc)
	case !up && ok:
		s.logf("serf at %s: %s failed", a.name, bn)
		delete(a.serf, bn)
		a.core.RemoveMember(bn)
	}
	if a.linkDown[bn] && !s.cut[[2]string{a.name, bn}] {
		delete(a.linkDown, bn)
		a.core.Reconnected(bn)
	}
	s.drain(a)
}

func sortedKeys(m map[string]bool) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func (s *qsim) allNames() []string {
	set := map[string]bool{}
	for n := range s.live {
		set[n] = true
	}
	for n := range s.dead {
		set[n] = true
	}
	ns := make([]string, 0, len(set))
	for n := range set {
		ns = append(ns, n)
	}
	slices.Sort(ns)
	return ns
}

func (s *qsim) acquire(p *qsimPeer, try bool) {
	s.nextOp++
	o := &simOpener{id: s.nextOp, peer: p.name, inc: p.inc, lock: lockName(s.rng.Intn(s.cfg.locks)), try: try}
	o.shared = s.cfg.shared && s.rng.Intn(3) == 0
	p.openers = append(p.openers, o)
	s.tick(p)
	s.logf("acquire %s op%d %s try=%v shared=%v", p.name, o.id, o.lock, try, o.shared)
	var err error
	switch {
	case try && o.shared:
		err = p.core.TryAcquireShared(o.id, o.lock)
	case try:
		err = p.core.TryAcquire(o.id, o.lock)
	case o.shared:
		err = p.core.AcquireShared(o.id, o.lock)
	default:
		err = p.core.Acquire(o.id, o.lock)
	}
	if err != nil {
		p.removeOpener(o.id) // shutting down
	}
	s.drain(p)
}

func (s *qsim) release(p *qsimPeer, o *simOpener) {
	s.tick(p)
	if p.opener(o.id) == nil {
		return // revoked by the tick
	}
	s.logf("release %s op%d %s", p.name, o.id, o.lock)
	p.removeOpener(o.id)
	if err := p.core.Release(o.id); err != nil {
		s.fail("release: %v", err)
	}
	s.drain(p)
}

func (s *qsim) cancel(p *qsimPeer, o *simOpener) {
	s.tick(p)
	if p.opener(o.id) == nil {
		return // revoked or refused by the tick
	}
	if l := p.core.openers[o.id]; l != nil {
		s.logf("cancel %s op%d %s granted=%v: %q %v queue %v awaiting %v", p.name, o.id, o.lock, o.granted, l.name, l.phase, l.queue, l.awaiting)
	} else {
		s.logf("cancel %s op%d %s granted=%v: unknown to the core", p.name, o.id, o.lock, o.granted)
	}
	p.removeOpener(o.id)
	p.core.Cancel(o.id)
	s.drain(p)
}

// gone takes p out; a crash loses what it had in flight.
func (s *qsim) gone(p *qsimPeer, crash bool) {
	s.logf("gone %s/%d crash=%v voters %d %v left=%v", p.name, p.inc, crash, p.core.q.ver, p.core.q.voters, p.core.LeftVoters())
	delete(s.live, p.name)
	if crash {
		s.stats.crashes++
		s.dead[p.name] = true
		s.pending = slices.DeleteFunc(s.pending, func(pm qmsg) bool {
			return pm.m.From == p.name && pm.m.FromIncarnation == p.inc
		})
	}
}

func (s *qsim) partition() {
	ns := s.allNames()
	if len(ns) < 3 {
		return
	}
	s.stats.partitions++
	clear(s.cut)
	cut2 := func(a, b string) { s.cut[[2]string{a, b}], s.cut[[2]string{b, a}] = true, true }
	s.rng.Shuffle(len(ns), func(i, j int) { ns[i], ns[j] = ns[j], ns[i] })
	switch r := s.rng.Intn(5); r {
	case 0, 1: // split in two
		k := 1 + s.rng.Intn(len(ns)-1)
		for _, a := range ns[:k] {
			for _, b := range ns[k:] {
				cut2(a, b)
			}
		}
		s.logf("partition %v | %v", ns[:k], ns[k:])
	case 2: // bridge: p-r and r-q up, p-q down
		cut2(ns[0], ns[1])
		s.logf("bridge: %s -/- %s", ns[0], ns[1])
	case 3: // one-way loss
		s.cut[[2]string{ns[0], ns[1]}] = true
		s.logf("one-way: %s -> %s lost", ns[0], ns[1])
	case 4: // isolate a holder's peer
		h := ns[0]
		for _, n := range s.names() {
			for _, o := range s.live[n].openers {
				if o.granted {
					h = n
				}
			}
		}
		for _, b := range ns {
			if b != h {
				cut2(h, b)
			}
		}
		s.logf("isolate %s", h)
	}
}

func (s *qsim) fault() {
	r := s.rng.Intn(100)
	switch {
	case r < 25:
		s.partition()
	case r < 40:
		if len(s.cut) > 0 {
			s.logf("heal")
			clear(s.cut)
		}
	case r < 55:
		if p := s.pick(); p != nil {
			p.paused = s.now + qLease/2 + time.Duration(s.rng.Int63n(int64(3*qLease)))
			s.stats.pauses++
			s.logf("pause %s until %v", p.name, p.paused)
		}
	case r < 65:
		if p := s.pick(); p != nil && len(s.live) > 1 {
			s.gone(p, true)
		}
	case r < 75:
		for _, n := range sortedKeys(s.dead) {
			if s.live[n] == nil {
				delete(s.dead, n)
				p := s.boot(n)
				s.stats.restarts++
				s.logf("restart %s/%d", n, p.inc)
				break
			}
		}
	case r < 82:
		if len(s.live)+len(s.dead) < s.cfg.maxPeers {
			for i := 0; ; i++ {
				if n := peerName(i); s.live[n] == nil && !s.dead[n] {
					p := s.boot(n)
					s.stats.joins++
					s.logf("join %s/%d", n, p.inc)
					break
				}
			}
		}
	case r < 88:
		if p := s.pick(); p != nil && p.leaving == 0 && len(s.live) > 2 {
			s.tick(p)
			s.stats.leaves++
			s.logf("leave %s", p.name)
			p.core.Shutdown()
			p.openers = nil
			p.core.LeaveVoters()
			p.leaving = s.now + 4*qLease
			s.drain(p)
		}
	case r < 94:
		p := s.pick()
		for _, n := range sortedKeys(s.dead) {
			if p != nil {
				s.tick(p)
				err := p.core.Forget(n)
				s.logf("forget %s at %s: %v", n, p.name, err)
				if err == nil {
					s.stats.forgets++
					delete(s.dead, n)
				}
				s.drain(p)
			}
			break
		}
	default: // a false suspicion
		a, b := s.pick(), s.pick()
		if a != nil && b != nil && a != b {
			if _, ok := a.serf[b.name]; ok {
				s.stats.suspicions++
				s.tick(a)
				s.logf("suspect at %s: %s", a.name, b.name)
				delete(a.serf, b.name)
				a.core.RemoveMember(b.name)
				s.drain(a)
			}
		}
	}
}

func (s *qsim) randomStep() {
	s.stats.steps++
	r := s.rng.Intn(1000)
	switch {
	case r < 350:
		if !s.deliver() {
			s.advance(qLease / 16)
		}
	case r < 450:
		s.advance(qLease / 16)
	case r < 550:
		if a := s.pick(); a != nil {
			ns := s.allNames()
			s.serfSync(a, ns[s.rng.Intn(len(ns))])
		}
	case r < 980:
		p := s.pick()
		if p == nil || p.leaving != 0 {
			return
		}
		if s.cfg.lone != "" && p.name != s.cfg.lone && p.name != s.cfg.badPeer {
			return
		}
		switch x := s.rng.Intn(100); {
		case x < 35:
			if len(p.openers) < 3 {
				s.acquire(p, false)
			}
		case x < 45:
			if len(p.openers) < 3 {
				s.acquire(p, true)
			}
		case x < 90:
			for _, o := range p.openers {
				if o.granted && !(p.name == s.cfg.badPeer && s.cfg.bad == "hog") {
					s.release(p, o)
					break
				}
			}
		default:
			if len(p.openers) > 0 {
				s.cancel(p, p.openers[s.rng.Intn(len(p.openers))])
			}
		}
	default:
		if s.cfg.faults {
			s.fault()
		}
	}
	s.checkExclusion()
	if s.cfg.check != nil {
		s.cfg.check(s)
	}
}

// quiesce heals everything, restarts the crashed, and runs until every
// request is granted (releasing holds) or a bound passes.
func (s *qsim) quiesce() {
	clear(s.cut)
	for _, p := range s.live {
		p.paused = 0
	}
	// The operator brings back every voter that is gone: a voter stays
	// one until it comes back or is forgotten.
	for _, p := range s.live {
		for _, v := range p.core.q.voters {
			s.dead[v] = true
		}
	}
	for _, n := range sortedKeys(s.dead) {
		delete(s.dead, n)
		if s.live[n] == nil {
			s.boot(n)
		}
	}
	start := s.now
	waitSince := time.Duration(-1)
	for i := 0; i < 200_000 && s.failed == ""; i++ {
		s.stats.steps++
		for _, n := range sortedKeys(s.dead) { // a leave that timed out
			delete(s.dead, n)
			s.boot(n)
		}
		if !s.deliver() {
			s.advance(qLease / 32)
			for _, a := range s.running() {
				for _, b := range s.allNames() {
					s.serfSync(a, b)
				}
			}
		}
		holding, waiting := false, false
		for _, n := range s.names() {
			p := s.live[n]
			if n == s.cfg.badPeer {
				s.badQuiesce(p)
				continue
			}
			for _, o := range p.openers {
				if o.granted {
					holding = true
					if s.rng.Intn(4) == 0 {
						s.release(p, o)
					}
					break
				}
				waiting = true
			}
		}
		switch {
		case waiting && !holding && waitSince < 0:
			waitSince = s.now
		case holding || !waiting:
			if waitSince >= 0 {
				s.stats.maxStall = max(s.stats.maxStall, s.now-waitSince)
			}
			waitSince = -1
		}
		s.checkExclusion()
		if s.cfg.check != nil {
			s.cfg.check(s)
		}
		if !waiting && !holding && s.settled() {
			return
		}
		if s.now-start > 200*qLease {
			break
		}
	}
	for _, n := range s.names() {
		if n == s.cfg.badPeer {
			continue
		}
		for _, o := range s.live[n].openers {
			s.fail("liveness: %s op%d on %s never granted (try=%v) in %v after the heal", n, o.id, o.lock, o.try, s.now-start)
		}
	}
}

// settled: no message deliverable soon, every leave done, every core idle.
func (s *qsim) settled() bool {
	for _, p := range s.live {
		if p.name == s.cfg.badPeer {
			continue
		}
		if p.leaving != 0 {
			return false
		}
		for _, l := range p.core.locks {
			if l.name != cfgLock && (l.phase != Idle || len(l.queue) > 0) {
				return false
			}
		}
	}
	return true
}

func (s *qsim) run() {
	for i := 0; i < s.cfg.steps && s.failed == ""; i++ {
		s.randomStep()
	}
	if s.failed == "" {
		s.quiesce()
	}
}

func (s *qsim) report() string {
	var b strings.Builder
	for i := range s.trace {
		e := s.trace[(s.traceAt+i)%len(s.trace)]
		fmt.Fprintf(&b, "%6d %s\n", e.step, fmt.Sprintf(e.format, e.args...))
	}
	for _, n := range s.names() {
		st := s.live[n].core.Status()
		fmt.Fprintf(&b, "%s/%d: members %v quorum %+v\n", n, s.live[n].inc, st.Members, *st.Quorum)
		for _, l := range s.live[n].core.sortedLocks() {
			fmt.Fprintf(&b, "   lock %q %v req=%d queue=%v awaiting=%v perm=%v", l.name, l.phase, l.reqTime, l.queue, l.awaiting, l.perm)
			for k, in := range l.in {
				fmt.Fprintf(&b, " in[%s]=%+v", k, *in)
			}
			fmt.Fprintln(&b)
		}
		for _, r := range s.live[n].core.q.rounds {
			fmt.Fprintf(&b, "   round %d sent %v grants %v\n", r.seq, r.sentAt, r.grants)
		}
		for v, qp := range s.live[n].core.q.peers {
			fmt.Fprintf(&b, "   peer %s: %+v\n", v, *qp)
		}
		if op := s.live[n].core.q.op; op != nil {
			fmt.Fprintf(&b, "   op %+v changes %v\n", *op, s.live[n].core.q.changes)
		}
	}
	oldest := s.now
	for _, pm := range s.pending {
		oldest = min(oldest, pm.at)
	}
	fmt.Fprintf(&b, "pending %d messages, the oldest due %v ago; misbehaving %q %s\n", len(s.pending), s.now-oldest, s.cfg.badPeer, s.cfg.bad)
	return fmt.Sprintf("seed %d (replay: DLOCKFS_SEED=%d go test ./mutex -run '^%s$'): %s\n%s",
		s.seed, s.seed, s.t.Name(), s.failed, b.String())
}

func qsimConfigFor(seed int64, base qsimConfig) qsimConfig {
	r := rand.New(rand.NewSource(seed ^ 0x9e37))
	cfg := base
	cfg.peers = 3 + r.Intn(3)
	cfg.maxPeers = cfg.peers + 2
	cfg.locks = 1 + r.Intn(2)
	return cfg
}

func runQsims(t *testing.T, n int, base qsimConfig) qsimStats {
	var total qsimStats
	ss := seeds(t, n)
	for _, seed := range ss {
		s := newQsim(t, seed, qsimConfigFor(seed, base))
		s.run()
		if s.failed != "" {
			t.Fatal(s.report())
		}
		total.add(s.stats)
	}
	t.Logf("seeds %d: %+v", len(ss), total)
	return total
}

func TestSimulationMajority(t *testing.T) {
	// Kept permissions (the fast path) are refused in majority mode: with
	// them this simulation finds fencing tokens falling (seed 140).
	for _, faults := range []bool{false, true} {
		for _, shared := range []bool{false, true} {
			t.Run(fmt.Sprintf("faults=%v/shared=%v", faults, shared), func(t *testing.T) {
				t.Parallel()
				runQsims(t, 1000, qsimConfig{steps: 2000, faults: faults, shared: shared})
			})
		}
	}
}

// TestSimulationMajoritySharedCatchesBugs injects mistakes of the
// readers–writers rules into majority mode, with its leases, revocations
// and evictions, and requires the simulation to catch each, through the
// bug (bugHits).
func TestSimulationMajoritySharedCatchesBugs(t *testing.T) {
	skipUnderRace(t)
	for _, bug := range []string{"sharedtoken", "readeranswerswriter"} {
		t.Run(bug, func(t *testing.T) {
			for seed := int64(1); seed <= 500; seed++ {
				s := newQsim(t, seed, qsimConfigFor(seed, qsimConfig{steps: 2000, faults: true, shared: true, bug: bug}))
				s.run()
				if s.failed != "" && s.bugHits == 0 {
					t.Fatalf("seed %d broke without %s changing a decision: another fault:\n%s", seed, bug, s.report())
				}
				if strings.HasPrefix(s.failed, "mutual exclusion") || strings.Contains(s.failed, "token") {
					t.Logf("%s caught at seed %d after %d steps (it changed %d decisions): %s",
						bug, seed, s.stats.steps, s.bugHits, s.failed)
					return
				}
			}
			t.Fatalf("injected bug %s went unnoticed in 500 seeds", bug)
		})
	}
}

// TestSimulationMajorityCatchesBugs injects each known mistake of majority
// mode and requires the simulation to catch it.
func TestSimulationMajorityCatchesBugs(t *testing.T) {
	skipUnderRace(t)
	// Searching from the seeds below (DLOCKFS_BUGSEARCH=1: from seed 1),
	// each bug is caught at: nodelay 763, graceonwake 6300, minoritylease
	// 43; each run starts a little before it to keep CI short. An earlier planted bug, admitalone (commit a voter set change
	// without a majority's acknowledgement), was "caught" at 6300 only
	// through graceonwake, then a real fault of the core; with that fixed
	// it went unnoticed in 20,000 seeds of 2,000 steps and 800 runs of
	// 20,000: one voter at a time, old and new majorities overlap, and the
	// changes are serialised under cfgLock. It is no longer planted.
	for bug, first := range map[string]int64{"nodelay": 500, "graceonwake": 6250, "minoritylease": 1} {
		n := int64(500)
		if os.Getenv("DLOCKFS_BUGSEARCH") != "" { // from seed 1, far
			first, n = 1, 20_000
		}
		t.Run(bug, func(t *testing.T) {
			t.Parallel()
			for seed := first; seed <= first+n; seed++ {
				s := newQsim(t, seed, qsimConfigFor(seed, qsimConfig{steps: 2000, faults: true, bug: bug}))
				s.run()
				if (strings.HasPrefix(s.failed, "mutual exclusion") || strings.HasPrefix(s.failed, "token")) && s.bugHits > 0 {
					// (A failure in a run where the bug changed nothing
					// is another fault's: admitalone was once "caught"
					// so, through graceonwake.)
					t.Logf("%s caught at seed %d after %d steps (it changed %d decisions): %s", bug, seed, s.stats.steps, s.bugHits, s.failed)
					return
				}
				if s.failed != "" && s.bugHits == 0 {
					t.Fatalf("seed %d failed without the planted %s changing anything: %s", seed, bug, s.report())
				}
			}
			t.Fatalf("injected bug %s went unnoticed in 500 seeds from %d", bug, first)
		})
	}
}

// soakQsim is the soak's run for seed: 20,000 steps with faults, readers
// on even seeds.
func soakQsim(t testing.TB, seed int64) *qsim { return soakQsimBug(t, seed, "") }

// soakQsimBug is soakQsim with a planted bug.
func soakQsimBug(t testing.TB, seed int64, bug string) *qsim {
	return newQsim(t, seed, qsimConfigFor(seed, qsimConfig{steps: 20_000, faults: true, shared: seed%2 == 0, bug: bug}))
}

// TestSimulationMajoritySoakFinds replays the seeds on which the soak once
// failed, in the soak's configuration.
//   - 1001151: a voter that declared another before it knew the other's
//     incarnation kept refusing it after learning it, but had dropped its
//     own vote, so it never counted itself and nobody reached a majority:
//     p2's request waited for the dead voter for good.
//   - 1001397 (once that was fixed): a holder whose daemon was paused past
//     its lease, evicted meanwhile and its lock granted elsewhere, started
//     its grace when it woke, holding beside the new holder.
//   - 1005117: an operator's Forget of an evicted voter was committed after
//     the voter had come back in a new session and been granted a lock:
//     the proposer, no longer counting it evicted, stopped waiting for its
//     answer on its own request and was granted the same token (the other
//     had released just before; a longer hold would have overlapped).
//   - 1006506: a voter that took back an eviction it could not confirm
//     (unevict) cleared its own vote with the others', but still declared
//     the voter, so it never declared again nor counted itself: with the
//     others' votes back it stayed one short of a majority, waiting for a
//     dead voter for good (the 1001151 fault, by another path).
func TestSimulationMajoritySoakFinds(t *testing.T) {
	for _, seed := range []int64{1001151, 1001397, 1005117, 1006506} {
		s := soakQsim(t, seed)
		s.run()
		if s.failed != "" {
			t.Fatal(s.report())
		}
	}
}

// TestSimulationMajoritySoakFindsBugs plants, on the seeds where the soak
// found them, the faults fixed since, and requires each run to fail
// through its planted bug:
//   - unevictown on 1006506 fails for liveness (without it the seed passes:
//     TestSimulationMajoritySoakFinds).
//   - forgetback on 1005117: that seed reached the Forget fault only along
//     the unevict fault's path, so both are planted; with unevictown alone
//     the run passes (the Forget check holds), and adding forgetback, the
//     one difference, breaks the token rule.
func TestSimulationMajoritySoakFindsBugs(t *testing.T) {
	for _, tc := range []struct {
		base, bug string
		seed      int64
		want      string
	}{
		{"", "unevictown", 1006506, "liveness"},
		{"unevictown", "forgetback+unevictown", 1005117, "token did not rise"},
	} {
		base := soakQsimBug(t, tc.seed, tc.base)
		base.run()
		if base.failed != "" {
			t.Fatalf("seed %d with %q: %s", tc.seed, tc.base, base.report())
		}
		s := soakQsimBug(t, tc.seed, tc.bug)
		s.run()
		if !strings.HasPrefix(s.failed, tc.want) || s.bugHits <= base.bugHits {
			t.Errorf("%s on seed %d: want a %q failure through the bug; got %d hits (%d without it), failure %q",
				tc.bug, tc.seed, tc.want, s.bugHits, base.bugHits, s.failed)
		} else {
			t.Logf("%s on seed %d: %s", tc.bug, tc.seed, s.failed)
		}
	}
}

// TestSimulationMajoritySoak runs DLOCKFS_QSOAK random steps in total.
func TestSimulationMajoritySoak(t *testing.T) {
	total, _ := strconv.Atoi(os.Getenv("DLOCKFS_QSOAK"))
	if total == 0 {
		t.Skip("set DLOCKFS_QSOAK=steps to soak")
	}
	var st qsimStats
	first, only := int64(1_000_000), false
	if os.Getenv("DLOCKFS_SEED") != "" {
		first, only = seeds(t, 1)[0], true
	}
	for seed := first; st.steps < total; seed++ {
		s := soakQsim(t, seed)
		s.run()
		if s.failed != "" {
			t.Fatal(s.report())
		}
		st.add(s.stats)
		if only {
			break
		}
	}
	t.Logf("soak: %+v", st)
}
