package peer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/serf/serf"

	"github.com/dlockfs/dlockfs/mutex"
	"github.com/dlockfs/dlockfs/mutex/testutil"
)

// contend runs workers goroutines on each peer, each taking every lock in
// turn rounds times, and checks the guard.
func contend(t *testing.T, peers []*Peer, locks []string, workers, rounds int) *guard {
	t.Helper()
	g := newGuard()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var maxWait atomic.Int64
	begin := time.Now()
	defer func() {
		t.Logf("%d peers × %d workers × %d rounds in %v; longest Lock %v", len(peers), workers, rounds,
			time.Since(begin).Round(time.Millisecond), time.Duration(maxWait.Load()).Round(time.Millisecond))
	}()
	for _, p := range peers {
		for w := range workers {
			wg.Go(func() {
				for r := range rounds {
					lock := locks[(r+w)%len(locks)]
					t0 := time.Now()
					gr, err := p.Lock(ctx, lock)
					for d := int64(time.Since(t0)); ; {
						old := maxWait.Load()
						if d <= old || maxWait.CompareAndSwap(old, d) {
							break
						}
					}
					if err != nil {
						g.fail("%s: lock %q: %v", p.Node(), lock, err)
						return
					}
					g.enter(p.Node(), gr, nil)
					if err := p.Unlock(gr); err != nil {
						g.fail("%s: unlock %q: %v", p.Node(), lock, err)
					}
				}
			})
		}
	}
	wg.Wait()
	g.check(t)
	return g
}

func TestContention(t *testing.T) {
	for _, n := range []int{3, 5} {
		for _, keep := range []bool{false, true} {
			t.Run(fmt.Sprintf("peers=%d/keep=%v", n, keep), func(t *testing.T) {
				c := newCluster(t, listenTCP)
				c.keep = keep
				if keep {
					c.quorum = QuorumNone // the fast path is plain mode only
				}
				peers := c.startN(n)
				locks := []string{"a", "b", "c"}
				const workers, rounds = 2, 15
				g := contend(t, peers, locks, workers, rounds)
				var sum int64
				for _, l := range locks {
					sum += g.total(l)
				}
				if want := int64(n * workers * rounds); sum != want {
					t.Errorf("%d critical sections counted, want %d", sum, want)
				}
			})
		}
	}
}

func TestTryLock(t *testing.T) {
	c := newCluster(t, listenTCP)
	ps := c.startN(3)
	held := lockT(t, ps[0], "x", 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := ps[1].TryLock(ctx, "x"); !errors.Is(err, mutex.ErrLocked) {
		t.Fatalf("TryLock of a held lock: %v, want ErrLocked", err)
	}
	if _, err := ps[0].TryLock(ctx, "x"); !errors.Is(err, mutex.ErrLocked) {
		t.Fatalf("TryLock of a lock held here: %v, want ErrLocked", err)
	}
	if err := ps[0].Unlock(held); err != nil {
		t.Fatal(err)
	}
	gr, err := ps[1].TryLock(ctx, "x")
	if err != nil {
		t.Fatalf("TryLock of a free lock: %v", err)
	}
	if err := ps[1].Unlock(gr); err != nil {
		t.Fatal(err)
	}
}

func TestUnlockErrors(t *testing.T) {
	c := newCluster(t, listenTCP)
	ps := c.startN(2)
	gr := lockT(t, ps[0], "x", 5*time.Second)
	if err := ps[1].Unlock(gr); !errors.Is(err, mutex.ErrOpener) && !errors.Is(err, ErrNotHeld) {
		t.Errorf("unlock on the wrong peer: %v, want ErrNotHeld", err)
	}
	if err := ps[0].Unlock(gr); err != nil {
		t.Fatal(err)
	}
	if err := ps[0].Unlock(gr); !errors.Is(err, ErrNotHeld) {
		t.Errorf("second unlock: %v, want ErrNotHeld", err)
	}
	if _, err := ps[0].Lock(context.Background(), "a/b"); !errors.Is(err, mutex.ErrInvalidName) {
		t.Errorf("lock a/b: %v, want ErrInvalidName", err)
	}
	gr = lockT(t, ps[0], "x", 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ps[0].Leave(ctx); err != nil {
		t.Fatalf("leave: %v", err)
	}
	if err := ps[0].Unlock(gr); !errors.Is(err, ErrClosed) {
		t.Errorf("unlock after leave: %v, want ErrClosed", err)
	}
	if _, err := ps[0].Lock(ctx, "x"); !errors.Is(err, ErrClosed) {
		t.Errorf("lock after leave: %v, want ErrClosed", err)
	}
}

// A Lock whose ctx ends leaves no trace: the holder forgets the deferred
// request, and the others acquire at once.
func TestCancelWhileWaiting(t *testing.T) {
	c := newCluster(t, listenTCP)
	ps := c.startN(3)
	held := lockT(t, ps[0], "x", 5*time.Second)

	ctx, cancel := context.WithCancel(context.Background())
	waiting := lockAsync(ctx, ps[1], "x")
	waitDeferred(t, ps[0], "x", "p1", 5*time.Second)
	cancel()
	r := recvWithin(t, waiting, 5*time.Second, "the cancelled Lock to return")
	if !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled Lock: %v, want context.Canceled", r.err)
	}
	waitLockState(t, ps[1], "x", mutex.Idle, 5*time.Second)
	testutil.WaitFor(t, 5*time.Second, "p0 to forget p1's request", func() bool {
		for _, l := range ps[0].coreStatus().Locks {
			if l.Name == "x" {
				return len(l.Queued) == 0
			}
		}
		return true
	})
	if err := ps[0].Unlock(held); err != nil {
		t.Fatal(err)
	}
	// p2 needs only p0's and p1's replies: both are idle now.
	gr := lockT(t, ps[2], "x", 5*time.Second)
	if err := ps[2].Unlock(gr); err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		for _, l := range p.coreStatus().Locks {
			if l.Waiting != 0 {
				t.Errorf("%s: %q still has %d waiting", p.Node(), l.Name, l.Waiting)
			}
		}
	}
}

// Crashes: a peer stops without leaving. The survivors carry on once Serf
// declares it failed.
func TestCrash(t *testing.T) {
	t.Run("holding", func(t *testing.T) {
		c := newCluster(t, listenTCP)
		ps := c.startN(3)
		g := newGuard()
		held := lockT(t, ps[0], "x", 5*time.Second)
		g.enter("p0", held, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		w1 := lockEnter(ctx, ps[1], "x", g)
		w2 := lockEnter(ctx, ps[2], "x", g)
		waitDeferred(t, ps[0], "x", "p1", 5*time.Second)
		waitDeferred(t, ps[0], "x", "p2", 5*time.Second)
		ps[0].kill()
		for _, w := range []<-chan error{w1, w2} {
			if err := recvErr(t, w, 15*time.Second, "a survivor's turn"); err != nil {
				t.Fatal(err)
			}
		}
		g.check(t)
		if got := g.total("x"); got != 3 {
			t.Errorf("count %d, want 3", got)
		}
	})
	t.Run("requesting", func(t *testing.T) {
		c := newCluster(t, listenTCP)
		ps := c.startN(3)
		held := lockT(t, ps[1], "x", 5*time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		_ = lockAsync(ctx, ps[0], "x")
		waitDeferred(t, ps[1], "x", "p0", 5*time.Second)
		ps[0].kill()
		if err := ps[1].Unlock(held); err != nil {
			t.Fatal(err)
		}
		// p2 waits for the dead p0's reply until failure detection.
		gr := lockT(t, ps[2], "x", 15*time.Second)
		if err := ps[2].Unlock(gr); err != nil {
			t.Fatal(err)
		}
		g := contend(t, ps[1:], []string{"x", "y"}, 2, 5)
		if got := g.total("x") + g.total("y"); got != 20 {
			t.Errorf("count %d, want 20", got)
		}
	})
	t.Run("owing a reply", func(t *testing.T) {
		c := newCluster(t, listenTCP)
		ps := c.startN(3)
		ps[0].kill()
		// Requests made now go to a dead p0 too.
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		g := newGuard()
		w1 := lockEnter(ctx, ps[1], "x", g)
		w2 := lockEnter(ctx, ps[2], "x", g)
		for _, w := range []<-chan error{w1, w2} {
			if err := recvErr(t, w, 15*time.Second, "a survivor's turn"); err != nil {
				t.Fatal(err)
			}
		}
		g.check(t)
		contend(t, ps[1:], []string{"x"}, 2, 5)
	})
}

// A graceful Leave releases holds and withdraws waiters at once.
func TestLeave(t *testing.T) {
	c := newCluster(t, listenTCP)
	ps := c.startN(3)
	lockT(t, ps[0], "x", 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	w0 := lockAsync(ctx, ps[0], "x") // a local waiter behind the hold
	w1 := lockAsync(ctx, ps[1], "x")
	waitDeferred(t, ps[0], "x", "p1", 5*time.Second)
	waitLockState(t, ps[0], "x", mutex.Holding, 5*time.Second)

	left := make(chan error, 1)
	go func() { left <- ps[0].Leave(ctx) }()
	if r := recvWithin(t, w0, 5*time.Second, "the local waiter"); !errors.Is(r.err, ErrClosed) {
		t.Errorf("local waiter on a leaving peer: %v, want ErrClosed", r.err)
	}
	r := recvWithin(t, w1, 5*time.Second, "p1's grant")
	if r.err != nil {
		t.Fatalf("p1: %v", r.err)
	}
	if err := ps[1].Unlock(r.grant); err != nil {
		t.Fatal(err)
	}
	if err := <-left; err != nil {
		t.Fatalf("leave: %v", err)
	}
	select {
	case <-ps[0].Done():
	default:
		t.Error("Done not closed after Leave")
	}
	testutil.WaitFor(t, 5*time.Second, "p1 to see p0 left", func() bool {
		for _, m := range ps[1].Status().Members {
			if m.Name == "p0" {
				return m.Status == "left"
			}
		}
		return false
	})
	c.waitConverged()
	contend(t, ps[1:], []string{"x"}, 2, 5)
}

// A peer restarted under the same name is a new peer: its old life's hold
// is dropped and nothing stalls. Before the crash is detected (same gossip
// port: Serf sees only new tags), or after (new port: failed, then join).
func TestRestartSameName(t *testing.T) {
	for _, detected := range []bool{false, true} {
		t.Run(fmt.Sprintf("detected=%v", detected), func(t *testing.T) {
			c := newCluster(t, listenTCP)
			ps := c.startN(3)
			lockT(t, ps[1], "x", 5*time.Second) // held when it crashes
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			w := lockAsync(ctx, ps[2], "x")
			waitDeferred(t, ps[1], "x", "p2", 5*time.Second)

			port := ps[1].serf.LocalMember().Port
			oldInc := ps[1].Incarnation()
			ps[1].kill()
			cfg := c.config("p1", gossipAddr(ps[0]))
			if detected {
				r := recvWithin(t, w, 10*time.Second, "p2's grant after p1's failure")
				if r.err != nil {
					t.Fatal(r.err)
				}
				if err := ps[2].Unlock(r.grant); err != nil {
					t.Fatal(err)
				}
			} else {
				cfg.BindAddr = fmt.Sprintf("127.0.0.1:%d", port)
			}
			var p1 *Peer
			testutil.WaitFor(t, 5*time.Second, "the restart", func() bool {
				var err error
				p1, err = c.startCfg(cfg)
				return err == nil
			})
			if p1.Incarnation() == oldInc {
				t.Fatal("same incarnation after restart")
			}
			c.waitConverged()
			if !detected {
				r := recvWithin(t, w, 10*time.Second, "p2's grant")
				if r.err != nil {
					t.Fatal(r.err)
				}
				if err := ps[2].Unlock(r.grant); err != nil {
					t.Fatal(err)
				}
			}
			contend(t, []*Peer{ps[0], p1, ps[2]}, []string{"x", "y"}, 2, 5)
		})
	}
}

// A peer joining while the others contend takes part without stalling them.
func TestJoinDuringContention(t *testing.T) {
	c := newCluster(t, listenTCP)
	ps := c.startN(2)
	g := newGuard()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	work := func(p *Peer, rounds int) {
		for range rounds {
			gr, err := p.Lock(ctx, "x")
			if err != nil {
				g.fail("%s: %v", p.Node(), err)
				return
			}
			g.enter(p.Node(), gr, func() { time.Sleep(200 * time.Microsecond) })
			if err := p.Unlock(gr); err != nil {
				g.fail("%s: unlock: %v", p.Node(), err)
			}
		}
	}
	for _, p := range ps {
		wg.Go(func() { work(p, 60) })
	}
	testutil.WaitFor(t, 5*time.Second, "contention to begin", func() bool { return g.total("x") >= 5 })
	p2 := c.start("p2")
	wg.Go(func() { work(p2, 20) })
	wg.Wait()
	g.check(t)
	if got := g.total("x"); got != 140 {
		t.Errorf("count %d, want 140", got)
	}
}

func TestWrongKey(t *testing.T) {
	c := newCluster(t, listenTCP)
	c.key = []byte("0123456789abcdef")
	ps := c.startN(2)
	for _, key := range [][]byte{[]byte("fedcba9876543210"), nil} {
		cfg := c.config("intruder", gossipAddr(ps[0]))
		cfg.Key = key
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		p, err := start(ctx, cfg, c.listen)
		cancel()
		if err == nil {
			p.kill()
			t.Fatalf("key %q: joined a cluster with another key", key)
		}
		if !errors.Is(err, ErrKeyMismatch) {
			t.Errorf("key %q: %v, want ErrKeyMismatch", key, err)
		}
		t.Logf("key %q: %v", key, err)
	}
	for _, p := range ps {
		for _, m := range p.Status().Members {
			if m.Name == "intruder" {
				t.Errorf("%s lists the intruder", p.Node())
			}
		}
	}
	gr := lockT(t, ps[1], "x", 5*time.Second)
	if err := ps[1].Unlock(gr); err != nil {
		t.Fatal(err)
	}
}

// A second live peer with a taken name is refused at its join, and the node
// the cluster knows under that name carries on, even in a cluster of two.
func TestNameConflict(t *testing.T) {
	for _, n := range []int{1, 3} {
		t.Run(fmt.Sprintf("cluster-of-%d", n), func(t *testing.T) {
			c := newCluster(t, listenTCP)
			ps := c.startN(n)
			name := ps[n-1].Node()
			dup, err := c.startCfg(c.config(name, gossipAddr(ps[0])))
			if !errors.Is(err, ErrNameConflict) {
				if dup != nil {
					_ = dup.Leave(context.Background())
				}
				t.Fatalf("start of a duplicate %q: err = %v, want ErrNameConflict", name, err)
			}
			for _, p := range ps {
				select {
				case <-p.Done():
					t.Fatalf("%s stopped: %v", p.Node(), p.Err())
				default:
				}
			}
			c.waitConverged()
			contend(t, ps, []string{"x"}, 1, 5)
			// The member with the name saw the newcomer's claim too
			// (its conflictWatch passed it on): not a reason for it to
			// report a conflict when its Serf stops later for another
			// reason.
			p := ps[n-1]
			if err := p.serf.Shutdown(); err != nil {
				t.Fatal(err)
			}
			select {
			case <-p.Done():
			case <-time.After(10 * time.Second):
				t.Fatal("peer not stopped after its Serf shut down")
			}
			if err := p.Err(); !errors.Is(err, ErrSerfDown) || errors.Is(err, ErrNameConflict) {
				t.Errorf("%s stopped with %v, want ErrSerfDown", p.Node(), err)
			}
		})
	}
}

// startBehindProxy starts a peer whose lock channel the others reach
// through a proxy.
func startBehindProxy(t *testing.T, c *cluster, name string) (*Peer, *proxy) {
	t.Helper()
	lockAddr := testutil.FreeAddr(t)
	px := newProxy(t, lockAddr)
	cfg := c.config(name, c.joinAddrs()...)
	cfg.LockAddr = lockAddr
	cfg.LockAdvertise = px.Addr()
	p, err := c.startCfg(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p, px
}

// A lock connection that breaks with a message in flight loses nothing:
// the transport redials and the core re-sends what it owes.
func TestConnectionBreaks(t *testing.T) {
	t.Run("request lost", func(t *testing.T) {
		c := newCluster(t, listenTCP)
		p0, px := startBehindProxy(t, c, "p0")
		p1, p2 := c.start("p1"), c.start("p2")
		c.waitConverged()
		held := lockT(t, p0, "x", 5*time.Second)
		px.swallow.Store(true)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		w := lockAsync(ctx, p1, "x")
		testutil.WaitFor(t, 5*time.Second, "p1's request to be swallowed", func() bool { return px.swallowed.Load() > 0 })
		px.swallow.Store(false)
		px.Cut()
		waitDeferred(t, p0, "x", "p1", 5*time.Second)
		if err := p0.Unlock(held); err != nil {
			t.Fatal(err)
		}
		r := recvWithin(t, w, 5*time.Second, "p1's grant")
		if r.err != nil {
			t.Fatal(r.err)
		}
		if err := p1.Unlock(r.grant); err != nil {
			t.Fatal(err)
		}
		contend(t, []*Peer{p0, p1, p2}, []string{"x"}, 2, 5)
	})
	t.Run("reply lost", func(t *testing.T) {
		c := newCluster(t, listenTCP)
		p0, px := startBehindProxy(t, c, "p0")
		p1, p2 := c.start("p1"), c.start("p2")
		c.waitConverged()
		held := lockT(t, p1, "x", 5*time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		w := lockAsync(ctx, p0, "x")
		waitDeferred(t, p1, "x", "p0", 5*time.Second)
		px.swallow.Store(true)
		if err := p1.Unlock(held); err != nil {
			t.Fatal(err)
		}
		testutil.WaitFor(t, 5*time.Second, "p1's reply to be swallowed", func() bool { return px.swallowed.Load() > 0 })
		px.swallow.Store(false)
		px.Cut()
		r := recvWithin(t, w, 5*time.Second, "p0's grant")
		if r.err != nil {
			t.Fatal(r.err)
		}
		if err := p0.Unlock(r.grant); err != nil {
			t.Fatal(err)
		}
		contend(t, []*Peer{p0, p1, p2}, []string{"x"}, 2, 5)
	})
}

// Leave with a context that has ended still leaves cleanly and the survivor
// goes on. (The bug this guards, Serf shut down while its Leave runs, which
// memberlist answers with a panic "leave after shutdown" seconds later, needs
// a slow Leave that this test does not reliably produce: the lifecycle never
// runs terminate while leaveSteps runs, and TestLifecycleEveryState kills
// peers in the middle of a Leave held on purpose.)
//
// In plain mode: in majority mode a 2-peer cluster whose peer left without
// the voters' agreement blocks, by design (TestTwoPeersLoseOne).
func TestLeaveContextExpires(t *testing.T) {
	c := newCluster(t, listenTCP)
	c.quorum = QuorumNone
	ps := c.startN(2)
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	if err := ps[1].Leave(ctx); err == nil {
		t.Log("leave finished within 1ms")
	}
	select {
	case <-ps[1].Done():
	case <-time.After(30 * time.Second):
		t.Fatal("peer not done after Leave")
	}
	// The survivor sees it leave and goes on alone.
	gr := lockT(t, ps[0], "x", 10*time.Second)
	if err := ps[0].Unlock(gr); err != nil {
		t.Fatal(err)
	}
}

// TestCancelThenTry: once a Lock whose context ended has returned, its
// request is withdrawn: a TryLock of the same lock right after it is not
// refused by that dead request (it was, 97 times in 100, while the
// withdrawal still went through the driver and the TryLock stepped the
// core directly ahead of it).
func TestCancelThenTry(t *testing.T) {
	p, _ := memberPeer(t)
	p.events <- serf.MemberEvent{Type: serf.EventMemberJoin, Members: []serf.Member{member("a", "1", "mem:nowhere")}}
	testutil.WaitFor(t, 5*time.Second, "a to be a member", func() bool { return coreMembers(p)["a"] == 1 })
	spurious, n := 0, 100
	for range n {
		ctx, cancel := context.WithCancel(context.Background())
		w := lockAsync(ctx, p, "x")
		waitLockState(t, p, "x", mutex.Requesting, 5*time.Second)
		cancel()
		recvWithin(t, w, 5*time.Second, "the cancelled lock")
		tctx, tcancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
		_, err := p.TryLock(tctx, "x")
		tcancel()
		if errors.Is(err, mutex.ErrLocked) {
			spurious++
		}
		waitLockState(t, p, "x", mutex.Idle, 5*time.Second)
	}
	if spurious > 0 {
		t.Errorf("TryLock after a cancelled Lock refused %d of %d times", spurious, n)
	}
}
