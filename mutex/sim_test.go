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
)

// The simulation drives several cores through an in-memory network that
// delivers events in a seeded random order (no FIFO), with local openers
// acquiring, trying, cancelling and releasing at random, and peers joining,
// crashing, leaving, restarting and losing connections. After every step it
// checks the safety invariants; at quiescence, liveness. A failing run prints
// its seed and a trace, and replays exactly with DLOCKFS_SEED=seed.

type simConfig struct {
	peers     int  // initial peers (2..7)
	maxPeers  int  // peers that may exist at once, with joins
	locks     int  // lock names (1..3)
	steps     int  // random steps before quiescence
	cancels   bool // openers cancel (are interrupted)
	tries     bool // try-locks
	faults    bool // crash, leave, join, restart
	breaks    bool // connections break: messages lost, then resent
	suspects  bool // live peers wrongly declared failed, then back
	keepPerms bool // Roucairol–Carvalho
	shared    bool // a third of the openers are readers (shared holds)
	bug       bool // inject the half-given-up permission bug
	rwBug     string
}

type evKind uint8

const (
	evMsg evKind = iota
	evAdd
	evRemove
	evReconnect
	evUnsuspect // add back a member removed by a false suspicion
)

type simEvent struct {
	kind  evKind
	at    string // receiving peer
	atInc uint64 // its incarnation when the event was made
	msg   Message
	name  string // member added/removed/reconnected
	inc   uint64
}

type simOpener struct {
	id      OpenerID
	peer    string
	inc     uint64
	lock    string
	try     bool
	shared  bool
	granted bool
	tainted bool // granted while a suspicion was in force, or overlapping one that was
	// writers are the writers' requests (peer -> timestamp) that this
	// reader's peer deferred when it arrived: timestamp order puts it
	// behind them.
	writers map[string]uint64
}

// conflicts reports whether holds a and b may not overlap.
func (o *simOpener) conflicts(b *simOpener) bool { return !(o.shared && b.shared) }

// tokens checks the readers–writers token rule for one lock: an exclusive
// grant's token is above every earlier grant's, a shared grant's above
// every earlier exclusive grant's.
type tokens struct {
	lastExcl, maxAll uint64
}

// grant records a grant, returning what is wrong with its token, if
// anything; reset (after a crash) makes it the new baseline unchecked.
func (t *tokens) grant(token uint64, shared, reset bool) string {
	var bad string
	switch {
	case reset:
		t.lastExcl, t.maxAll = 0, 0
	case shared && token <= t.lastExcl:
		bad = fmt.Sprintf("token of a shared grant %d not above the last exclusive one %d", token, t.lastExcl)
	case !shared && token <= t.maxAll:
		bad = fmt.Sprintf("token did not rise: exclusive grant %d after %d", token, t.maxAll)
	}
	if !shared {
		t.lastExcl = max(t.lastExcl, token)
	}
	t.maxAll = max(t.maxAll, token)
	return bad
}

// deferredWriters returns the writers' requests that core c defers on lock.
func deferredWriters(c *Core, lock string) map[string]uint64 {
	l := c.locks[lock]
	if l == nil {
		return nil
	}
	var ws map[string]uint64
	for p, in := range l.in {
		if in.state == inDeferred && !in.shared {
			if ws == nil {
				ws = map[string]uint64{}
			}
			ws[p] = in.ts
		}
	}
	return ws
}

// overtakes reports a writer's request that reader o's peer deferred when
// o arrived and still defers now that o is granted: o ignored an earlier
// writer.
func overtakes(c *Core, o *simOpener) string {
	now := deferredWriters(c, o.lock)
	for p, ts := range o.writers {
		if now[p] == ts {
			return fmt.Sprintf("reader op%d at %s granted past %s's earlier writer request %d", o.id, o.peer, p, ts)
		}
	}
	return ""
}

// setBugs injects the readers–writers fault named (see Core).
func setBugs(c *Core, bug string) {
	switch bug {
	case "":
	case "joinpastwriter":
		c.bugJoinPastWriter = true
	case "sharedtoken":
		c.bugSharedToken = true
	case "readeranswerswriter":
		c.bugReaderAnswersWriter = true
	case "readersconflict":
		c.bugReadersConflict = true
	case "sharedpermserveswriter":
		c.bugSharedPermServesWriter = true
	default:
		panic("unknown bug " + bug)
	}
}

type simPeer struct {
	name    string
	inc     uint64
	core    *Core
	openers []*simOpener // waiting or holding, in creation order
}

type sim struct {
	t       testing.TB
	seed    int64
	cfg     simConfig
	rng     *rand.Rand
	live    map[string]*simPeer
	pending []simEvent
	nextOp  OpenerID
	nextInc uint64
	holder  map[string][]*simOpener // lock -> cluster-wide holders (more than one only under suspicion)
	// suspicions counts false suspicions in force: a live peer removed
	// at another peer, to be added back with the same incarnation. While
	// one is in force, two holders are allowed (a wrong failure detector
	// is documented as unsafe); liveness must hold regardless.
	suspicions int
	tok        map[string]*tokens // lock -> the token rule's state
	exempt     map[string]bool    // lock -> a crash since the last grant
	trace      []traceEntry       // ring buffer, formatted only on failure
	bugHits    int                // decisions the planted bug changed, over every core of the run
	traceAt    int
	stats      simStats
	failed     string
}

type traceEntry struct {
	step   int
	format string
	args   []any
}

type simStats struct {
	steps, grants, refusals, msgs, delivered, dropped, crashes, joins, leaves, breaks, suspicions, exempted int
}

func lockName(i int) string { return "l" + strconv.Itoa(i) }
func peerName(i int) string { return "p" + strconv.Itoa(i) }

func newSim(t testing.TB, seed int64, cfg simConfig) *sim {
	s := &sim{
		t: t, seed: seed, cfg: cfg, rng: rand.New(rand.NewSource(seed)),
		live:   map[string]*simPeer{},
		holder: map[string][]*simOpener{}, tok: map[string]*tokens{}, exempt: map[string]bool{},
	}
	for i := 0; i < cfg.peers; i++ {
		s.boot(peerName(i))
	}
	names := s.liveNames()
	for _, n := range names {
		for _, m := range names {
			s.live[n].core.AddMember(m, s.live[m].inc)
		}
		s.drain(s.live[n])
	}
	return s
}

func (s *sim) boot(name string) *simPeer {
	s.nextInc++
	c, err := New(Config{Name: name, Incarnation: s.nextInc, KeepPermissions: s.cfg.keepPerms})
	if err != nil {
		s.t.Fatal(err)
	}
	c.bugKeepPermOnRelease = s.cfg.bug
	setBugs(c, s.cfg.rwBug)
	p := &simPeer{name: name, inc: s.nextInc, core: c}
	s.live[name] = p
	return p
}

func (s *sim) liveNames() []string {
	ns := make([]string, 0, len(s.live))
	for n := range s.live {
		ns = append(ns, n)
	}
	slices.Sort(ns)
	return ns
}

func (s *sim) logf(format string, args ...any) {
	e := traceEntry{s.stats.steps, format, args}
	if len(s.trace) < 300 {
		s.trace = append(s.trace, e)
		return
	}
	s.trace[s.traceAt] = e
	s.traceAt = (s.traceAt + 1) % len(s.trace)
}

func (s *sim) fail(format string, args ...any) {
	if s.failed == "" {
		s.failed = fmt.Sprintf(format, args...)
	}
}

// drain performs one peer's outputs: messages into the network, grants and
// refusals to its openers, checking the invariants as grants happen.
func (s *sim) drain(p *simPeer) {
	s.checkCore(p)
	s.bugHits += p.core.hits
	p.core.hits = 0
	rd := p.core.Ready()
	for _, m := range rd.Messages {
		s.stats.msgs++
		s.pending = append(s.pending, simEvent{kind: evMsg, at: m.To, msg: m})
	}
	for _, g := range rd.Grants {
		o := p.opener(g.Opener)
		if o == nil || o.granted || o.lock != g.Lock {
			s.fail("grant %+v to unknown or granted opener at %s", g, p.name)
			continue
		}
		s.logf("grant %s op%d %s token %d shared=%v", p.name, g.Opener, g.Lock, g.Token, g.Shared)
		if g.Shared != o.shared {
			s.fail("grant %+v to op%d in the wrong mode", g, o.id)
		}
		hs := s.holder[g.Lock]
		o.tainted = s.suspicions > 0
		for _, h := range hs {
			o.tainted = o.tainted || h.tainted
		}
		for _, h := range hs {
			if h.conflicts(o) && !o.tainted {
				s.fail("mutual exclusion violated on %s: %s op%d holds (shared=%v), %s op%d granted (shared=%v)",
					g.Lock, h.peer, h.id, h.shared, p.name, g.Opener, o.shared)
				break
			}
		}
		if o.shared && !o.tainted {
			if bad := overtakes(p.core, o); bad != "" {
				s.fail("timestamp order violated on %s: %s", g.Lock, bad)
			}
		}
		t := s.tok[g.Lock]
		if t == nil {
			t = &tokens{}
			s.tok[g.Lock] = t
		}
		reset := s.exempt[g.Lock] || o.tainted
		if reset {
			s.stats.exempted++
		}
		if bad := t.grant(g.Token, o.shared, reset); bad != "" {
			s.fail("%s on %s", bad, g.Lock)
		}
		s.exempt[g.Lock] = o.tainted
		o.granted = true
		s.holder[g.Lock] = append(hs, o)
		s.stats.grants++
	}
	for _, r := range rd.Refusals {
		s.logf("refuse %s op%d %s", p.name, r.Opener, r.Lock)
		s.stats.refusals++
		p.removeOpener(r.Opener)
	}
}

// unhold ends o's hold in the cluster-wide view.
func (s *sim) unhold(o *simOpener) {
	s.holder[o.lock] = slices.DeleteFunc(s.holder[o.lock], func(h *simOpener) bool { return h == o })
}

func (p *simPeer) opener(id OpenerID) *simOpener {
	for _, o := range p.openers {
		if o.id == id {
			return o
		}
	}
	return nil
}

// forgetWriter drops, from what p's readers wait behind, the requests of
// member name, which p forgets when it removes name.
func (p *simPeer) forgetWriter(name string) {
	for _, o := range p.openers {
		delete(o.writers, name)
	}
}

func (p *simPeer) removeOpener(id OpenerID) {
	p.openers = slices.DeleteFunc(p.openers, func(o *simOpener) bool { return o.id == id })
}

func (s *sim) pickPeer() *simPeer {
	ns := s.liveNames()
	if len(ns) == 0 {
		return nil
	}
	return s.live[ns[s.rng.Intn(len(ns))]]
}

func (s *sim) acquire(p *simPeer, try bool) {
	s.nextOp++
	o := &simOpener{id: s.nextOp, peer: p.name, inc: p.inc, lock: lockName(s.rng.Intn(s.cfg.locks)), try: try}
	o.shared = s.cfg.shared && s.rng.Intn(3) == 0
	if o.shared {
		o.writers = deferredWriters(p.core, o.lock)
	}
	p.openers = append(p.openers, o)
	var err error
	switch {
	case try && o.shared:
		s.logf("try shared %s op%d %s", p.name, o.id, o.lock)
		err = p.core.TryAcquireShared(o.id, o.lock)
	case try:
		s.logf("try %s op%d %s", p.name, o.id, o.lock)
		err = p.core.TryAcquire(o.id, o.lock)
	case o.shared:
		s.logf("acquire shared %s op%d %s", p.name, o.id, o.lock)
		err = p.core.AcquireShared(o.id, o.lock)
	default:
		s.logf("acquire %s op%d %s", p.name, o.id, o.lock)
		err = p.core.Acquire(o.id, o.lock)
	}
	if err != nil {
		s.fail("acquire: %v", err)
	}
	s.drain(p)
}

func (s *sim) release(p *simPeer, o *simOpener) {
	s.logf("release %s op%d %s", p.name, o.id, o.lock)
	s.unhold(o)
	p.removeOpener(o.id)
	if err := p.core.Release(o.id); err != nil {
		s.fail("release: %v", err)
	}
	s.drain(p)
}

func (s *sim) cancel(p *simPeer, o *simOpener) {
	s.logf("cancel %s op%d %s granted=%v", p.name, o.id, o.lock, o.granted)
	if o.granted {
		s.unhold(o)
	}
	p.removeOpener(o.id)
	p.core.Cancel(o.id)
	s.drain(p)
}

// deliver hands one pending event, chosen at random, to its peer.
func (s *sim) deliver() {
	i := s.rng.Intn(len(s.pending))
	ev := s.pending[i]
	s.pending = slices.Delete(s.pending, i, i+1)
	p := s.live[ev.at]
	if ev.kind == evUnsuspect {
		s.suspicions--
	}
	if p == nil || (ev.kind != evMsg && p.inc != ev.atInc) {
		s.stats.dropped++
		return
	}
	switch ev.kind {
	case evMsg:
		s.stats.delivered++
		err := p.core.Step(ev.msg)
		s.logf("deliver %v: %v", ev.msg, err)
		s.checkWellFormed(ev.msg, err)
	case evAdd:
		if q := s.live[ev.name]; q == nil || q.inc != ev.inc {
			return // it died meanwhile: Serf would not report the join
		}
		s.logf("add at %s: %s/%d", p.name, ev.name, ev.inc)
		if inc, ok := p.core.members[ev.name]; ok && inc != ev.inc {
			p.forgetWriter(ev.name) // a restart: the old life's requests go
		}
		p.core.AddMember(ev.name, ev.inc)
	case evRemove:
		if p.core.members[ev.name] != ev.inc {
			return // already replaced by a newer incarnation
		}
		s.logf("remove at %s: %s/%d", p.name, ev.name, ev.inc)
		p.forgetWriter(ev.name)
		p.core.RemoveMember(ev.name)
	case evReconnect:
		s.logf("reconnected at %s: %s", p.name, ev.name)
		p.core.Reconnected(ev.name)
	case evUnsuspect:
		if q := s.live[ev.name]; q == nil || q.inc != ev.inc {
			// It left or died while suspected: p dropped what it
			// said meanwhile (its last hello too), so, as after a
			// crash, tokens may not rise past its own.
			for l := range s.tok {
				s.exempt[l] = true
			}
			return
		}
		s.logf("unsuspect at %s: %s/%d", p.name, ev.name, ev.inc)
		p.core.AddMember(ev.name, ev.inc)
	}
	s.drain(p)
}

// checkWellFormed fails the run if a core took a message another sent for
// malformed: cores never send what they reject.
func (s *sim) checkWellFormed(m Message, err error) {
	if errors.Is(err, ErrMalformed) {
		s.fail("malformed: %s sent %v: %v", m.From, m, err)
	}
}

// flushFrom delivers, in random order, every message p has in flight.
func (s *sim) flushFrom(p *simPeer) {
	for i := 0; i < 10_000; i++ {
		var idx []int
		for j, ev := range s.pending {
			if ev.kind == evMsg && ev.msg.From == p.name && ev.msg.FromIncarnation == p.inc {
				idx = append(idx, j)
			}
		}
		if len(idx) == 0 {
			return
		}
		j := idx[s.rng.Intn(len(idx))]
		ev := s.pending[j]
		s.pending = slices.Delete(s.pending, j, j+1)
		if q := s.live[ev.at]; q != nil {
			err := q.core.Step(ev.msg)
			s.logf("deliver %v: %v", ev.msg, err)
			s.checkWellFormed(ev.msg, err)
			s.drain(q)
		}
	}
}

// gone takes peer p out of the cluster; crash loses its messages in flight.
func (s *sim) gone(p *simPeer, crash bool) {
	delete(s.live, p.name)
	for _, o := range p.openers {
		if o.granted {
			s.unhold(o)
		}
	}
	if crash {
		s.stats.crashes++
		for l := range s.tok {
			s.exempt[l] = true
		}
		s.pending = slices.DeleteFunc(s.pending, func(ev simEvent) bool {
			return ev.kind == evMsg && ev.msg.From == p.name && ev.msg.FromIncarnation == p.inc
		})
	}
	for _, n := range s.liveNames() {
		s.pending = append(s.pending, simEvent{kind: evRemove, at: n, atInc: s.live[n].inc, name: p.name, inc: p.inc})
	}
}

func (s *sim) fault() {
	r := s.rng.Intn(100)
	switch {
	case r < 30 && len(s.live) > 1: // crash
		p := s.pickPeer()
		s.logf("crash %s/%d", p.name, p.inc)
		s.gone(p, true)
	case r < 50 && len(s.live) > 1: // graceful leave
		p := s.pickPeer()
		s.logf("leave %s/%d", p.name, p.inc)
		s.stats.leaves++
		for _, n := range s.liveNames() {
			if inc, ok := p.core.members[n]; (!ok || inc != s.live[n].inc) && n != p.name {
				// p never learned of n (this life of it): its tokens
				// cannot reach n.
				for l := range s.tok {
					s.exempt[l] = true
				}
			}
		}
		p.core.Shutdown()
		for _, o := range p.openers {
			if o.granted {
				s.unhold(o)
			}
		}
		p.openers = nil
		s.drain(p)
		// The driver flushes its lock messages before it leaves Serf:
		// they reach their peers before the news of the leave does.
		s.flushFrom(p)
		s.gone(p, false)
	case r < 100 && len(s.live) < s.cfg.maxPeers: // join or restart
		var name string
		for i := 0; ; i++ {
			if s.live[peerName(i)] == nil {
				name = peerName(i)
				break
			}
		}
		p := s.boot(name)
		s.stats.joins++
		s.logf("join %s/%d", name, p.inc)
		for _, n := range s.liveNames() {
			if n == name {
				continue
			}
			p.core.AddMember(n, s.live[n].inc) // the joiner learns everyone at once
			s.pending = append(s.pending, simEvent{kind: evAdd, at: n, atInc: s.live[n].inc, name: name, inc: p.inc})
		}
		s.drain(p)
	}
}

// suspect makes peer a wrongly believe that live peer b failed, as a
// starved or cut-off peer would be by Serf, and queues the correction.
func (s *sim) suspect() {
	a, b := s.pickPeer(), s.pickPeer()
	if a == nil || a == b || a.core.members[b.name] != b.inc {
		return
	}
	s.stats.suspicions++
	s.suspicions++
	s.logf("suspect at %s: %s/%d", a.name, b.name, b.inc)
	a.forgetWriter(b.name) // a wrongly drops b's requests: documented unsafe
	a.core.RemoveMember(b.name)
	s.drain(a)
	s.pending = append(s.pending, simEvent{kind: evUnsuspect, at: a.name, atInc: a.inc, name: b.name, inc: b.inc})
}

// breakConn breaks the one-way channel from a to b: every message in flight
// from a to b is lost, and only a, the sender, learns of it when it
// reconnects (as with the transport's outgoing connections).
func (s *sim) breakConn() {
	a, b := s.pickPeer(), s.pickPeer()
	if a == nil || a == b {
		return
	}
	s.stats.breaks++
	s.logf("break %s->%s", a.name, b.name)
	s.pending = slices.DeleteFunc(s.pending, func(ev simEvent) bool {
		return ev.kind == evMsg && ev.msg.From == a.name && ev.msg.To == b.name
	})
	s.pending = append(s.pending, simEvent{kind: evReconnect, at: a.name, atInc: a.inc, name: b.name})
}

func (s *sim) randomStep() {
	s.stats.steps++
	if len(s.pending) > 0 && s.rng.Intn(100) < 55 {
		s.deliver()
		return
	}
	p := s.pickPeer()
	if p == nil {
		return
	}
	r := s.rng.Intn(1000)
	switch {
	case r < 300:
		if len(p.openers) < 4 {
			s.acquire(p, false)
		}
	case r < 380:
		if s.cfg.tries && len(p.openers) < 4 {
			s.acquire(p, true)
		}
	case r < 800:
		for _, o := range p.openers {
			if o.granted {
				s.release(p, o)
				break
			}
		}
	case r < 900:
		if s.cfg.cancels && len(p.openers) > 0 {
			s.cancel(p, p.openers[s.rng.Intn(len(p.openers))])
		}
	case r < 915:
		if s.cfg.faults {
			s.fault()
		}
	case r < 930:
		if s.cfg.breaks {
			s.breakConn()
		}
	case r < 936:
		if s.cfg.suspects {
			s.suspect()
		}
	}
}

// quiesce delivers everything and releases every hold until nothing moves.
func (s *sim) quiesce() {
	for i := 0; i < 1_000_000 && s.failed == ""; i++ {
		if len(s.pending) > 0 {
			s.deliver()
			continue
		}
		released := false
		for _, n := range s.liveNames() {
			p := s.live[n]
			for _, o := range p.openers {
				if o.granted {
					s.release(p, o)
					released = true
					break
				}
			}
		}
		if !released {
			break
		}
	}
	for _, n := range s.liveNames() {
		p := s.live[n]
		for _, o := range p.openers {
			s.fail("liveness: %s op%d on %s never granted (try=%v)", n, o.id, o.lock, o.try)
		}
		for _, l := range p.core.sortedLocks() {
			for _, in := range l.in {
				if in.state == inDeferred {
					s.fail("liveness: %s still defers a request on %s", n, l.name)
				}
			}
			if l.phase != Idle || len(l.awaiting) > 0 || len(l.queue) > 0 {
				s.fail("liveness: %s lock %s left %v awaiting %v", n, l.name, l.phase, l.awaiting)
			}
		}
	}
}

// checkCore asserts the per-core invariant: while requesting, every member
// has either given its permission or been asked for it.
func (s *sim) checkCore(p *simPeer) {
	{
		n, c := p.name, p.core
		for _, l := range c.locks {
			if l.phase != Requesting {
				continue
			}
			for _, m := range c.names {
				if !c.hasPerm(l, m) && !l.awaiting[m] {
					s.fail("%s requesting %s neither holds nor asked %s's permission", n, l.name, m)
				}
			}
		}
	}
}

// checkReaders asserts that readers that could share do: when nothing is
// in flight (every message delivered, every membership change applied), a
// reader waits only if a writer on its lock waits or holds somewhere (it is
// behind it in timestamp order, or behind a local writer), or if its peer
// defers a writer's request that it cannot know was withdrawn (this
// network, unlike a connection, may deliver a request after its cancel).
// Lost messages (broken connections) and false suspicions can leave a
// withdrawn request deferred until the next release, so they are not
// checked.
func (s *sim) checkReaders() {
	if len(s.pending) > 0 || s.cfg.breaks || s.cfg.suspects || s.cfg.rwBug == "joinpastwriter" {
		return
	}
	writers := map[string]bool{}
	for _, p := range s.live {
		for _, o := range p.openers {
			if !o.shared {
				writers[o.lock] = true
			}
		}
	}
	for _, n := range s.liveNames() {
		for _, o := range s.live[n].openers {
			if o.shared && !o.granted && !writers[o.lock] && len(deferredWriters(s.live[n].core, o.lock)) == 0 {
				s.fail("reader op%d at %s waits on %s though no writer waits or holds", o.id, n, o.lock)
				return
			}
		}
	}
}

func (s *sim) run() {
	for i := 0; i < s.cfg.steps && s.failed == ""; i++ {
		s.randomStep()
		s.checkReaders()
	}
	if s.failed == "" {
		s.quiesce()
	}
}

func (s *sim) report() string {
	var b strings.Builder
	for i := range s.trace {
		e := s.trace[(s.traceAt+i)%len(s.trace)]
		fmt.Fprintf(&b, "%6d %s\n", e.step, fmt.Sprintf(e.format, e.args...))
	}
	return fmt.Sprintf("seed %d (replay: DLOCKFS_SEED=%d DLOCKFS_SOAK=1 go test ./mutex -run '^%s$'): %s\n%s",
		s.seed, s.seed, s.t.Name(), s.failed, b.String())
}

// simConfigFor derives a run's shape from its seed.
func simConfigFor(seed int64, base simConfig) simConfig {
	r := rand.New(rand.NewSource(seed ^ 0x5eed))
	cfg := base
	cfg.peers = 2 + r.Intn(6)
	cfg.maxPeers = cfg.peers + 1
	cfg.locks = 1 + r.Intn(3)
	return cfg
}

func seeds(t *testing.T, n int) []int64 {
	if s := os.Getenv("DLOCKFS_SEED"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("DLOCKFS_SEED: %v", err)
		}
		return []int64{v}
	}
	n /= raceScale
	if testing.Short() {
		n /= 10
	}
	out := make([]int64, n)
	for i := range out {
		out[i] = int64(i + 1)
	}
	return out
}

func runSims(t *testing.T, n int, base simConfig) simStats {
	var total simStats
	for _, seed := range seeds(t, n) {
		s := newSim(t, seed, simConfigFor(seed, base))
		s.run()
		if s.failed != "" {
			t.Fatal(s.report())
		}
		total.add(s.stats)
	}
	t.Logf("seeds %d: %+v", len(seeds(t, n)), total)
	return total
}

func (a *simStats) add(b simStats) {
	a.steps += b.steps
	a.grants += b.grants
	a.refusals += b.refusals
	a.msgs += b.msgs
	a.delivered += b.delivered
	a.dropped += b.dropped
	a.crashes += b.crashes
	a.joins += b.joins
	a.leaves += b.leaves
	a.breaks += b.breaks
	a.suspicions += b.suspicions
	a.exempted += b.exempted
}

var simModes = []struct {
	name string
	cfg  simConfig
}{
	{"plain", simConfig{steps: 1500}},
	{"cancel-try", simConfig{steps: 1500, cancels: true, tries: true}},
	{"faults", simConfig{steps: 1500, cancels: true, tries: true, faults: true, breaks: true}},
	{"suspicion", simConfig{steps: 1500, cancels: true, tries: true, faults: true, breaks: true, suspects: true}},
	{"shared", simConfig{steps: 1500, shared: true}},
	{"shared-cancel-try", simConfig{steps: 1500, cancels: true, tries: true, shared: true}},
	{"shared-faults", simConfig{steps: 1500, cancels: true, tries: true, faults: true, shared: true}},
	{"shared-suspicion", simConfig{steps: 1500, cancels: true, tries: true, faults: true, breaks: true, suspects: true, shared: true}},
}

func TestSimulation(t *testing.T) {
	for _, keep := range []bool{false, true} {
		for _, m := range simModes {
			cfg := m.cfg
			cfg.keepPerms = keep
			t.Run(fmt.Sprintf("%s/keep=%v", m.name, keep), func(t *testing.T) {
				t.Parallel()
				runSims(t, 500, cfg)
			})
		}
	}
}

// TestSimulationMessagesPerGrant: in failure-free runs without cancels and
// try-locks, plain Ricart–Agrawala costs exactly 2(N−1) messages per grant,
// and with kept permissions never more.
func TestSimulationMessagesPerGrant(t *testing.T) {
	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprintf("keep=%v", keep), func(t *testing.T) {
			var grants, msgs, bound int
			for _, seed := range seeds(t, 300) {
				s := newSim(t, seed, simConfigFor(seed, simConfig{steps: 1500, keepPerms: keep}))
				before := s.stats.msgs
				for len(s.pending) > 0 { // the initial hellos
					s.deliver()
				}
				before = s.stats.msgs - before
				s.run()
				if s.failed != "" {
					t.Fatal(s.report())
				}
				n := s.cfg.peers
				got := s.stats.msgs - before - n*(n-1) // hellos
				want := 2 * (n - 1) * s.stats.grants
				if !keep && got != want {
					t.Fatalf("seed %d: %d messages for %d grants with %d peers, want %d", seed, got, s.stats.grants, n, want)
				}
				if keep && got > want {
					t.Fatalf("seed %d: %d messages for %d grants with %d peers, more than %d", seed, got, s.stats.grants, n, want)
				}
				grants += s.stats.grants
				msgs += got
				bound += want
			}
			t.Logf("keep=%v: %d grants, %d messages (%.2f per grant; plain RA bound %.2f)",
				keep, grants, msgs, float64(msgs)/float64(grants), float64(bound)/float64(grants))
		})
	}
}

// TestSimulationCatchesHalfGivenUpPermissions injects the known
// Roucairol–Carvalho bug (keeping a permission while answering the deferred
// requests at release) and requires the simulation to catch a double entry.
func TestSimulationCatchesHalfGivenUpPermissions(t *testing.T) {
	for seed := int64(1); seed <= 500; seed++ {
		s := newSim(t, seed, simConfigFor(seed, simConfig{steps: 1500, keepPerms: true, bug: true}))
		s.run()
		if caughtThrough(t, s, "mutual exclusion violated") {
			return
		}
	}
	t.Fatal("the injected permission bug went unnoticed in 500 seeds")
}

// TestSimulationSharedCatchesBugs injects each mistake of the readers–writers
// rules and requires the simulation to catch it with the check named.
func TestSimulationSharedCatchesBugs(t *testing.T) {
	skipUnderRace(t)
	for _, tc := range []struct {
		bug, caught string
		keep        bool
	}{
		// A reader joins its peer's shared group past a writer's
		// request the peer defers: it ignores an earlier writer.
		{"joinpastwriter", "timestamp order violated", false},
		// A shared grant's token is its request's timestamp, which a
		// writer granted meanwhile may exceed.
		{"sharedtoken", "token of a shared grant", false},
		// A reader's hold answers a writer's request at once.
		{"readeranswerswriter", "mutual exclusion violated", false},
		{"readeranswerswriter", "mutual exclusion violated", true},
		// Readers defer readers: the lock is exclusive in disguise.
		{"readersconflict", "reader op", false},
		// Kept permissions: one a reader gave while it held serves a
		// writer's request.
		{"sharedpermserveswriter", "mutual exclusion violated", true},
	} {
		t.Run(fmt.Sprintf("%s/keep=%v", tc.bug, tc.keep), func(t *testing.T) {
			for seed := int64(1); seed <= 500; seed++ {
				s := newSim(t, seed, simConfigFor(seed, simConfig{steps: 1500, cancels: true, tries: true, shared: true,
					keepPerms: tc.keep, rwBug: tc.bug}))
				s.run()
				if caughtThrough(t, s, tc.caught) {
					return
				}
			}
			t.Fatalf("the injected bug %s went unnoticed in 500 seeds", tc.bug)
		})
	}
}

// soakConfig is the shape of soak run seed: every mode in turn, with and
// without kept permissions, 20,000 steps.
func soakConfig(seed int64) simConfig {
	m := simModes[seed%int64(len(simModes))]
	cfg := m.cfg
	cfg.keepPerms = seed%2 == 0
	cfg.steps = 20_000
	return simConfigFor(seed, cfg)
}

// TestSimulationSoakFinds replays the seeds on which the soak once failed,
// in the soak's configuration.
//   - 1002007: the simulation's own rule was wrong. p0 left and came back
//     as a new incarnation; the last survivor, p1, left before it heard of
//     that one, so nobody alive had seen a token, and the new p0 rightly
//     began again from 2. The rule exempted a leave only where the leaver
//     had never heard of a live peer's name; now also where it knew only
//     an earlier life of it.
func TestSimulationSoakFinds(t *testing.T) {
	for _, seed := range []int64{1002007} {
		s := newSim(t, seed, soakConfig(seed))
		s.run()
		if s.failed != "" {
			t.Fatal(s.report())
		}
	}
}

// TestSimulationSoak runs DLOCKFS_SOAK random steps in total (e.g. 5000000);
// with DLOCKFS_SEED it replays that one soak seed.
func TestSimulationSoak(t *testing.T) {
	total, _ := strconv.Atoi(os.Getenv("DLOCKFS_SOAK"))
	if total == 0 {
		t.Skip("set DLOCKFS_SOAK=steps to soak")
	}
	var st simStats
	first, only := int64(1_000_000), false
	if os.Getenv("DLOCKFS_SEED") != "" {
		first, only = seeds(t, 1)[0], true
	}
	for seed := first; st.steps < total; seed++ {
		s := newSim(t, seed, soakConfig(seed))
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

// caughtThrough reports whether run s was caught by the check named by
// prefix through its planted bug (the bug changed a decision: bugHits), and
// fails the test if s broke without the bug changing anything: a catch
// through another fault is no evidence for the check.
func caughtThrough(t *testing.T, s *sim, prefix string) bool {
	t.Helper()
	switch {
	case s.failed == "":
		return false
	case s.bugHits == 0:
		t.Fatalf("seed %d broke without the planted bug changing a decision: another fault:\n%s", s.seed, s.report())
	case strings.HasPrefix(s.failed, prefix):
		t.Logf("caught at seed %d after %d steps (the bug changed %d decisions): %s", s.seed, s.stats.steps, s.bugHits, s.failed)
		return true
	}
	return false
}

// skipUnderRace skips a planted-bug search under -race: it scans seeds for
// the first catch, and the README's second command runs it without -race.
func skipUnderRace(t *testing.T) {
	t.Helper()
	if raceDetector {
		t.Skip("planted-bug search: run without -race (go test -run Simulation ./mutex)")
	}
}
