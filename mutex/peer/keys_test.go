package peer

import (
	"context"
	"encoding/base64"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlockfs/dlockfs/mutex/testutil"
)

// TestKeyRotation rotates the cluster key of 3 peers (install, use, remove,
// each applied on every member by one call on one peer) while every peer
// locks in a loop: exclusion holds, every peer keeps being granted, and
// afterwards a peer with only the old key cannot join.
func TestKeyRotation(t *testing.T) {
	oldKey := []byte("0123456789abcdef0123456789abcdef")
	newKey := []byte("fedcba9876543210fedcba9876543210")
	c := newCluster(t, listenTCP)
	c.key = oldKey
	ps := c.startN(3)

	g := newGuard()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	grants := make([]atomic.Int64, len(ps))
	for i, p := range ps {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := recvErr(t, lockEnter(ctx, p, "x", g), 15*time.Second, p.Node()+" lock")
				cancel()
				if err != nil {
					g.fail("%s: %v", p.Node(), err)
					return
				}
				grants[i].Add(1)
			}
		})
	}
	// progressed waits until every peer was granted again since now.
	progressed := func(what string) {
		t.Helper()
		var base [3]int64
		for i := range ps {
			base[i] = grants[i].Load()
		}
		testutil.WaitFor(t, 10*time.Second, "every peer to be granted after "+what, func() bool {
			for i := range ps {
				if grants[i].Load() <= base[i] {
					return false
				}
			}
			return true
		})
	}
	ctx := context.Background()
	progressed("start")
	for _, step := range []struct {
		p   *Peer
		op  KeyOp
		key []byte
	}{
		{ps[0], KeyInstall, newKey},
		{ps[1], KeyUse, newKey},
		{ps[2], KeyRemove, oldKey},
	} {
		rep, err := step.p.Keys(ctx, step.op, step.key)
		if err != nil {
			t.Fatalf("%s: keys %s: %v (%+v)", step.p.Node(), step.op, err, rep)
		}
		if rep.Nodes != 3 || rep.Responses != 3 || rep.Errors != 0 {
			t.Errorf("keys %s: %+v, want 3 nodes answering without error", step.op, rep)
		}
		progressed(string(step.op))
	}
	// The other members close theirs within transport.DefaultKeyCheckInterval.
	testutil.WaitFor(t, 10*time.Second, "no lock connection left on the old key", func() bool {
		for _, p := range ps {
			if p.tr.Stats().OldKeyConns != 0 {
				return false
			}
		}
		return true
	})
	progressed("the old-key connections closed")
	close(stop)
	wg.Wait()
	g.check(t)
	t.Logf("grants per peer: %d %d %d", grants[0].Load(), grants[1].Load(), grants[2].Load())

	rep, err := ps[0].Keys(ctx, KeyList, nil)
	if err != nil {
		t.Fatal(err)
	}
	nk := base64.StdEncoding.EncodeToString(newKey)
	if len(rep.Keys) != 1 || rep.Keys[nk] != 3 || rep.PrimaryKeys[nk] != 3 {
		t.Errorf("list after the rotation: %+v, want only the new key, primary on 3", rep)
	}
	if _, err := ps[1].Keys(ctx, KeyRemove, newKey); !errors.Is(err, ErrPrimaryKey) {
		t.Errorf("remove of the primary key: %v, want ErrPrimaryKey", err)
	}
	if _, err := ps[1].Keys(ctx, KeyInstall, []byte("short")); err == nil {
		t.Error("install of a 5-byte key succeeded")
	}

	cfg := c.config("stale", gossipAddr(ps[0]))
	cfg.Key = oldKey
	jctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if p, err := start(jctx, cfg, c.listen); !errors.Is(err, ErrKeyMismatch) {
		if err == nil {
			p.kill()
		}
		t.Errorf("a peer with the old key joined: %v, want ErrKeyMismatch", err)
	}
}

func TestKeysPlaintext(t *testing.T) {
	c := newCluster(t, listenTCP)
	p := c.start("p0")
	if _, err := p.Keys(context.Background(), KeyList, nil); !errors.Is(err, ErrNotEncrypted) {
		t.Errorf("keys list on a plaintext peer: %v, want ErrNotEncrypted", err)
	}
}
