package peer

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/dlockfs/dlockfs/fs"
	"github.com/dlockfs/dlockfs/mutex"
	"github.com/dlockfs/dlockfs/mutex/testutil"
)

// The peer is the fs layer's SharedLocker: flock(LOCK_SH) on a mount is a
// shared hold.
var _ fs.SharedLocker = (*Peer)(nil)

// TestShared: readers on three peers hold together; a writer waits for
// them; a reader that comes after a waiting writer waits behind it; .status
// shows each hold's mode. In majority mode and in plain mode with kept
// permissions (the fast path).
func TestShared(t *testing.T) {
	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprintf("keep=%v", keep), func(t *testing.T) {
			c := newCluster(t, listenTCP)
			if keep {
				c.keep, c.quorum = true, QuorumNone
			}
			ps := c.startN(3)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var readers []mutex.Grant
			for _, p := range ps {
				g, err := p.TryLockShared(ctx, "x")
				if err != nil {
					t.Fatalf("%s: shared try-lock beside readers: %v", p.Node(), err)
				}
				if !g.Shared {
					t.Fatalf("%s: grant %+v not shared", p.Node(), g)
				}
				readers = append(readers, g)
			}
			// All three hold now, each on its own peer.
			for _, p := range ps {
				st := lockStatus(t, p, "x")
				if st.State != "holding" || st.Mode != "shared" || st.Holders != 1 {
					t.Fatalf("%s status %+v, want a shared hold", p.Node(), st)
				}
			}
			if _, err := ps[0].TryLock(ctx, "x"); !errors.Is(err, mutex.ErrLocked) {
				t.Fatalf("exclusive try-lock beside readers: %v, want ErrLocked", err)
			}
			wgot := make(chan mutex.Grant, 1)
			go func() {
				g, err := ps[1].Lock(ctx, "x")
				if err != nil {
					t.Errorf("writer: %v", err)
				}
				wgot <- g
			}()
			// The writer queues behind its own peer's reader; once that
			// one is done, its request is deferred by the other readers.
			testutil.WaitFor(t, 10*time.Second, "the writer queued", func() bool {
				return lockStatus(t, ps[1], "x").Waiting == 1
			})
			if err := ps[1].Unlock(readers[1]); err != nil {
				t.Fatal(err)
			}
			testutil.WaitFor(t, 10*time.Second, "the writer deferred by a reader", func() bool {
				st := lockStatus(t, ps[2], "x")
				return len(st.Queued) == 1 && st.Queued[0] == ps[1].Node()
			})
			// A new reader on peer 2 comes after the writer: it must
			// wait behind it, though only readers hold.
			rctx, rcancel := context.WithCancel(ctx)
			late := make(chan error, 1)
			go func() {
				_, err := ps[2].LockShared(rctx, "x")
				late <- err
			}()
			testutil.WaitFor(t, 10*time.Second, "the late reader queued", func() bool {
				return lockStatus(t, ps[2], "x").Waiting == 1
			})
			if st := lockStatus(t, ps[2], "x"); st.Holders != 1 {
				t.Fatalf("a reader joined past a waiting writer: %+v", st)
			}
			rcancel()
			if err := <-late; !errors.Is(err, context.Canceled) {
				t.Fatalf("late reader: %v, want it to wait until cancelled", err)
			}
			for _, i := range []int{0, 2} {
				if err := ps[i].Unlock(readers[i]); err != nil {
					t.Fatal(err)
				}
			}
			w := <-wgot
			for _, g := range readers {
				if w.Token <= g.Token {
					t.Fatalf("writer's token %d not above reader's %d", w.Token, g.Token)
				}
			}
			if st := lockStatus(t, ps[1], "x"); st.Mode != "exclusive" || st.Holders != 1 {
				t.Fatalf("writer's status %+v", st)
			}
			rgot := make(chan mutex.Grant, 1)
			go func() {
				g, err := ps[0].LockShared(ctx, "x")
				if err != nil {
					t.Errorf("reader: %v", err)
				}
				rgot <- g
			}()
			if err := ps[1].Unlock(w); err != nil {
				t.Fatal(err)
			}
			r := <-rgot
			if r.Token <= w.Token {
				t.Fatalf("reader's token %d not above the writer's %d", r.Token, w.Token)
			}
			if err := ps[0].Unlock(r); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func lockStatus(t *testing.T, p *Peer, name string) LockStatus {
	t.Helper()
	for _, l := range p.Status().Locks {
		if l.Name == name {
			return l
		}
	}
	return LockStatus{Name: name, State: "idle"}
}
