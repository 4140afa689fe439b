package mutex

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/hashicorp/serf/serf"
)

// Core is one peer's Ricart–Agrawala state for every named lock. It is not
// safe for concurrent use: one goroutine (the driver) owns it.
type Core struct {
	cfg     Config
	clock   serf.LamportClock
	members map[string]uint64 // name -> incarnation, self excluded
	names   []string          // member names, sorted: every loop is deterministic
	locks   map[string]*lockState
	spare   []*lockState // forgotten lock states, cleared, for reuse
	openers map[OpenerID]*lockState
	peak    int // the most entries locks or openers had since made (see shrink)
	closed  bool
	out     Ready
	ctr     Counters
	q       *quorum // majority mode; nil in QuorumNone
	f       *faults // misbehaving members (faults.go)

	// bugKeepPermOnRelease is a fault injected by tests only: keep the
	// permission of peers we answer on release. The simulation must
	// catch the double entry it allows.
	bugKeepPermOnRelease bool
	// Faults of the readers–writers rules, injected by tests only (the
	// simulation must catch each): bugJoinPastWriter lets a reader join a
	// shared group while a writer's request waits on it; bugSharedToken
	// gives a shared grant its request's timestamp as token, which may be
	// below the last writer's; bugReaderAnswersWriter makes a shared
	// holder answer a writer at once; bugReadersConflict makes readers
	// defer readers.
	bugJoinPastWriter      bool
	bugSharedToken         bool
	bugReaderAnswersWriter bool
	bugReadersConflict     bool
	// bugSharedPermServesWriter lets a permission kept from a shared
	// request serve an exclusive one (the mistake the simulation found
	// first: a reader answers readers while it holds).
	bugSharedPermServesWriter bool
	bugHits
}

// bugHits counts the decisions a planted bug changed, so that a test can
// tell a catch through the bug from one through another fault. Core,
// faults and quorum each embed one.
type bugHits struct{ hits int }

// planted reports whether planted bug is on, counting it when it is: call
// it only where the bug changes the decision.
func (b *bugHits) planted(bug bool) bool {
	if bug {
		b.hits++
	}
	return bug
}

type waiter struct {
	op     OpenerID
	try    bool
	shared bool
}

// inState is what this peer did with a peer's latest request.
type inState uint8

const (
	inWithdrawn inState = iota // cancelled by its sender
	inDeferred                 // queued until our release
	inReplied                  // permission given
	inBusy                     // try-lock refused
)

// inbound is the latest request seen from one peer for one lock.
type inbound struct {
	ts     uint64
	state  inState
	shared bool // the request is for a shared hold
}

type lockState struct {
	name  string
	queue []waiter // local openers, FIFO; queue[0] is requesting or holding
	// group counts the openers at the head of queue that the outstanding
	// or held request serves: 1 for an exclusive one, 1 or more for a
	// shared one (readers that joined it); 0 while Idle.
	group    int
	shared   bool // the outstanding or held request is shared
	phase    Phase
	reqTime  uint64
	token    uint64
	awaiting map[string]bool // peers asked and not yet answered
	perm     map[string]bool // peers whose permission we hold (only true entries)
	// sharedOnly marks kept permissions given to a shared request: a
	// reader answers a reader even while it holds, so such a permission
	// says only that its giver will not take the lock exclusively
	// without asking us, and serves shared requests only (hasPerm).
	sharedOnly map[string]bool
	in         map[string]*inbound
	// revoked: majority mode revoked the hold (our lease lapsed), but
	// the holder process may still be running: the lock stays held here,
	// its deferred requests unanswered, until the holder releases or
	// revokedAt + Lease/4 (see quorum.go).
	revoked   bool
	revokedAt time.Duration
}

// New returns a core for the peer cfg describes, with no members yet.
func New(cfg Config) (*Core, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Core{
		cfg:     cfg,
		members: map[string]uint64{},
		locks:   map[string]*lockState{},
		openers: map[OpenerID]*lockState{},
		ctr:     Counters{DroppedBy: map[string]uint64{}},
		f:       newFaults(cfg),
	}
	if cfg.Quorum == QuorumMajority {
		c.q = newQuorum(cfg)
		if cfg.HardState != nil {
			c.restore(cfg.HardState)
		}
	}
	return c, nil
}

// ErrClosed is returned by Acquire and TryAcquire after Shutdown.
var ErrClosed = errors.New("peer is shutting down")

// ErrOpener rejects an opener id that is already in use, or a Release by an
// opener that does not hold the lock.
var ErrOpener = errors.New("bad opener")

// maxSpare bounds the forgotten lock states kept for reuse.
const maxSpare = 64

func (c *Core) lock(name string) *lockState {
	l := c.locks[name]
	if l == nil && len(c.spare) > 0 {
		l = c.spare[len(c.spare)-1]
		c.spare = c.spare[:len(c.spare)-1]
		l.name = name
		c.locks[name] = l
	}
	if l == nil {
		l = &lockState{
			name:     name,
			awaiting: map[string]bool{},
			perm:     map[string]bool{},
			in:       map[string]*inbound{},

			sharedOnly: map[string]bool{},
		}
		c.locks[name] = l
	}
	c.peak = max(c.peak, len(c.locks), len(c.openers))
	return l
}

// shrinkBelow is how large a map must have been for shrink to remake it.
const shrinkBelow = 1024

// shrink remakes locks and openers once they hold an eighth of their peak:
// a Go map keeps the memory of its largest size, so a peer that once had
// many locks in use would otherwise never return to idle.
func (c *Core) shrink() {
	if c.peak < shrinkBelow || max(len(c.locks), len(c.openers)) > c.peak/8 {
		return
	}
	c.locks, c.openers = remake(c.locks), remake(c.openers)
	c.peak = max(len(c.locks), len(c.openers))
	c.f.shrink()
}

func (c *Core) sortedLocks() []*lockState {
	ls := make([]*lockState, 0, len(c.locks))
	for _, l := range c.locks {
		ls = append(ls, l)
	}
	sort.Slice(ls, func(i, j int) bool { return ls[i].name < ls[j].name })
	return ls
}

func (c *Core) checkNew(op OpenerID, lock string) error {
	if c.closed {
		return ErrClosed
	}
	if err := ValidLockName(lock); err != nil {
		return err
	}
	if _, dup := c.openers[op]; dup {
		return fmt.Errorf("%w: opener %d is already waiting or holding", ErrOpener, op)
	}
	return nil
}

// Acquire queues local opener op for an exclusive hold of lock; it is
// granted (see Ready) when every member has replied. Openers of one lock on
// one peer are served FIFO.
func (c *Core) Acquire(op OpenerID, lock string) error {
	return c.acquire(op, lock, false)
}

// AcquireShared is Acquire for a shared hold: readers hold together, a
// writer (an exclusive hold) excludes everyone, and requests are served in
// timestamp order, so a reader whose request is later than a writer's waits
// behind it. A local reader joins this peer's shared request or hold, and
// shares its token, unless a writer's request waits on it (then it queues).
func (c *Core) AcquireShared(op OpenerID, lock string) error {
	return c.acquire(op, lock, true)
}

func (c *Core) acquire(op OpenerID, lock string, shared bool) error {
	if err := c.checkNew(op, lock); err != nil {
		return err
	}
	l := c.lock(lock)
	l.queue = append(l.queue, waiter{op: op, shared: shared})
	c.openers[op] = l
	if l.phase == Idle {
		c.startRequest(l)
		return nil
	}
	c.admit(l)
	return nil
}

// TryAcquire is Acquire that must not wait: if the lock is held or wanted
// here, or a member would defer the request, op gets a Refusal instead.
func (c *Core) TryAcquire(op OpenerID, lock string) error {
	return c.tryAcquire(op, lock, false)
}

// TryAcquireShared is AcquireShared that must not wait: it joins a shared
// hold of this peer at once if AcquireShared would, and otherwise behaves
// as TryAcquire (a shared try-lock is refused only by a conflicting hold
// or earlier request).
func (c *Core) TryAcquireShared(op OpenerID, lock string) error {
	return c.tryAcquire(op, lock, true)
}

func (c *Core) tryAcquire(op OpenerID, lock string, shared bool) error {
	if err := c.checkNew(op, lock); err != nil {
		return err
	}
	l := c.lock(lock)
	if shared && l.phase == Holding && l.group == len(l.queue) && c.canJoin(l) {
		l.queue = append(l.queue, waiter{op: op, try: true, shared: true})
		c.openers[op] = l
		c.admit(l)
		return nil
	}
	if len(l.queue) > 0 || !c.leaseValid() {
		c.refuse(op, lock)
		c.forget(l)
		return nil
	}
	l.queue = append(l.queue, waiter{op: op, try: true, shared: shared})
	c.openers[op] = l
	c.startRequest(l)
	return nil
}

// canJoin reports whether a reader queued right behind l's group may join
// it now: the group is a shared request (not a try-lock's, which may yet be
// refused) or a shared hold still in force, and no writer's request waits
// on it here. A writer's request that waits here is earlier than any
// request this reader could make now, so timestamp order puts the reader
// behind it; and while one waits the group does not grow, so the writer
// is served once the group's readers are done.
func (c *Core) canJoin(l *lockState) bool {
	if l.phase == Idle || !l.shared || l.revoked || (l.phase == Requesting && l.queue[0].try) ||
		l.name == cfgLock || !c.leaseValid() {
		return false
	}
	for _, in := range l.in {
		if in.state == inDeferred && !in.shared {
			return c.planted(c.bugJoinPastWriter)
		}
	}
	return true
}

// admit lets the readers queued right behind a shared group join it while
// they may (see canJoin); a reader joining a hold is granted at once, with
// the hold's token.
func (c *Core) admit(l *lockState) {
	for l.group < len(l.queue) && l.queue[l.group].shared && c.canJoin(l) {
		w := l.queue[l.group]
		l.group++
		if l.phase == Holding {
			c.grant(l, w.op)
		}
	}
}

// Cancel withdraws op: a waiting opener leaves the queue without a trace; a
// holder releases. Unknown openers are ignored.
func (c *Core) Cancel(op OpenerID) {
	l := c.openers[op]
	if l == nil {
		return
	}
	i := slices.IndexFunc(l.queue, func(w waiter) bool { return w.op == op })
	if i >= max(l.group, 1) {
		l.queue = slices.Delete(l.queue, i, i+1)
		delete(c.openers, op)
		c.admit(l) // readers queued behind a cancelled writer may join
		return
	}
	if l.group > 1 {
		c.leaveGroup(l, i)
		return
	}
	if l.phase == Holding {
		c.endTurn(l)
		return
	}
	c.withdraw(l)
	c.endTurn(l)
}

// Release ends op's hold: deferred replies go out, then the next local
// waiter's request is made. A reader that is not the last of its group
// only leaves the group.
func (c *Core) Release(op OpenerID) error {
	l := c.openers[op]
	i := -1
	if l != nil && l.phase == Holding {
		i = slices.IndexFunc(l.queue[:l.group], func(w waiter) bool { return w.op == op })
	}
	if i < 0 {
		return fmt.Errorf("%w: opener %d holds no lock", ErrOpener, op)
	}
	if l.group > 1 {
		c.leaveGroup(l, i)
		return nil
	}
	c.endTurn(l)
	return nil
}

// leaveGroup removes reader i of a group of several: the request or hold
// goes on for the others.
func (c *Core) leaveGroup(l *lockState, i int) {
	delete(c.openers, l.queue[i].op)
	l.queue = slices.Delete(l.queue, i, i+1)
	l.group--
}

// startRequest asks every member whose permission we lack for the opener at
// the head of the queue.
// In majority mode a peer without a lease asks nothing: the lock stays idle
// with its openers queued until a lease is granted.
func (c *Core) startRequest(l *lockState) {
	if !c.leaseValid() {
		return
	}
	l.phase = Requesting
	l.reqTime = uint64(c.clock.Increment())
	// The request serves its head and, if that is a blocking reader,
	// every reader queued right behind it (they were waiting for the
	// same turn).
	l.shared, l.group = l.queue[0].shared, 1
	for !l.queue[0].try && l.shared && l.group < len(l.queue) && l.queue[l.group].shared {
		l.group++
	}
	c.noteStamped(l)
	clear(l.awaiting)
	for _, p := range c.raPeers() {
		if !c.hasPerm(l, p) {
			c.ask(l, p)
		}
	}
	c.maybeEnter(l)
}

// hasPerm reports whether the permission of peer p that l keeps serves l's
// outstanding request.
func (c *Core) hasPerm(l *lockState, p string) bool {
	return l.perm[p] && (l.shared || !l.sharedOnly[p] || c.planted(c.bugSharedPermServesWriter))
}

// ask sends peer p the outstanding request of l and awaits its answer (a
// voter we cannot address yet is awaited all the same).
func (c *Core) ask(l *lockState, p string) {
	l.awaiting[p] = true
	c.noteAsked(l, p)
	if _, ok := c.members[p]; ok {
		c.sendRequest(l, p)
	}
}

// sendRequest sends peer p the outstanding request of l (again).
func (c *Core) sendRequest(l *lockState, p string) {
	c.send(Message{Type: MsgRequest, To: p, Lock: l.name, ReqTime: l.reqTime, Try: l.queue[0].try, Shared: l.shared})
}

// forget drops the state of a lock that has nothing left to do here: idle,
// no local opener, no request deferred, no permission kept. What it loses is
// the memory of other peers' latest requests, used to spot stale and
// duplicate ones; without it such a request is answered as new, and its
// sender drops the answer as unexpected. So state stays bounded by the locks
// in use, however many names scripts make up.
//
// It is idempotent: a state already forgotten (a caller looping over a
// snapshot of the locks may hold one) is left alone.
func (c *Core) forget(l *lockState) {
	if c.locks[l.name] != l || l.phase != Idle || len(l.queue) > 0 || len(l.perm) > 0 {
		return
	}
	for _, in := range l.in {
		if in.state == inDeferred {
			return
		}
	}
	delete(c.locks, l.name)
	delete(c.f.stamped, l.name)
	c.shrink()
	if len(c.spare) < maxSpare {
		clear(l.awaiting)
		clear(l.in)
		clear(l.sharedOnly)
		*l = lockState{queue: l.queue[:0], awaiting: l.awaiting, perm: l.perm, in: l.in, sharedOnly: l.sharedOnly}
		c.spare = append(c.spare, l)
	}
}

func (c *Core) maybeEnter(l *lockState) {
	if l.phase != Requesting || len(l.awaiting) > 0 || !c.canEnter() {
		return
	}
	l.phase = Holding
	l.token = uint64(c.clock.Increment())
	if l.shared && c.planted(c.bugSharedToken) {
		l.token = l.reqTime
	}
	if l.name == cfgLock {
		c.cfgGranted(l)
		return
	}
	for _, w := range l.queue[:l.group] {
		c.grant(l, w.op)
	}
	c.admit(l)
}

// grant outputs the grant of l's hold to local opener op: every reader of
// a shared group gets the group's token.
func (c *Core) grant(l *lockState, op OpenerID) {
	c.ctr.Grants++
	c.out.Grants = append(c.out.Grants, Grant{Opener: op, Lock: l.name, Token: l.token, Shared: l.shared})
}

// withdraw sends a cancel to every peer still asked.
func (c *Core) withdraw(l *lockState) {
	for _, p := range c.names {
		if l.awaiting[p] {
			c.send(Message{Type: MsgCancel, To: p, Lock: l.name, ReqTime: l.reqTime})
		}
	}
}

// endTurn removes the head opener (every reader of a shared group), answers every deferred request, then
// starts the next local opener's request.
func (c *Core) endTurn(l *lockState) {
	if l.revoked {
		l.revoked = false
		c.q.revokedHeld--
	}
	n := max(l.group, 1)
	for _, w := range l.queue[:n] {
		delete(c.openers, w.op)
	}
	l.queue = l.queue[n:]
	l.phase, l.group, l.shared = Idle, 0, false
	clear(l.awaiting)
	for _, p := range c.names {
		in := l.in[p]
		if in == nil || in.state != inDeferred || c.holdsBack(p) {
			continue
		}
		in.state = inReplied
		if !l.perm[p] || !c.planted(c.bugKeepPermOnRelease) {
			delete(l.perm, p)
		}
		c.answer(MsgReply, p, l.name, in.ts)
	}
	if !c.cfg.KeepPermissions {
		clear(l.perm)
	}
	if len(l.queue) > 0 {
		c.startRequest(l)
		return
	}
	c.forget(l)
}

// answer sends peer p a reply or a busy for its request ts.
func (c *Core) answer(typ MsgType, p, lock string, ts uint64) {
	c.send(Message{Type: typ, To: p, Lock: lock, ReqTime: ts})
}

func (c *Core) refuse(op OpenerID, lock string) {
	c.ctr.Refusals++
	c.out.Refusals = append(c.out.Refusals, Refusal{Opener: op, Lock: lock})
}

func (c *Core) send(m Message) {
	m.From = c.cfg.Name
	m.FromIncarnation = c.cfg.Incarnation
	m.ToIncarnation = c.members[m.To]
	m.Time = uint64(c.clock.Time())
	m.Seen = c.seenFor(m) // faults.go
	if c.q != nil {
		m.Config, m.Session = c.q.ver, c.q.session
	}
	c.ctr.Sent++
	c.out.Messages = append(c.out.Messages, m)
}

// before reports whether request (t1, n1) precedes request (t2, n2).
func before(t1 uint64, n1 string, t2 uint64, n2 string) bool {
	return t1 < t2 || (t1 == t2 && n1 < n2)
}

// Step processes one incoming message. A message that is rejected is counted
// and leaves the state unchanged, but for a duplicate request, which is
// answered again (its first answer may have been lost with a connection);
// the error wraps one of ErrUnknownPeer, ErrStale, ErrUnexpected,
// ErrDuplicate, ErrMalformed.
func (c *Core) Step(m Message) error {
	c.ctr.Received++
	err := c.step(m)
	if err == nil && (m.Type == MsgReply || m.Type == MsgBusy) {
		c.answered(m.From) // faults.go
	}
	if err != nil {
		c.ctr.Dropped++
		c.ctr.DroppedBy[dropReasonOf(err).String()]++
	}
	return err
}

// dropReason is why Step rejected a message: the key it is counted under.
// It is found from the error's sentinel with errors.Is, never from an
// error's text, so that a new or unwrapped error cannot break the counters
// (or panic): what matches no sentinel counts as dropOther.
type dropReason uint8

// The drop reasons. Their String values are the status file's dropped_by
// keys: append new ones, never rename one (TestDropReasonKeys pins them).
const (
	dropOther dropReason = iota
	dropUnknownPeer
	dropStale
	dropUnexpected
	dropDuplicate
	dropMalformed
	dropConfig
	dropNotVoter
	dropForged // faults.go
	numDropReasons
)

// dropSentinels maps each reason but dropOther to its sentinel, in the
// order they are tried.
var dropSentinels = [numDropReasons]error{
	dropUnknownPeer: ErrUnknownPeer,
	dropStale:       ErrStale,
	dropUnexpected:  ErrUnexpected,
	dropDuplicate:   ErrDuplicate,
	dropMalformed:   ErrMalformed,
	dropConfig:      ErrConfig,
	dropNotVoter:    ErrNotVoter,
	dropForged:      ErrForged,
}

// String returns the reason's dropped_by key.
func (r dropReason) String() string {
	switch r {
	case dropUnknownPeer:
		return "unknown peer"
	case dropStale:
		return "stale"
	case dropUnexpected:
		return "unexpected"
	case dropDuplicate:
		return "duplicate"
	case dropMalformed:
		return "malformed"
	case dropConfig:
		return "voter set version"
	case dropNotVoter:
		return "not a voter"
	case dropForged:
		return "forged"
	}
	return "other"
}

// dropReasonOf classifies a Step error.
func dropReasonOf(err error) dropReason {
	for r, sentinel := range dropSentinels {
		if sentinel != nil && errors.Is(err, sentinel) {
			return dropReason(r)
		}
	}
	return dropOther
}

func (c *Core) step(m Message) error {
	if m.To != c.cfg.Name || m.ToIncarnation != c.cfg.Incarnation {
		return fmt.Errorf("%w: addressed to %s/%d: %v", ErrUnknownPeer, m.To, m.ToIncarnation, m)
	}
	if inc, ok := c.members[m.From]; !ok || inc != m.FromIncarnation {
		return fmt.Errorf("%w: %v", ErrUnknownPeer, m)
	}
	if m.Type < MsgRequest || m.Type > maxMsgType || (c.q == nil && m.Type > MsgHello && m.Type < MsgDeferred) {
		return fmt.Errorf("%w: %v", ErrMalformed, m)
	}
	if m.Type <= MsgCancel && ((ValidLockName(m.Lock) != nil && (c.q == nil || m.Lock != cfgLock)) || m.ReqTime == 0) {
		return fmt.Errorf("%w: %v", ErrMalformed, m)
	}
	if err := c.checkForged(m); err != nil { // faults.go
		return err
	}
	c.clock.Witness(serf.LamportTime(m.Time))
	if c.q != nil {
		if handled, err := c.quorumFilter(m); handled || err != nil {
			return err
		}
	}
	switch m.Type {
	case MsgHello:
		c.resend(m.From)
		c.resendQuorum(m.From)
		return nil
	case MsgRequest:
		return c.onRequest(m)
	case MsgCancel:
		return c.onCancel(m)
	case MsgDeferred, MsgSuspect, MsgProbe:
		return c.onFault(m)
	case MsgBreak:
		return c.onBreak(m) // brk.go
	default:
		return c.onAnswer(m)
	}
}

func (c *Core) onRequest(m Message) error {
	l := c.lock(m.Lock)
	in := l.in[m.From]
	if in != nil && m.ReqTime <= in.ts {
		if m.ReqTime < in.ts || in.state == inWithdrawn {
			return fmt.Errorf("%w: %v", ErrStale, m)
		}
		// The same request again: answer again what we answered.
		switch in.state {
		case inReplied:
			c.answer(MsgReply, m.From, l.name, in.ts)
		case inBusy:
			c.answer(MsgBusy, m.From, l.name, in.ts)
		}
		return fmt.Errorf("%w: %v", ErrDuplicate, m)
	}
	if in == nil {
		in = &inbound{}
		l.in[m.From] = in
	}
	*in = inbound{ts: m.ReqTime, shared: m.Shared}
	// The seed's four cases: holding, or requesting with the earlier
	// (time, name): defer; idle, or requesting with the later: reply.
	// Readers–writers form: only a conflict (either side a writer) is
	// deferred; a reader never waits for a reader.
	conflict := !(l.shared && m.Shared)
	if !conflict && c.planted(c.bugReadersConflict) {
		conflict = true
	}
	if conflict && l.shared && l.phase == Holding && c.planted(c.bugReaderAnswersWriter) {
		conflict = false
	}
	deferIt := conflict && (l.phase == Holding ||
		(l.phase == Requesting && before(l.reqTime, c.cfg.Name, m.ReqTime, m.From)))
	switch {
	case deferIt && m.Try:
		in.state = inBusy
		c.answer(MsgBusy, m.From, l.name, m.ReqTime)
	case deferIt:
		in.state = inDeferred
	default:
		in.state = inReplied
		c.answer(MsgReply, m.From, l.name, m.ReqTime)
		if l.perm[m.From] {
			// We gave away a permission our own request relied on:
			// ask for it again.
			delete(l.perm, m.From)
			if l.phase == Requesting && !l.awaiting[m.From] {
				c.ask(l, m.From)
			}
		}
	}
	c.admit(l) // a newer request may replace a deferred writer's
	c.forget(l)
	return nil
}

func (c *Core) onCancel(m Message) error {
	l := c.locks[m.Lock]
	if l == nil {
		// Nothing of that lock here, so nothing deferred to withdraw.
		// (A request overtaken by its cancel is then answered as new,
		// and its sender drops the answer.)
		return nil
	}
	in := l.in[m.From]
	if in == nil {
		in = &inbound{}
		l.in[m.From] = in
	}
	if m.ReqTime < in.ts || (m.ReqTime == in.ts && in.state == inWithdrawn) {
		return fmt.Errorf("%w: %v", ErrStale, m)
	}
	*in = inbound{ts: m.ReqTime, state: inWithdrawn}
	c.admit(l) // readers held back by the withdrawn writer may join
	c.forget(l)
	return nil
}

func (c *Core) onAnswer(m Message) error {
	l := c.locks[m.Lock]
	if l == nil || l.phase != Requesting || m.ReqTime != l.reqTime {
		return fmt.Errorf("%w: %v", ErrUnexpected, m)
	}
	if !l.awaiting[m.From] {
		return fmt.Errorf("%w: %v", ErrDuplicate, m)
	}
	if m.Type == MsgBusy {
		if !l.queue[0].try {
			return fmt.Errorf("%w: busy for a blocking request: %v", ErrUnexpected, m)
		}
		op := l.queue[0].op
		delete(l.awaiting, m.From)
		c.withdraw(l)
		c.refuse(op, l.name)
		c.endTurn(l)
		return nil
	}
	delete(l.awaiting, m.From)
	l.perm[m.From] = true
	l.sharedOnly[m.From] = l.shared
	c.maybeEnter(l)
	return nil
}

// resend sends again every request still awaiting peer p's answer.
func (c *Core) resend(p string) {
	for _, l := range c.sortedLocks() {
		if l.phase == Requesting && l.awaiting[p] {
			c.sendRequest(l, p)
		}
	}
}

// AddMember records peer name (incarnation inc) as a member and sends it a
// hello. Outstanding requests go to it and its reply is awaited. A known
// name with another incarnation is first removed (a restart is a new peer).
func (c *Core) AddMember(name string, inc uint64) {
	if name == c.cfg.Name {
		return
	}
	restarted := false
	if old, ok := c.members[name]; ok {
		if old == inc {
			if c.q != nil {
				c.quorumAddMember(name, inc, false)
			}
			return
		}
		// The old life's answer is replaced by the new one's: ask it
		// before entering, so that its clock (restored above every
		// token its old life issued, in majority mode) is witnessed
		// and fencing tokens keep rising.
		c.forgetMember(name)
		restarted = true
	}
	c.members[name] = inc
	i, _ := slices.BinarySearch(c.names, name)
	c.names = slices.Insert(c.names, i, name)
	c.send(Message{Type: MsgHello, To: name})
	ask := true
	if c.q != nil {
		c.quorumAddMember(name, inc, restarted)
		c.resendQuorum(name)
		if p := c.q.peers[name]; !c.q.isVoter(name) || (p != nil && p.evicted) {
			ask = false
		}
	}
	for _, l := range c.sortedLocks() {
		if l.phase == Requesting && ask {
			c.ask(l, name)
		}
		if restarted {
			c.maybeEnter(l)
			c.admit(l)
			c.forget(l)
		}
	}
}

// RemoveMember records that peer name failed or left: it counts as having
// replied to every request, and its own requests leave the deferred queues.
//
// In majority mode a voter stays one: it counts as having replied only once
// a majority of voters has declared it evicted, after its lease has surely
// expired (see quorum.go).
func (c *Core) RemoveMember(name string) {
	if _, ok := c.members[name]; !ok {
		return
	}
	if c.q != nil && c.quorumRemoveMember(name) {
		return
	}
	c.dropMember(name)
}

// forgetMember removes member name and everything the locks know of it.
func (c *Core) forgetMember(name string) {
	delete(c.members, name)
	if i, ok := slices.BinarySearch(c.names, name); ok {
		c.names = slices.Delete(c.names, i, i+1)
	}
	for _, l := range c.locks {
		delete(l.awaiting, name)
		delete(l.perm, name)
		delete(l.in, name)
	}
}

// dropMember forgets member name: it counts as having replied to every
// request, and its own requests leave the deferred queues.
func (c *Core) dropMember(name string) {
	c.forgetMember(name)
	for _, l := range c.sortedLocks() {
		c.maybeEnter(l)
		c.admit(l)
		c.forget(l)
	}
}

// Reconnected tells the core that the channel to peer name was re-opened,
// so anything sent to it before may have been lost: requests still
// outstanding with it are sent again, and so is a hello, on which the peer
// sends its own outstanding requests again and we answer them again (our
// replies may have been lost too). Duplicates change nothing.
func (c *Core) Reconnected(name string) {
	if _, ok := c.members[name]; ok {
		c.send(Message{Type: MsgHello, To: name})
		c.resend(name)
		c.resendQuorum(name)
	}
}

// Shutdown withdraws every waiting opener and releases every hold, so that
// nobody waits on this peer, before it leaves the cluster. Afterwards the
// core still answers requests (as an idle peer) but takes no new openers.
// The caller fails its own waiters; no Grant or Refusal is output for them.
// Last, every member gets a hello carrying our Lamport time, so the fencing
// tokens we handed out stay below every later one.
func (c *Core) Shutdown() {
	c.closed = true
	for _, l := range c.sortedLocks() {
		if len(l.queue) == 0 {
			continue
		}
		n := max(l.group, 1)
		for _, w := range l.queue[n:] {
			delete(c.openers, w.op)
		}
		l.queue = l.queue[:n]
		for len(l.queue) > 0 && c.locks[l.name] == l && c.openers[l.queue[0].op] == l {
			c.Cancel(l.queue[0].op)
		}
	}
	for _, p := range c.names {
		c.send(Message{Type: MsgHello, To: p})
	}
}

// Ready returns the outputs accumulated since the last call and clears them.
func (c *Core) Ready() Ready {
	r := c.out
	c.out = Ready{}
	r.HardState = c.hardState()
	return r
}

// LockNames returns, sorted, the names of the locks the core has state for:
// used here, or seen in other peers' requests, and not yet forgotten (an
// idle lock with nothing deferred and no kept permission is forgotten).
func (c *Core) LockNames() []string {
	names := make([]string, 0, len(c.locks))
	for n := range c.locks {
		if n != cfgLock {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}

// Lamport returns the current Lamport time.
func (c *Core) Lamport() uint64 { return uint64(c.clock.Time()) }

// Status returns a snapshot of the core.
func (c *Core) Status() Status {
	s := Status{
		Name:        c.cfg.Name,
		Incarnation: c.cfg.Incarnation,
		Lamport:     c.Lamport(),
		Counters:    c.ctr,
	}
	s.Counters.DroppedBy = make(map[string]uint64, len(c.ctr.DroppedBy))
	for k, v := range c.ctr.DroppedBy {
		s.Counters.DroppedBy[k] = v
	}
	for _, n := range c.names {
		s.Members = append(s.Members, MemberStatus{Name: n, Incarnation: c.members[n]})
	}
	s.Quorum = c.quorumStatus()
	for _, l := range c.sortedLocks() {
		if l.name == cfgLock {
			continue
		}
		ls := LockStatus{Name: l.name, Phase: l.phase, Token: l.token, Waiting: len(l.queue)}
		if l.phase != Idle {
			ls.ReqTime = l.reqTime
			ls.Try = l.queue[0].try
			ls.Shared = l.shared
		}
		if l.phase == Holding {
			ls.Holder = l.queue[0].op
			ls.Holders = l.group
			ls.Waiting -= l.group // the holders are not waiting
		}
		for _, p := range c.names {
			if in := l.in[p]; in != nil && in.state == inDeferred {
				ls.Queued = append(ls.Queued, p)
			}
			if l.awaiting[p] {
				ls.Awaiting = append(ls.Awaiting, p)
			}
			if l.perm[p] {
				ls.Permissions = append(ls.Permissions, p)
			}
		}
		s.Locks = append(s.Locks, ls)
	}
	c.faultStatus(&s) // not deferred: a deferred call runs after s is copied out
	return s
}
