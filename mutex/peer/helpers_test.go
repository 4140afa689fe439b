package peer

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dlockfs/dlockfs/mutex"
	"github.com/dlockfs/dlockfs/mutex/testutil"
)

// testLogger logs to stderr when DLOCKFS_TEST_LOG is set (to "debug" for
// everything), else discards.
func testLogger() *slog.Logger {
	switch os.Getenv("DLOCKFS_TEST_LOG") {
	case "":
		return slog.New(slog.DiscardHandler)
	case "debug":
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	default:
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
}

// cluster is a set of real peers (real Serf, fast profile) on 127.0.0.1.
type cluster struct {
	t       testing.TB
	listen  func(transportConfig) (lockTransport, error)
	key     []byte
	keep    bool
	profile string // default ProfileFast
	quorum  string // default QuorumMajority

	mu    sync.Mutex
	peers []*Peer // in start order, stopped ones included
}

func newCluster(t testing.TB, listen func(transportConfig) (lockTransport, error)) *cluster {
	c := &cluster{t: t, listen: listen}
	t.Cleanup(c.stopAll)
	return c
}

func (c *cluster) config(name string, join ...string) Config {
	profile := c.profile
	if profile == "" {
		profile = ProfileFast
	}
	return Config{
		Name:            name,
		BindAddr:        "127.0.0.1:0",
		LockAddr:        "127.0.0.1:0",
		Profile:         profile,
		Join:            join,
		Key:             c.key,
		KeepPermissions: c.keep,
		Quorum:          c.quorum,
		Logger:          testLogger().With("test", c.t.Name()),
	}
}

// start starts a peer that joins the first live one.
func (c *cluster) start(name string) *Peer {
	c.t.Helper()
	p, err := c.startCfg(c.config(name, c.joinAddrs()...))
	if err != nil {
		c.t.Fatalf("start %s: %v", name, err)
	}
	return p
}

func (c *cluster) startCfg(cfg Config) (*Peer, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := start(ctx, cfg, c.listen)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.peers = append(c.peers, p)
	c.mu.Unlock()
	return p, nil
}

func (c *cluster) joinAddrs() []string {
	for _, p := range c.live() {
		return []string{gossipAddr(p)}
	}
	return nil
}

func gossipAddr(p *Peer) string { return p.GossipAddr() }

// live returns the peers not stopped.
func (c *cluster) live() []*Peer {
	c.mu.Lock()
	defer c.mu.Unlock()
	var live []*Peer
	for _, p := range c.peers {
		select {
		case <-p.Done():
		default:
			live = append(live, p)
		}
	}
	return live
}

// startN starts n peers named p0..p(n-1) and waits until every one counts
// every other as a member.
func (c *cluster) startN(n int) []*Peer {
	c.t.Helper()
	ps := make([]*Peer, n)
	for i := range ps {
		ps[i] = c.start(fmt.Sprintf("p%d", i))
	}
	c.waitConverged()
	return ps
}

// waitConverged waits until the cores of the live peers all count each
// other (and nobody else) as members.
func (c *cluster) waitConverged() {
	c.t.Helper()
	defer func() {
		if c.t.Failed() {
			for _, p := range c.live() {
				cs := p.coreStatus()
				c.t.Logf("%s/%d: core members %v; serf members %+v; quorum %+v", p.Node(), p.Incarnation(),
					cs.Members, p.Status().Members, cs.Quorum)
			}
		}
	}()
	testutil.WaitFor(c.t, 15*time.Second, "membership to converge", func() bool {
		live := c.live()
		for _, p := range live {
			want := map[string]uint64{}
			for _, q := range live {
				if q != p {
					want[q.Node()] = q.Incarnation()
				}
			}
			got := map[string]uint64{}
			for _, m := range p.coreStatus().Members {
				got[m.Name] = m.Incarnation
			}
			if len(got) != len(want) {
				return false
			}
			for k, v := range want {
				if got[k] != v {
					return false
				}
			}
		}
		return true
	})
}

func (c *cluster) stopAll() {
	var wg sync.WaitGroup
	c.mu.Lock()
	ps := slices.Clone(c.peers)
	c.mu.Unlock()
	for _, p := range ps {
		wg.Go(p.kill)
	}
	wg.Wait()
}

// guard is an in-test shared resource: it detects overlapping holds and
// lost updates, and checks that fencing tokens rise.
type guard struct {
	mu      sync.Mutex
	inside  map[string]*atomic.Int32
	count   map[string]*atomic.Int64
	tokens  map[string]uint64
	crashed bool // a holder may have crashed: tokens need not rise
	errs    []string
}

func newGuard() *guard {
	return &guard{inside: map[string]*atomic.Int32{}, count: map[string]*atomic.Int64{}, tokens: map[string]uint64{}}
}

func (g *guard) lockState(lock string) (*atomic.Int32, *atomic.Int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.inside[lock] == nil {
		g.inside[lock] = new(atomic.Int32)
		g.count[lock] = new(atomic.Int64)
	}
	return g.inside[lock], g.count[lock]
}

func (g *guard) fail(format string, args ...any) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.errs = append(g.errs, fmt.Sprintf(format, args...))
}

// enter is the critical section: it checks exclusion and increments the
// lock's counter with a separate load and store, so that an overlapping
// holder loses an update.
func (g *guard) enter(who string, gr mutex.Grant, work func()) {
	inside, count := g.lockState(gr.Lock)
	if n := inside.Add(1); n != 1 {
		g.fail("%s entered %q with %d holders inside", who, gr.Lock, n)
	}
	g.mu.Lock()
	if last := g.tokens[gr.Lock]; gr.Token <= last && !g.crashed {
		g.errs = append(g.errs, fmt.Sprintf("%s: token %d after %d on %q", who, gr.Token, last, gr.Lock))
	}
	g.tokens[gr.Lock] = max(g.tokens[gr.Lock], gr.Token)
	g.mu.Unlock()
	v := count.Load()
	if work != nil {
		work()
	}
	count.Store(v + 1)
	inside.Add(-1)
}

// exit is for holders that never leave (crashed): the section ends for the
// others without counting.
func (g *guard) abandon(lock string) {
	inside, _ := g.lockState(lock)
	inside.Add(-1)
}

func (g *guard) total(lock string) int64 {
	_, count := g.lockState(lock)
	return count.Load()
}

func (g *guard) check(t testing.TB) {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, e := range g.errs {
		t.Error(e)
	}
}

// lockT locks with a bounded context, failing the test on error.
func lockT(t testing.TB, p *Peer, lock string, timeout time.Duration) mutex.Grant {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	g, err := p.Lock(ctx, lock)
	if err != nil {
		t.Fatalf("%s: lock %q: %v", p.Node(), lock, err)
	}
	return g
}

// lockAsync starts a Lock in a goroutine; the channel yields its outcome.
func lockAsync(ctx context.Context, p *Peer, lock string) <-chan result {
	ch := make(chan result, 1)
	go func() {
		g, err := p.Lock(ctx, lock)
		ch <- result{grant: g, err: err}
	}()
	return ch
}

// recvWithin waits for an outcome, failing the test after timeout.
func recvWithin(t testing.TB, ch <-chan result, timeout time.Duration, what string) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(timeout):
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
		return result{}
	}
}

// waitLockState waits until p's lock is in phase want.
func waitLockState(t testing.TB, p *Peer, lock string, want mutex.Phase, timeout time.Duration) {
	t.Helper()
	testutil.WaitFor(t, timeout, fmt.Sprintf("%s: %q %v", p.Node(), lock, want), func() bool {
		for _, l := range p.coreStatus().Locks {
			if l.Name == lock {
				return l.Phase == want
			}
		}
		return want == mutex.Idle
	})
}

// waitDeferred waits until p defers from's request on lock.
func waitDeferred(t testing.TB, p *Peer, lock, from string, timeout time.Duration) {
	t.Helper()
	testutil.WaitFor(t, timeout, fmt.Sprintf("%s to defer %s on %q", p.Node(), from, lock), func() bool {
		for _, l := range p.coreStatus().Locks {
			if l.Name == lock {
				return slices.Contains(l.Queued, from)
			}
		}
		return false
	})
}

// lockEnter locks, enters the guard and unlocks, in a goroutine.
func lockEnter(ctx context.Context, p *Peer, lock string, g *guard) <-chan error {
	ch := make(chan error, 1)
	go func() {
		gr, err := p.Lock(ctx, lock)
		if err != nil {
			ch <- err
			return
		}
		g.enter(p.Node(), gr, nil)
		ch <- p.Unlock(gr)
	}()
	return ch
}

// recvErr waits for an error value, failing the test after timeout.
func recvErr(t testing.TB, ch <-chan error, timeout time.Duration, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(timeout):
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
		return nil
	}
}
