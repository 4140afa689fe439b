package mutex

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

// cluster is a hand-driven set of cores for the rule tests: messages wait in
// outbox until the test delivers them, one by one, in the order it chooses.
type cluster struct {
	t      *testing.T
	cores  map[string]*Core
	outbox []Message
	grants map[OpenerID]Grant
	refuse map[OpenerID]bool
}

func newCluster(t *testing.T, keep bool, names ...string) *cluster {
	t.Helper()
	cl := &cluster{t: t, cores: map[string]*Core{}, grants: map[OpenerID]Grant{}, refuse: map[OpenerID]bool{}}
	for i, n := range names {
		c, err := New(Config{Name: n, Incarnation: uint64(i + 1), KeepPermissions: keep})
		if err != nil {
			t.Fatal(err)
		}
		cl.cores[n] = c
	}
	for _, n := range names {
		for j, m := range names {
			cl.cores[n].AddMember(m, uint64(j+1))
		}
		cl.cores[n].Ready() // the hellos: nothing is outstanding yet
	}
	return cl
}

// collect moves a core's outputs into the cluster.
func (cl *cluster) collect(n string) {
	rd := cl.cores[n].Ready()
	cl.outbox = append(cl.outbox, rd.Messages...)
	for _, g := range rd.Grants {
		cl.grants[g.Opener] = g
	}
	for _, r := range rd.Refusals {
		cl.refuse[r.Opener] = true
	}
}

func (cl *cluster) acquire(n string, op OpenerID, lock string) {
	cl.t.Helper()
	if err := cl.cores[n].Acquire(op, lock); err != nil {
		cl.t.Fatal(err)
	}
	cl.collect(n)
}

// tryAcquire is acquire for TryAcquire: a held lock is refused, not queued.
func (cl *cluster) tryAcquire(n string, op OpenerID, lock string) {
	cl.t.Helper()
	if err := cl.cores[n].TryAcquire(op, lock); err != nil {
		cl.t.Fatal(err)
	}
	cl.collect(n)
}

func (cl *cluster) release(n string, op OpenerID) {
	cl.t.Helper()
	if err := cl.cores[n].Release(op); err != nil {
		cl.t.Fatal(err)
	}
	delete(cl.grants, op)
	cl.collect(n)
}

// take removes and returns the first outgoing message matching.
func (cl *cluster) take(typ MsgType, from, to string) Message {
	cl.t.Helper()
	for i, m := range cl.outbox {
		if m.Type == typ && m.From == from && m.To == to {
			cl.outbox = slices.Delete(cl.outbox, i, i+1)
			return m
		}
	}
	cl.t.Fatalf("no %v %s->%s in flight; outbox %v", typ, from, to, cl.outbox)
	return Message{}
}

func (cl *cluster) has(typ MsgType, from, to string) bool {
	for _, m := range cl.outbox {
		if m.Type == typ && m.From == from && m.To == to {
			return true
		}
	}
	return false
}

func (cl *cluster) deliver(m Message) {
	cl.t.Helper()
	if err := cl.cores[m.To].Step(m); err != nil {
		cl.t.Fatalf("step %v: %v", m, err)
	}
	cl.collect(m.To)
}

// pass delivers the first matching message in flight.
func (cl *cluster) pass(typ MsgType, from, to string) { cl.deliver(cl.take(typ, from, to)) }

// settle delivers everything in flight, oldest first.
func (cl *cluster) settle() {
	for i := 0; len(cl.outbox) > 0 && i < 10_000; i++ {
		m := cl.outbox[0]
		cl.outbox = cl.outbox[1:]
		if err := cl.cores[m.To].Step(m); err != nil && !errors.Is(err, ErrUnexpected) {
			cl.t.Fatalf("step %v: %v", m, err)
		}
		cl.collect(m.To)
	}
}

func (cl *cluster) granted(op OpenerID) bool { _, ok := cl.grants[op]; return ok }

func TestRuleCase1IdleRepliesNow(t *testing.T) {
	cl := newCluster(t, false, "a", "b")
	cl.acquire("a", 1, "x")
	cl.pass(MsgRequest, "a", "b")
	cl.pass(MsgReply, "b", "a")
	if !cl.granted(1) {
		t.Fatal("a not granted after b's reply")
	}
}

func TestRuleCase2HoldingDefersUntilRelease(t *testing.T) {
	cl := newCluster(t, false, "a", "b")
	cl.acquire("a", 1, "x")
	cl.settle()
	cl.acquire("b", 2, "x")
	cl.pass(MsgRequest, "b", "a")
	if cl.has(MsgReply, "a", "b") {
		t.Fatal("holder replied before release")
	}
	if q := cl.cores["a"].Status().Locks[0].Queued; !slices.Equal(q, []string{"b"}) {
		t.Fatalf("queued = %v, want [b]", q)
	}
	cl.release("a", 1)
	cl.pass(MsgReply, "a", "b")
	if !cl.granted(2) {
		t.Fatal("b not granted after a's release")
	}
}

func TestRuleCase3EarlierOwnRequestDefers(t *testing.T) {
	cl := newCluster(t, false, "a", "b")
	cl.acquire("a", 1, "x") // time 1
	cl.cores["b"].clock.Increment()
	cl.cores["b"].clock.Increment()
	cl.acquire("b", 2, "x") // time 3: later than a's
	cl.pass(MsgRequest, "b", "a")
	if cl.has(MsgReply, "a", "b") {
		t.Fatal("a replied to a later request while its own earlier one waits")
	}
	cl.pass(MsgRequest, "a", "b")
	cl.pass(MsgReply, "b", "a")
	if !cl.granted(1) || cl.granted(2) {
		t.Fatal("want a granted first")
	}
	cl.release("a", 1)
	cl.pass(MsgReply, "a", "b")
	if !cl.granted(2) {
		t.Fatal("b not granted after a's release")
	}
}

func TestRuleCase4LaterOwnRequestRepliesNow(t *testing.T) {
	cl := newCluster(t, false, "a", "b", "c")
	cl.acquire("a", 1, "x") // time 1
	cl.cores["b"].clock.Increment()
	cl.acquire("b", 2, "x") // time 2: later
	cl.pass(MsgRequest, "a", "b")
	cl.take(MsgReply, "b", "a") // b replies at once to the earlier request
	// b's own request still waits for a's reply.
	if got := cl.cores["b"].Status().Locks[0].Awaiting; !slices.Contains(got, "a") {
		t.Fatalf("b awaiting %v, want a among them", got)
	}
}

func TestRuleTiesBrokenByName(t *testing.T) {
	cl := newCluster(t, false, "a", "b")
	cl.acquire("a", 1, "x") // both at time 1
	cl.acquire("b", 2, "x")
	cl.pass(MsgRequest, "a", "b")
	cl.pass(MsgRequest, "b", "a")
	if !cl.has(MsgReply, "b", "a") || cl.has(MsgReply, "a", "b") {
		t.Fatalf("with equal times, a (smaller name) must win; outbox %v", cl.outbox)
	}
}

func TestRuleJoinDuringRequest(t *testing.T) {
	cl := newCluster(t, false, "a", "b")
	cl.acquire("a", 1, "x")
	c, _ := New(Config{Name: "c", Incarnation: 9})
	cl.cores["c"] = c
	c.AddMember("a", 1)
	c.AddMember("b", 2)
	cl.collect("c")
	cl.cores["a"].AddMember("c", 9)
	cl.collect("a")
	cl.pass(MsgRequest, "a", "b")
	cl.pass(MsgReply, "b", "a")
	if cl.granted(1) {
		t.Fatal("a entered without the reply of c, which joined during its request")
	}
	cl.pass(MsgRequest, "a", "c")
	cl.pass(MsgReply, "c", "a")
	if !cl.granted(1) {
		t.Fatal("a not granted after c replied")
	}
}

func TestRuleFailureDuringRequest(t *testing.T) {
	cl := newCluster(t, false, "a", "b", "c")
	cl.acquire("c", 3, "x")
	cl.settle() // c holds
	cl.acquire("a", 1, "x")
	cl.pass(MsgRequest, "a", "b")
	cl.pass(MsgReply, "b", "a")
	cl.pass(MsgRequest, "a", "c") // deferred by the holder
	if cl.granted(1) {
		t.Fatal("granted while c holds")
	}
	cl.cores["a"].RemoveMember("c") // c crashed
	cl.collect("a")
	if !cl.granted(1) {
		t.Fatal("a failed member must count as having replied")
	}
}

func TestRuleFailedMemberLeavesDeferredQueue(t *testing.T) {
	cl := newCluster(t, false, "a", "b")
	cl.acquire("a", 1, "x")
	cl.settle()
	cl.acquire("b", 2, "x")
	cl.pass(MsgRequest, "b", "a")
	cl.cores["a"].RemoveMember("b")
	cl.release("a", 1)
	if len(cl.outbox) != 0 {
		t.Fatalf("a answered a failed member: %v", cl.outbox)
	}
}

func TestRuleCancelLeavesNoTrace(t *testing.T) {
	cl := newCluster(t, false, "a", "b")
	cl.acquire("a", 1, "x")
	cl.settle()
	cl.acquire("b", 2, "x")
	cl.pass(MsgRequest, "b", "a") // deferred by a
	cl.cores["b"].Cancel(2)
	cl.collect("b")
	cl.pass(MsgCancel, "b", "a")
	if q := cl.cores["a"].Status().Locks[0].Queued; len(q) != 0 {
		t.Fatalf("a still queues %v after the cancel", q)
	}
	cl.release("a", 1)
	if len(cl.outbox) != 0 {
		t.Fatalf("messages after release to a cancelled requester: %v", cl.outbox)
	}
	// Idle again: b's next request is granted at once.
	cl.acquire("b", 3, "x")
	cl.settle()
	if !cl.granted(3) {
		t.Fatal("b not granted after its cancelled request")
	}
}

func TestRuleLateReplyAfterCancelIgnored(t *testing.T) {
	cl := newCluster(t, false, "a", "b")
	cl.acquire("a", 1, "x")
	cl.pass(MsgRequest, "a", "b")
	reply := cl.take(MsgReply, "b", "a")
	cl.cores["a"].Cancel(1)
	cl.collect("a")
	cl.acquire("a", 2, "x") // a new request with a new timestamp
	if err := cl.cores["a"].Step(reply); !errors.Is(err, ErrUnexpected) {
		t.Fatalf("late reply: err = %v, want ErrUnexpected", err)
	}
	if cl.granted(2) {
		t.Fatal("a late reply to a cancelled request granted the next one")
	}
}

func TestRuleCancelRacingGrantReleases(t *testing.T) {
	cl := newCluster(t, false, "a", "b")
	cl.acquire("a", 1, "x")
	cl.settle()
	if !cl.granted(1) {
		t.Fatal("not granted")
	}
	// The opener was interrupted while the grant was on its way: the
	// driver cancels, which must release.
	cl.acquire("b", 2, "x")
	cl.pass(MsgRequest, "b", "a")
	cl.cores["a"].Cancel(1)
	cl.collect("a")
	cl.pass(MsgReply, "a", "b")
	if !cl.granted(2) {
		t.Fatal("a grant cancelled in a race was not released")
	}
}

func TestRuleTryLock(t *testing.T) {
	cl := newCluster(t, false, "a", "b")
	cl.tryAcquire("a", 1, "x")
	cl.settle()
	if !cl.granted(1) {
		t.Fatal("try-lock on a free lock not granted")
	}
	cl.tryAcquire("b", 2, "x")
	cl.pass(MsgRequest, "b", "a")
	cl.pass(MsgBusy, "a", "b")
	if !cl.refuse[2] {
		t.Fatal("try-lock on a held lock not refused")
	}
	if q := cl.cores["a"].Status().Locks[0].Queued; len(q) != 0 {
		t.Fatalf("a try-lock was queued: %v", q)
	}
	// Local: held here → refused without a message.
	cl.tryAcquire("a", 3, "x")
	if !cl.refuse[3] || len(cl.outbox) != 0 {
		t.Fatal("local try-lock on a held lock must be refused at once")
	}
}

func TestRuleLocalFIFOAndDeferredRepliesFirst(t *testing.T) {
	cl := newCluster(t, false, "a", "b")
	cl.acquire("a", 1, "x")
	cl.settle()
	cl.acquire("a", 2, "x") // queued locally, no message
	if len(cl.outbox) != 0 {
		t.Fatalf("second local opener sent %v", cl.outbox)
	}
	cl.acquire("b", 3, "x")
	cl.pass(MsgRequest, "b", "a")
	cl.release("a", 1)
	// The reply to b goes out before a's next request.
	if len(cl.outbox) < 2 || cl.outbox[0].Type != MsgReply || cl.outbox[1].Type != MsgRequest {
		t.Fatalf("want reply then request, got %v", cl.outbox)
	}
	cl.settle()
	if !cl.granted(3) || cl.granted(2) {
		t.Fatal("b (earlier request) must enter before a's second opener")
	}
	cl.release("b", 3)
	cl.settle()
	if !cl.granted(2) {
		t.Fatal("a's second opener never granted")
	}
}

func TestRuleValidation(t *testing.T) {
	cl := newCluster(t, false, "a", "b")
	a := cl.cores["a"]
	// Time is b's own clock: a message b never sent must not make a
	// claim to have seen a time b never reached (see the forged cases).
	good := Message{Type: MsgRequest, From: "b", FromIncarnation: 2, To: "a", ToIncarnation: 1, Lock: "x",
		Time: cl.cores["b"].Lamport(), ReqTime: 5}
	cases := []struct {
		name string
		m    func(Message) Message
		want error
	}{
		{"unknown peer", func(m Message) Message { m.From = "z"; return m }, ErrUnknownPeer},
		{"old incarnation", func(m Message) Message { m.FromIncarnation = 7; return m }, ErrUnknownPeer},
		{"for another life of us", func(m Message) Message { m.ToIncarnation = 7; return m }, ErrUnknownPeer},
		{"bad type", func(m Message) Message { m.Type = 99; return m }, ErrMalformed},
		{"bad lock name", func(m Message) Message { m.Lock = "a/b"; return m }, ErrMalformed},
		{"zero request time", func(m Message) Message { m.ReqTime = 0; return m }, ErrMalformed},
		{"reply nobody asked for", func(m Message) Message { m.Type = MsgReply; return m }, ErrUnexpected},
		{"busy for unknown lock", func(m Message) Message { m.Type = MsgBusy; m.Lock = "nope"; return m }, ErrUnexpected},
		{"request stamped at a clock it had seen", func(m Message) Message { m.Seen, m.ReqTime = a.Lamport(), a.Lamport(); return m }, ErrForged},
		{"request stamped below a clock it had seen", func(m Message) Message { m.Seen, m.ReqTime = a.Lamport(), 1; return m }, ErrForged},
		{"seen a clock we never reached", func(m Message) Message { m.Seen = a.Lamport() + 1; m.ReqTime = m.Seen + 1; return m }, ErrForged},
		{"time absurdly ahead", func(m Message) Message { m.Time = a.Lamport() + MaxClockJump + 1; return m }, ErrForged},
		{"request time absurdly ahead", func(m Message) Message { m.ReqTime = a.Lamport() + MaxClockJump + 1; return m }, ErrForged},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := a.Step(tc.m(good)); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			rd := a.Ready()
			if forged := errors.Is(tc.want, ErrForged); forged {
				if len(rd.Faults) != 1 || rd.Faults[0].Kind != FaultForged || rd.Faults[0].Peer != "b" {
					t.Fatalf("a forgery was not reported: %+v", rd)
				}
				rd.Faults = nil // the one output a forgery has
			}
			if !rd.Empty() {
				t.Fatalf("a rejected message produced output %+v", rd)
			}
		})
	}
	// While a holds x, b's request is deferred: a copy of it changes
	// nothing, and an older one is stale.
	cl.acquire("a", 1, "x")
	cl.settle()
	if err := a.Step(good); err != nil {
		t.Fatal(err)
	}
	if err := a.Step(good); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("duplicate: %v", err)
	}
	old := good
	old.ReqTime, old.Time = 4, 4
	if err := a.Step(old); !errors.Is(err, ErrStale) {
		t.Fatalf("older request: %v", err)
	}
	if rd := a.Ready(); !rd.Empty() {
		t.Fatalf("duplicate or stale request produced %+v", rd)
	}
	if st := a.Status(); st.Counters.Dropped != uint64(len(cases))+2 {
		t.Fatalf("dropped = %d, want %d", st.Counters.Dropped, len(cases)+2)
	}
	// Once answered, a copy is answered again (the first answer may have
	// been lost with a connection). The idle lock was forgotten, so the
	// copy is simply answered as new.
	cl.release("a", 1)
	cl.take(MsgReply, "a", "b")
	cl.collect("a")
	if err := a.Step(good); err != nil {
		t.Fatalf("copy after the reply: %v", err)
	}
	if rd := a.Ready(); len(rd.Messages) != 1 || rd.Messages[0].Type != MsgReply {
		t.Fatalf("a duplicate request must be answered again, got %+v", rd)
	}
}

// An idle lock with nothing deferred and no kept permission leaves no state
// behind: the core stays bounded by the locks in use.
func TestRuleIdleLocksForgotten(t *testing.T) {
	for _, keep := range []bool{false, true} {
		cl := newCluster(t, keep, "a", "b")
		for i, name := range []string{"x", "y", "z"} {
			op := OpenerID(i + 1)
			cl.acquire("b", op, name)
			cl.settle()
			cl.release("b", op)
			cl.settle()
		}
		if got := cl.cores["a"].LockNames(); len(got) != 0 {
			t.Errorf("keep=%v: a keeps %v", keep, got)
		}
		want := 0
		if keep {
			want = 3 // b keeps a's permission for each
		}
		if got := cl.cores["b"].LockNames(); len(got) != want {
			t.Errorf("keep=%v: b keeps %v, want %d locks", keep, got, want)
		}
		// a took x once, then gave b its permission back: nothing
		// is left to remember about x on a.
		cl.acquire("a", 10, "x")
		cl.settle()
		cl.release("a", 10)
		cl.acquire("b", 11, "x")
		cl.settle()
		cl.release("b", 11)
		cl.settle()
		if got := cl.cores["a"].LockNames(); len(got) != 0 {
			t.Errorf("keep=%v: after giving its permission away a keeps %v", keep, got)
		}
	}
}

func TestRuleRestartIsNewPeer(t *testing.T) {
	cl := newCluster(t, false, "a", "b")
	cl.acquire("a", 1, "x")
	cl.settle()
	cl.acquire("b", 2, "x")
	cl.pass(MsgRequest, "b", "a") // deferred
	// b restarts under the same name: a new incarnation.
	cl.cores["a"].AddMember("b", 42)
	cl.collect("a")
	cl.outbox = nil
	cl.release("a", 1)
	if len(cl.outbox) != 0 {
		t.Fatalf("the old b's request survived its restart: %v", cl.outbox)
	}
}

func TestRuleFencingTokensRise(t *testing.T) {
	cl := newCluster(t, false, "a", "b", "c")
	var last uint64
	for i, n := range []string{"a", "b", "c", "a", "c", "b"} {
		op := OpenerID(i + 1)
		cl.acquire(n, op, "x")
		cl.settle()
		g, ok := cl.grants[op]
		if !ok || g.Token <= last {
			t.Fatalf("grant %d to %s: token %d after %d (granted=%v)", i, n, g.Token, last, ok)
		}
		last = g.Token
		cl.release(n, op)
		cl.settle()
	}
}

func TestRuleKeepPermissionsRepeatEntryIsFree(t *testing.T) {
	cl := newCluster(t, true, "a", "b", "c")
	cl.acquire("a", 1, "x")
	cl.settle()
	cl.release("a", 1)
	var last uint64
	for op := OpenerID(2); op < 10; op++ {
		cl.acquire("a", op, "x")
		if len(cl.outbox) != 0 {
			t.Fatalf("repeat entry sent %v", cl.outbox)
		}
		g := cl.grants[op]
		if g.Token <= last {
			t.Fatalf("token %d after %d", g.Token, last)
		}
		last = g.Token
		cl.release("a", op)
	}
}

// The known Roucairol–Carvalho bug class: re-entering while the replies of a
// release are still in flight. The permissions answered must be asked again.
func TestRuleKeepPermissionsReenterAfterDeferredReplies(t *testing.T) {
	cl := newCluster(t, true, "a", "b")
	cl.acquire("a", 1, "x")
	cl.settle() // a holds b's permission
	cl.acquire("b", 2, "x")
	cl.pass(MsgRequest, "b", "a") // deferred
	cl.release("a", 1)            // reply to b in flight
	cl.acquire("a", 3, "x")       // re-enter at once
	if cl.granted(3) {
		t.Fatal("a re-entered on a permission it had just given away")
	}
	if !cl.has(MsgRequest, "a", "b") {
		t.Fatalf("a did not ask b again: %v", cl.outbox)
	}
	cl.pass(MsgReply, "a", "b")
	if !cl.granted(2) {
		t.Fatal("b not granted")
	}
}

func TestRuleShutdownAnswersEveryone(t *testing.T) {
	cl := newCluster(t, false, "a", "b")
	cl.acquire("a", 1, "x")
	cl.settle()
	cl.acquire("a", 2, "x")
	cl.acquire("b", 3, "x")
	cl.pass(MsgRequest, "b", "a")
	cl.cores["a"].Shutdown()
	cl.collect("a")
	cl.settle()
	if !cl.granted(3) {
		t.Fatal("b still waits on a peer that shut down")
	}
	if err := cl.cores["a"].Acquire(4, "x"); !errors.Is(err, ErrClosed) {
		t.Fatalf("acquire after shutdown: %v", err)
	}
}

func TestValidLockName(t *testing.T) {
	for _, n := range []string{"", ".", "..", "a/b", "a\x00", string(make([]byte, 256))} {
		if ValidLockName(n) == nil {
			t.Errorf("%q accepted", n)
		}
	}
	for _, n := range []string{"lock", "db-migrate", "a.b", "ünï"} {
		if err := ValidLockName(n); err != nil {
			t.Errorf("%q: %v", n, err)
		}
	}
}

// BenchmarkCoreStep measures core steps per second: three cores passing one
// lock around, every message delivered (each Step or local call is a step).
func BenchmarkCoreStep(b *testing.B) {
	for _, keep := range []bool{false, true} {
		name := "plain"
		if keep {
			name = "keep-permissions"
		}
		b.Run(name, func(b *testing.B) {
			names := []string{"a", "b", "c"}
			cores := map[string]*Core{}
			for i, n := range names {
				cores[n], _ = New(Config{Name: n, Incarnation: uint64(i + 1), KeepPermissions: keep})
			}
			for _, n := range names {
				for j, m := range names {
					cores[n].AddMember(m, uint64(j+1))
				}
				cores[n].Ready()
			}
			var queue []Message
			steps := 0
			// deliver steps c's outputs and everything they cause.
			deliver := func(c *Core) {
				queue = append(queue[:0], c.Ready().Messages...)
				for len(queue) > 0 {
					m := queue[0]
					queue = queue[1:]
					_ = cores[m.To].Step(m)
					steps++
					queue = append(queue, cores[m.To].Ready().Messages...)
				}
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				c := cores[names[i%3]]
				op := OpenerID(i + 1)
				_ = c.Acquire(op, "x")
				steps++
				deliver(c)
				_ = c.Release(op)
				steps++
				deliver(c)
			}
			b.ReportMetric(float64(steps)/b.Elapsed().Seconds(), "steps/s")
		})
	}
}

// TestDropCounters feeds one message of every kind of bad input and checks
// that each is counted under its reason's key, never by an error's text.
func TestDropCounters(t *testing.T) {
	cl := newCluster(t, false, "a", "b")
	a := cl.cores["a"]
	ok := Message{Type: MsgRequest, From: "b", FromIncarnation: 2, To: "a", ToIncarnation: 1, Lock: "x", Time: 5, ReqTime: 5}
	bad := func(f func(m *Message)) Message { m := ok; f(&m); return m }
	msgs := map[string]Message{
		"unknown peer": bad(func(m *Message) { m.From = "zz" }),
		"malformed":    bad(func(m *Message) { m.Lock = "a/b" }),
		"unexpected":   bad(func(m *Message) { m.Type = MsgReply; m.Lock = "nothing-asked" }),
	}
	for want, m := range msgs {
		if err := a.Step(m); err == nil {
			t.Errorf("%s: %v accepted", want, m)
		}
	}
	// a requests x first, so it defers b's request and remembers it.
	if err := a.Acquire(1, "x"); err != nil {
		t.Fatal(err)
	}
	if err := a.Step(ok); err != nil {
		t.Fatal(err)
	}
	if err := a.Step(ok); !errors.Is(err, ErrDuplicate) {
		t.Errorf("a copy: %v", err)
	}
	if err := a.Step(bad(func(m *Message) { m.ReqTime = 4 })); !errors.Is(err, ErrStale) {
		t.Errorf("an older request: %v", err)
	}
	got := a.Status().Counters.DroppedBy
	for _, k := range []string{"unknown peer", "malformed", "unexpected", "duplicate", "stale"} {
		if got[k] != 1 {
			t.Errorf("dropped_by[%q] = %d, want 1 (all: %v)", k, got[k], got)
		}
	}
	if got["other"] != 0 {
		t.Errorf("a drop counted as other: %v", got)
	}

	// Majority mode's filters: a request from a member that is not a
	// voter, and one sent under another voter set version.
	q, err := New(Config{Name: "a", Incarnation: 1, Quorum: QuorumMajority, Lease: time.Second, LockDelay: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	q.Bootstrap()
	q.AddMember("b", 2)
	q.Ready()
	req := ok
	req.Config = q.q.ver
	if err := q.Step(req); !errors.Is(err, ErrNotVoter) {
		t.Errorf("a request from a non-voter: %v", err)
	}
	req.Config++
	if err := q.Step(req); !errors.Is(err, ErrConfig) {
		t.Errorf("a request under another voter set: %v", err)
	}
	got = q.Status().Counters.DroppedBy
	for _, k := range []string{"not a voter", "voter set version"} {
		if got[k] != 1 {
			t.Errorf("majority: dropped_by[%q] = %d, want 1 (all: %v)", k, got[k], got)
		}
	}
}

// TestDropReasonKeys pins the dropped_by keys of the status file (they
// must not change) and checks that every sentinel, wrapped or returned
// bare, is counted under its own key and anything else under "other".
func TestDropReasonKeys(t *testing.T) {
	want := []string{"other", "unknown peer", "stale", "unexpected", "duplicate", "malformed", "voter set version", "not a voter", "forged"}
	if int(numDropReasons) != len(want) {
		t.Fatalf("%d drop reasons, %d pinned keys: pin the new key here", numDropReasons, len(want))
	}
	for r := range numDropReasons {
		if got := r.String(); got != want[r] {
			t.Errorf("reason %d is %q, want %q", r, got, want[r])
		}
		sentinel := dropSentinels[r]
		if r == dropOther {
			if sentinel != nil {
				t.Errorf("other has a sentinel %v", sentinel)
			}
			continue
		}
		for _, err := range []error{sentinel, fmt.Errorf("ctx: %w", sentinel), fmt.Errorf("a: %w", fmt.Errorf("b: %w", sentinel))} {
			if got := dropReasonOf(err); got != r {
				t.Errorf("%v counted as %q, want %q", err, got, r)
			}
		}
	}
	for _, err := range []error{nil, errors.New("new"), fmt.Errorf("%v", ErrStale), errors.Join(errors.New("x"))} {
		if got := dropReasonOf(err); got != dropOther {
			t.Errorf("%v counted as %q, want other", err, got)
		}
	}
	// Counting never panics, whatever Step's error is.
	c, err := New(Config{Name: "a", Incarnation: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{nil, ErrStale, errors.New("new")} {
		c.ctr.DroppedBy[dropReasonOf(err).String()]++
	}
	if got := c.Status().Counters.DroppedBy; got["other"] != 2 || got["stale"] != 1 {
		t.Errorf("counters %v", got)
	}
}

// The readers–writers rules (shared locks).

func (cl *cluster) acquireShared(n string, op OpenerID, lock string) {
	cl.t.Helper()
	if err := cl.cores[n].AcquireShared(op, lock); err != nil {
		cl.t.Fatal(err)
	}
	cl.collect(n)
}

func (cl *cluster) tryAcquireShared(n string, op OpenerID, lock string) {
	cl.t.Helper()
	if err := cl.cores[n].TryAcquireShared(op, lock); err != nil {
		cl.t.Fatal(err)
	}
	cl.collect(n)
}

func TestRuleSharedReaderRepliesToReaderWhileHolding(t *testing.T) {
	cl := newCluster(t, false, "a", "b")
	cl.acquireShared("a", 1, "x")
	cl.settle()
	if !cl.granted(1) || !cl.grants[1].Shared {
		t.Fatalf("a not granted a shared hold: %v", cl.grants)
	}
	cl.acquireShared("b", 2, "x")
	cl.pass(MsgRequest, "b", "a")
	cl.pass(MsgReply, "a", "b") // a holds, yet replies: no conflict
	if !cl.granted(2) {
		t.Fatal("reader b waits for reader a")
	}
}

func TestRuleSharedHoldingReaderDefersWriter(t *testing.T) {
	cl := newCluster(t, false, "a", "b")
	cl.acquireShared("a", 1, "x")
	cl.settle()
	cl.acquire("b", 2, "x")
	cl.pass(MsgRequest, "b", "a")
	if cl.has(MsgReply, "a", "b") {
		t.Fatal("a reader in its hold answered a writer")
	}
	reader := cl.grants[1].Token
	cl.release("a", 1)
	cl.pass(MsgReply, "a", "b")
	if !cl.granted(2) {
		t.Fatal("writer b not granted after the reader's release")
	}
	if cl.grants[2].Token <= reader {
		t.Fatalf("writer's token %d not above the reader's", cl.grants[2].Token)
	}
}

func TestRuleSharedEarlierWriterServedFirst(t *testing.T) {
	// b (writer) asks first; a (reader) asks later with a later
	// timestamp: a replies to the earlier writer, b defers the later
	// reader, so the reader waits behind the writer.
	cl := newCluster(t, false, "a", "b")
	cl.acquire("b", 1, "x")
	cl.pass(MsgRequest, "b", "a") // a witnesses b's time
	cl.pass(MsgReply, "a", "b")
	cl.acquireShared("a", 2, "x")
	cl.pass(MsgRequest, "a", "b")
	if cl.has(MsgReply, "b", "a") {
		t.Fatal("a writer answered a reader while holding")
	}
	cl.release("b", 1)
	cl.pass(MsgReply, "b", "a")
	if !cl.granted(2) || cl.grants[2].Token <= cl.grants[1].Token {
		t.Fatalf("reader after writer: grants %v", cl.grants)
	}
}

func TestRuleSharedRequestingReaderDefersLaterWriterOnly(t *testing.T) {
	cl := newCluster(t, false, "a", "b", "c")
	cl.acquireShared("a", 1, "x") // a's request is earlier than both below
	cl.acquireShared("b", 2, "x")
	cl.acquire("c", 3, "x")
	cl.pass(MsgRequest, "b", "a") // reader vs reader: reply, whatever the order
	if !cl.has(MsgReply, "a", "b") {
		t.Fatal("a requesting reader deferred a reader")
	}
	cl.pass(MsgRequest, "c", "a") // later writer: deferred
	if cl.has(MsgReply, "a", "c") {
		t.Fatal("a requesting reader answered a later writer")
	}
}

func TestRuleSharedLocalReaderJoinsHold(t *testing.T) {
	cl := newCluster(t, false, "a", "b")
	cl.acquireShared("a", 1, "x")
	cl.settle()
	cl.acquireShared("a", 2, "x")
	if !cl.granted(2) || cl.grants[2].Token != cl.grants[1].Token {
		t.Fatalf("a second local reader did not join the hold with its token: %v", cl.grants)
	}
	if len(cl.outbox) != 0 {
		t.Fatalf("joining a hold sent %v", cl.outbox)
	}
	if st := cl.cores["a"].Status().Locks[0]; st.Holders != 2 || !st.Shared {
		t.Fatalf("status %+v, want 2 shared holders", st)
	}
	cl.release("a", 1)
	cl.acquire("b", 3, "x")
	cl.pass(MsgRequest, "b", "a")
	if cl.has(MsgReply, "a", "b") {
		t.Fatal("the group answered a writer with a reader still in it")
	}
	cl.release("a", 2)
	cl.pass(MsgReply, "a", "b")
	if !cl.granted(3) {
		t.Fatal("writer not granted after the last reader left")
	}
}

func TestRuleSharedReaderDoesNotJoinPastDeferredWriter(t *testing.T) {
	cl := newCluster(t, false, "a", "b")
	cl.acquireShared("a", 1, "x")
	cl.settle()
	cl.acquire("b", 2, "x")
	cl.pass(MsgRequest, "b", "a") // deferred: a writer waits on a's group
	cl.acquireShared("a", 3, "x")
	if cl.granted(3) {
		t.Fatal("a reader joined past a waiting writer")
	}
	cl.tryAcquireShared("a", 4, "x")
	if !cl.refuse[4] {
		t.Fatal("a shared try-lock joined past a waiting writer")
	}
	cl.release("a", 1)
	cl.pass(MsgReply, "a", "b")
	if !cl.granted(2) {
		t.Fatal("writer not granted")
	}
	cl.pass(MsgRequest, "a", "b") // reader 3's own request, later
	cl.release("b", 2)
	cl.pass(MsgReply, "b", "a")
	if !cl.granted(3) || cl.grants[3].Token <= cl.grants[2].Token {
		t.Fatalf("reader 3 after the writer: %v", cl.grants)
	}
}

func TestRuleSharedTryLock(t *testing.T) {
	cl := newCluster(t, false, "a", "b")
	cl.acquireShared("a", 1, "x")
	cl.settle()
	cl.tryAcquireShared("b", 2, "x")
	cl.settle()
	if !cl.granted(2) {
		t.Fatal("a shared try-lock refused by a reader")
	}
	cl.tryAcquire("b", 3, "x")
	cl.settle()
	if !cl.refuse[3] {
		t.Fatal("an exclusive try-lock granted beside readers")
	}
}

func TestRuleSharedKeptPermissionServesReadersOnly(t *testing.T) {
	// With kept permissions, a permission a reader gave while it held
	// must not let the other peer take the lock exclusively.
	cl := newCluster(t, true, "a", "b")
	cl.acquireShared("a", 1, "x")
	cl.settle()
	cl.acquireShared("b", 2, "x")
	cl.settle() // b keeps a's permission, given while a holds
	cl.release("b", 2)
	cl.acquire("b", 3, "x")
	if cl.granted(3) {
		t.Fatal("b entered exclusively on a permission a gave to a reader")
	}
	if !cl.has(MsgRequest, "b", "a") {
		t.Fatal("b did not ask a")
	}
	cl.acquireShared("b", 4, "x")
	cl.pass(MsgRequest, "b", "a")
	if cl.has(MsgReply, "a", "b") {
		t.Fatal("reader a answered a writer while holding")
	}
}

func TestRuleSharedCancelLastReaderWithdraws(t *testing.T) {
	cl := newCluster(t, false, "a", "b")
	cl.acquire("b", 1, "x")
	cl.settle()
	cl.acquireShared("a", 2, "x")
	cl.acquireShared("a", 3, "x") // joins a's request
	cl.pass(MsgRequest, "a", "b")
	cl.cores["a"].Cancel(2)
	cl.collect("a")
	if cl.has(MsgCancel, "a", "b") {
		t.Fatal("request withdrawn while a reader still waits on it")
	}
	cl.cores["a"].Cancel(3)
	cl.collect("a")
	cl.pass(MsgCancel, "a", "b")
	cl.release("b", 1)
	cl.settle()
	if st := cl.cores["a"].Status(); len(st.Locks) != 0 {
		t.Fatalf("a keeps state after its readers left: %+v", st.Locks)
	}
}

// TestManyLocksLeaveNothing: a peer that took and released 3,000 locks
// keeps no state for any of them, in the core or in its fault tracking
// (the requests' stamps, the answers owed): a peer that once used many
// names goes back to idle (bench --sweep measures the heap).
func TestManyLocksLeaveNothing(t *testing.T) {
	cl := newCluster(t, false, "a", "b")
	const n = 3000
	for i := range n {
		op := OpenerID(i + 1)
		cl.acquire("a", op, fmt.Sprintf("l%d", i))
		cl.settle()
		if !cl.granted(op) {
			t.Fatalf("l%d not granted", i)
		}
		cl.release("a", op)
		cl.settle()
	}
	a := cl.cores["a"]
	if len(a.locks) != 0 || len(a.openers) != 0 || len(a.f.stamped) != 0 || len(a.f.owed) != 0 || len(a.f.holds) != 0 {
		t.Errorf("after %d locks released: %d locks, %d openers, %d stamps, %d owed, %d holds kept",
			n, len(a.locks), len(a.openers), len(a.f.stamped), len(a.f.owed), len(a.f.holds))
	}
}

// unansweredFor2s returns core a (answer-timeout 1 s) after 2 s in which
// member b has not answered its request on x, and the faults reported.
func unansweredFor2s(t *testing.T) (*Core, []FaultReport) {
	t.Helper()
	a, err := New(Config{Name: "a", Incarnation: 1, AnswerTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	a.AddMember("b", 2)
	a.Tick(time.Millisecond)
	if err := a.Acquire(1, "x"); err != nil {
		t.Fatal(err)
	}
	var faults []FaultReport
	for now := time.Millisecond; now <= 2*time.Second; now += 50 * time.Millisecond {
		a.Tick(now)
		faults = append(faults, a.Ready().Faults...)
	}
	return a, faults
}

// TestStatusNamesSuspect: a member that owes an answer past the
// answer-timeout is listed in Status.Suspects, and as slow on the lock.
func TestStatusNamesSuspect(t *testing.T) {
	a, _ := unansweredFor2s(t)
	s := a.Status()
	if len(s.Suspects) != 1 || s.Suspects[0].Name != "b" || s.Suspects[0].Lock != "x" {
		t.Errorf("Suspects %+v, want b owing its answer on x", s.Suspects)
	}
	if len(s.Locks) != 1 || len(s.Locks[0].Slow) != 1 || s.Locks[0].Slow[0].Name != "b" {
		t.Errorf("Locks %+v, want b slow on x", s.Locks)
	}
}

// TestSuspectGoneReported: a suspected member that Serf then drops is
// reported as gone, not as answering again (the log said "answers again"
// of a peer cut off by a partition).
func TestSuspectGoneReported(t *testing.T) {
	a, faults := unansweredFor2s(t)
	if len(faults) != 1 || faults[0].Kind != FaultSuspect || faults[0].Peer != "b" {
		t.Fatalf("faults %v, want b suspected", faults)
	}
	a.RemoveMember("b")
	a.Tick(2100 * time.Millisecond) // the fault sweep runs on ticks
	rd := a.Ready()
	if len(rd.Faults) != 1 || rd.Faults[0].Kind != FaultAnswered || rd.Faults[0].Why != AnsweredGone {
		t.Errorf("after b is removed: faults %v, want b answered, gone", rd.Faults)
	}
	if len(rd.Grants) != 1 {
		t.Errorf("after b is removed: %d grants, want 1", len(rd.Grants))
	}
}

// TestHoldTimedAcrossRequests: a holder that keeps deferring our requests
// is timed against MaxHold from when we first learnt of its hold (by its
// token), not afresh for each request after a cancel (fsim hog seed 529);
// a deferral that names another hold, or none (token 0), is timed from
// when it came.
func TestHoldTimedAcrossRequests(t *testing.T) {
	const maxHold, timeout = 2 * time.Second, time.Second
	for _, tc := range []struct {
		name                string
		first, second       uint64 // the tokens b's deferrals name
		notBefore, deadline time.Duration
	}{
		// Learnt at 0.5 s: suspected at 0.5 + MaxHold + the delay (plain
		// mode: the answer-timeout), within a scan's cadence.
		{"same hold", 7, 7, 3400 * time.Millisecond, 3600 * time.Millisecond},
		// The second request's deferral (at about 2 s) starts a clock.
		{"another hold", 7, 8, 4900 * time.Millisecond, 5200 * time.Millisecond},
		{"no token", 0, 0, 4900 * time.Millisecond, 5200 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := New(Config{Name: "a", Incarnation: 1, AnswerTimeout: timeout, MaxHold: maxHold})
			if err != nil {
				t.Fatal(err)
			}
			a.AddMember("b", 2)
			now := time.Millisecond
			a.Tick(now)
			var suspectedAt time.Duration
			run := func(until time.Duration, token uint64) {
				for ; now < until; now += 10 * time.Millisecond {
					a.Tick(now)
					rd := a.Ready()
					for _, m := range rd.Messages {
						if m.Type == MsgProbe && m.Target == "a" {
							// b holds x and defers our request.
							d := Message{Type: MsgDeferred, From: "b", FromIncarnation: 2, To: "a", ToIncarnation: 1,
								Lock: m.Lock, ReqTime: m.ReqTime, Try: true, Reserve: token, Time: m.Time}
							if err := a.Step(d); err != nil {
								t.Fatalf("deferral: %v", err)
							}
						}
					}
					for _, f := range rd.Faults {
						if f.Kind == FaultSuspect && suspectedAt == 0 {
							suspectedAt = now
						}
					}
				}
			}
			if err := a.Acquire(1, "x"); err != nil {
				t.Fatal(err)
			}
			run(1500*time.Millisecond, tc.first) // the first deferral at 0.5 s
			a.Cancel(1)
			if err := a.Acquire(2, "x"); err != nil {
				t.Fatal(err)
			}
			run(6*time.Second, tc.second) // the second at about 2 s
			if suspectedAt < tc.notBefore || suspectedAt > tc.deadline {
				t.Errorf("b suspected at %v, want between %v and %v", suspectedAt, tc.notBefore, tc.deadline)
			}
		})
	}
}
