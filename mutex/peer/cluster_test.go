package peer

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dlockfs/dlockfs/mutex"
	"github.com/dlockfs/dlockfs/mutex/testutil"
	"github.com/dlockfs/dlockfs/mutex/transport"
)

// TestClusterStatus: on 3 real peers, c sees that a holds "deploy" and
// that b waits for it, and each member's own view; once a has crashed
// and b has left, c still answers for itself and shows a as not
// answering (or not asked, once Serf calls it failed) and b as left.
func TestClusterStatus(t *testing.T) {
	c := newCluster(t, listenTCP)
	c.key = []byte("0123456789abcdef")
	ps := c.startN(3)
	a, b, cc := ps[0], ps[1], ps[2]
	held := lockT(t, a, "deploy", 5*time.Second)
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	waited := make(chan error, 1)
	go func() {
		g, err := b.Lock(wctx, "deploy")
		if err == nil {
			err = b.Unlock(g)
		}
		waited <- err
	}()
	var cs ClusterStatus
	// The members' snapshots are not taken at one instant: wait until
	// b's request has reached a (a defers it) and c's reply has reached
	// b (b awaits only a).
	testutil.WaitFor(t, 5*time.Second, "c to see b queued behind a", func() bool {
		cs = cc.ClusterStatus(context.Background(), 2*time.Second)
		if len(cs.Locks) != 1 || len(cs.Locks[0].Queue) != 1 {
			return false
		}
		deferred, awaitsA := false, false
		for _, v := range cs.Locks[0].Views {
			switch v.Node {
			case a.Node():
				deferred = len(v.Queued) == 1
			case b.Node():
				awaitsA = len(v.Awaiting) == 1
			}
		}
		return deferred && awaitsA
	})
	if !cs.Complete || cs.Node != cc.Node() || len(cs.Peers) != 3 {
		t.Fatalf("cluster status: %+v", cs)
	}
	for _, pa := range cs.Peers {
		if !pa.Answered || pa.Status != MemberAlive || pa.Lamport == 0 {
			t.Errorf("peer %+v", pa)
		}
	}
	l := cs.Locks[0]
	if l.Name != "deploy" || l.Holder != a.Node() || len(l.Holders) != 1 || l.Token != held.Token ||
		l.Queue[0].Node != b.Node() || l.Queue[0].Waiting != 1 {
		t.Fatalf("deploy: %+v", l)
	}
	views := map[string]LockView{}
	for _, v := range l.Views {
		views[v.Node] = v
	}
	if v := views[a.Node()]; v.State != LockHolding || len(v.Queued) != 1 || v.Queued[0] != b.Node() {
		t.Errorf("a's view: %+v", v)
	}
	if v := views[b.Node()]; v.State != LockRequesting || len(v.Awaiting) != 1 || v.Awaiting[0] != a.Node() {
		t.Errorf("b's view: %+v", v)
	}

	if err := a.Unlock(held); err != nil {
		t.Fatal(err)
	}
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	// a stops answering (crashed: its lock port is gone before Serf
	// notices), b leaves: neither stops c from answering for itself.
	a.kill()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	cs = cc.ClusterStatus(context.Background(), time.Second)
	got := map[string]PeerAnswer{}
	for _, pa := range cs.Peers {
		got[pa.Name] = pa
	}
	if pa := got[cc.Node()]; !pa.Answered {
		t.Errorf("c itself: %+v", pa)
	}
	if pa, ok := got[b.Node()]; ok && (pa.Answered || pa.Error == "") {
		t.Errorf("b, which left: %+v", pa)
	}
	if pa := got[a.Node()]; pa.Answered || pa.Error == "" {
		t.Errorf("a, crashed: %+v", pa)
	}
	if cs.Complete && got[a.Node()].Status == MemberAlive {
		t.Error("complete although a did not answer")
	}
}

func TestMergeLocks(t *testing.T) {
	peers := []PeerAnswer{{Name: "a", Answered: true}, {Name: "b", Answered: true}, {Name: "c", Answered: true},
		{Name: "d"}}
	ans := []transport.StatusAnswer{
		{Locks: []mutex.LockStatus{{Name: "x", Phase: mutex.Holding, Token: 4, Queued: []string{"b", "c"}},
			{Name: "y", Phase: mutex.Requesting, ReqTime: 9}}},
		{Locks: []mutex.LockStatus{{Name: "x", Phase: mutex.Requesting, ReqTime: 7, Waiting: 2}}},
		{Locks: []mutex.LockStatus{{Name: "x", Phase: mutex.Requesting, ReqTime: 5},
			{Name: "y", Phase: mutex.Requesting, ReqTime: 9}}},
		{Locks: []mutex.LockStatus{{Name: "x", Phase: mutex.Holding}}}, // d did not answer: ignored
	}
	got := mergeLocks(peers, ans)
	if len(got) != 2 || got[0].Name != "x" || got[1].Name != "y" {
		t.Fatalf("locks: %+v", got)
	}
	x, y := got[0], got[1]
	if x.Holder != "a" || len(x.Holders) != 1 || x.Token != 4 || len(x.Views) != 3 {
		t.Errorf("x: %+v", x)
	}
	if len(x.Queue) != 2 || x.Queue[0].Node != "c" || x.Queue[1].Node != "b" || x.Queue[1].Waiting != 2 {
		t.Errorf("x's queue (by timestamp): %+v", x.Queue)
	}
	if y.Holder != "" || len(y.Queue) != 2 || y.Queue[0].Node != "a" || y.Queue[1].Node != "c" {
		t.Errorf("y (a tie broken by name): %+v", y)
	}
}

// TestMergeLocksShared: readers holding together are listed as holders of a
// shared hold, not as a violation; one exclusive holder among them makes
// the hold exclusive (so the CLI says SEVERAL).
func TestMergeLocksShared(t *testing.T) {
	peers := []PeerAnswer{{Name: "a", Answered: true}, {Name: "b", Answered: true}, {Name: "c", Answered: true}}
	ans := []transport.StatusAnswer{
		{Locks: []mutex.LockStatus{{Name: "x", Phase: mutex.Holding, Shared: true, Token: 4},
			{Name: "y", Phase: mutex.Holding, Shared: true, Token: 2}}},
		{Locks: []mutex.LockStatus{{Name: "x", Phase: mutex.Holding, Shared: true, Token: 5},
			{Name: "y", Phase: mutex.Holding, Token: 3}}},
		{Locks: []mutex.LockStatus{{Name: "x", Phase: mutex.Requesting, ReqTime: 6}}},
	}
	got := mergeLocks(peers, ans)
	if len(got) != 2 {
		t.Fatalf("locks: %+v", got)
	}
	x, y := got[0], got[1]
	if x.Mode != ModeShared || len(x.Holders) != 2 || x.Token != 5 || len(x.Queue) != 1 || x.Queue[0].Shared ||
		x.Views[0].Mode != ModeShared || x.Views[2].Mode != ModeExclusive {
		t.Errorf("x: %+v", x)
	}
	if y.Mode != ModeExclusive || len(y.Holders) != 2 {
		t.Errorf("y: %+v", y)
	}
}

// TestClusterStatusCancelled: a cancelled context ends the query at once
// and this peer's own view is still honest about it.
func TestClusterStatusCancelled(t *testing.T) {
	c := newCluster(t, listenTCP)
	ps := c.startN(2)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	cs := ps[0].ClusterStatus(ctx, time.Minute)
	if cs.Complete {
		t.Fatalf("complete with a cancelled context: %+v", cs)
	}
	for _, pa := range cs.Peers {
		if pa.Answered || pa.Error == "" {
			t.Errorf("peer %+v answered a cancelled query", pa)
		}
	}
	if _, err := ps[0].coreStatusCtx(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("coreStatusCtx: %v", err)
	}
}
