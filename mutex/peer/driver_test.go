package peer

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/serf/serf"

	"github.com/dlockfs/dlockfs/mutex"
	"github.com/dlockfs/dlockfs/mutex/testutil"
)

// The driver acknowledges a shutdown or a member sync only once the
// core's outputs are on the lock channel: Leave flushes the channel, and
// Start returns, on the acknowledgement. The first Send blocks until the
// test has looked at the acknowledgement.
func TestDriverAcksAfterOutputs(t *testing.T) {
	for _, kind := range []callKind{callMembers, callShutdown} {
		name := map[callKind]string{callMembers: "members", callShutdown: "shutdown"}[kind]
		t.Run(name, func(t *testing.T) {
			p, tr := memberPeer(t)
			a := member("a", "1", "mem:nowhere")
			a.Status = serf.StatusAlive
			c := call{kind: kind, mems: []serf.Member{a}}
			if kind == callShutdown {
				// Shutdown says hello to every member: make a one.
				p.events <- serf.MemberEvent{Type: serf.EventMemberJoin, Members: []serf.Member{a}}
				testutil.WaitFor(t, 5*time.Second, "a to be a member", func() bool {
					return coreMembers(p)["a"] == 1 && len(tr.connected) == 0
				})
				p.coreStatus() // the driver is done with the join's outputs
			}
			sending := make(chan mutex.Message, 1)
			proceed := make(chan struct{})
			tr.setOnSend(func(m mutex.Message) {
				select {
				case sending <- m:
					<-proceed
				default:
				}
			})
			defer close(proceed)
			ack := make(chan struct{})
			c.ack = ack
			select {
			case p.calls <- c:
			case <-time.After(5 * time.Second):
				t.Fatal("driver busy")
			}
			select {
			case m := <-sending:
				select {
				case <-ack:
					t.Fatalf("acknowledged before its output %v was sent", m)
				default:
				}
			case <-time.After(5 * time.Second):
				t.Fatal("nothing sent")
			}
			tr.setOnSend(nil)
			proceed <- struct{}{}
			select {
			case <-ack:
			case <-time.After(5 * time.Second):
				t.Fatal("no acknowledgement")
			}
		})
	}
}

// Leave flushes the lock channel after the core's shutdown messages are on
// it: the reply to a deferred request and the final hello reach the peer.
// Each Send is held back until Leave flushes (within a bound), so that a
// Leave that flushed too early would be seen flushing first.
func TestLeaveSendsBeforeFlush(t *testing.T) {
	me, meTr, a, _ := memPair(t)
	lockT(t, me, "x", 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w := lockAsync(ctx, a, "x")
	waitDeferred(t, me, "x", "a", 5*time.Second)

	var waited atomic.Bool
	meTr.setOnSend(func(mutex.Message) {
		if waited.CompareAndSwap(false, true) {
			select {
			case <-meTr.flushed:
			case <-time.After(300 * time.Millisecond):
			}
		}
	})
	if err := me.Leave(ctx); err != nil {
		t.Fatalf("leave: %v", err)
	}
	ops := meTr.opLog()
	flush := slices.Index(ops, "flush")
	if flush < 0 {
		t.Fatalf("no flush: %q", ops)
	}
	for _, want := range []string{"send reply a x", "send hello a "} {
		if i := slices.Index(ops, want); i < 0 || i > flush {
			t.Errorf("%q at %d, flush at %d: %q", want, i, flush, ops)
		}
	}
	if r := recvWithin(t, w, 5*time.Second, "a's grant"); r.err != nil {
		t.Fatalf("a: %v", r.err)
	}
}

// Names lists the locks the core has state for: a lock nobody wants any
// more is forgotten. After the peer stopped it is the last list.
func TestNames(t *testing.T) {
	me, _, a, _ := memPair(t)
	held := lockT(t, me, "x", 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w := lockAsync(ctx, a, "x")
	waitDeferred(t, me, "x", "a", 5*time.Second)
	for _, p := range []*Peer{me, a} {
		if n := p.Names(); !slices.Equal(n, []string{"x"}) {
			t.Errorf("%s: Names() = %q, want [x]", p.Node(), n)
		}
	}
	if err := me.Unlock(held); err != nil {
		t.Fatal(err)
	}
	r := recvWithin(t, w, 5*time.Second, "a's grant")
	if r.err != nil {
		t.Fatal(r.err)
	}
	if err := a.Unlock(r.grant); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 5*time.Second, "x to be forgotten", func() bool {
		return len(me.Names()) == 0 && len(a.Names()) == 0
	})
	lockT(t, a, "y", 5*time.Second)
	a.kill()
	if n := a.Names(); !slices.Equal(n, []string{"y"}) {
		t.Errorf("Names() after stop = %q, want [y]", n)
	}
}

// A Lock cancelled while the reply it waits for is on its way returns the
// context's error; the late reply changes nothing and the lock is free.
func TestCancelRacesGrant(t *testing.T) {
	t.Run("reply after cancel", func(t *testing.T) {
		me, _, a, aTr := memPair(t)
		aTr.hold("me")
		ctx, cancel := context.WithCancel(context.Background())
		w := lockAsync(ctx, me, "x")
		testutil.WaitFor(t, 5*time.Second, "a's reply, held back", func() bool {
			return slices.ContainsFunc(aTr.heldFor("me"), func(m mutex.Message) bool {
				return m.Type == mutex.MsgReply && m.Lock == "x"
			})
		})
		cancel()
		if r := recvWithin(t, w, 5*time.Second, "the cancelled Lock"); !errors.Is(r.err, context.Canceled) {
			t.Fatalf("cancelled Lock: %v (grant %+v), want context.Canceled", r.err, r.grant)
		}
		aTr.release("me")
		// Delivery is in order: me handles the late reply before a's
		// request, which it must answer.
		gr := lockT(t, a, "x", 5*time.Second)
		if err := a.Unlock(gr); err != nil {
			t.Fatal(err)
		}
		gr = lockT(t, me, "x", 5*time.Second)
		if err := me.Unlock(gr); err != nil {
			t.Fatal(err)
		}
	})
	// The grant is handed to the Lock just as its ctx ends: the Lock
	// returns the context's error and withdraws (see acquire). The driver
	// must release the grant nobody will use.
	t.Run("grant before cancel", func(t *testing.T) {
		me, _, a, _ := memPair(t)
		op := mutex.OpenerID(1 << 62)
		res := make(chan result, 1)
		me.calls <- call{kind: callAcquire, op: op, lock: "x", res: res}
		if r := recvWithin(t, res, 5*time.Second, "the grant"); r.err != nil {
			t.Fatal(r.err)
		}
		me.calls <- call{kind: callCancel, op: op}
		gr := lockT(t, a, "x", 5*time.Second)
		if err := a.Unlock(gr); err != nil {
			t.Fatal(err)
		}
	})
}

// Start whose ctx ends during a join attempt waits for the attempt to end
// before it shuts Serf down: serf.Join cannot be cancelled, and Serf must
// not be shut down under it.
func TestStartWaitsForAbandonedJoin(t *testing.T) {
	// A gossip address that accepts the join's connection and never
	// answers: the attempt runs until the test closes the connection.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan net.Conn, 8)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- conn
		}
	}()
	t.Cleanup(func() {
		for {
			select {
			case conn := <-accepted:
				conn.Close()
			default:
				return
			}
		}
	})

	c := newCluster(t, listenTCP)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan error, 1)
	go func() {
		p, err := start(ctx, c.config("p0", ln.Addr().String()), listenTCP)
		if p != nil {
			p.kill()
		}
		started <- err
	}()
	var conn net.Conn
	select {
	case conn = <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("no join attempt")
	}
	defer conn.Close()
	cancel()
	select {
	case err := <-started:
		t.Fatalf("Start returned (%v) while its join attempt was running", err)
	case <-time.After(300 * time.Millisecond):
	}
	conn.Close() // the attempt fails now
	select {
	case err := <-started:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Start: %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Start did not return after its join attempt ended")
	}
}
