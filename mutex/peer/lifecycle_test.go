package peer

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/serf/serf"
)

// Leave and kill are safe from every state of the lifecycle and idempotent:
// whatever the order, each call returns, the peer ends stopped with every
// goroutine's work over, a second Leave returns the first one's result,
// and nothing panics (memberlist panics on a Leave after its Shutdown).
// Joined and leaving run on real Serf (with the in-memory lock channel,
// whose Flush can be held so that a Leave stays in leaving); starting has
// no Serf (Start has not returned a peer yet).
func TestLifecycleEveryState(t *testing.T) {
	seqs := []struct {
		name string
		ops  []string // "leave", "kill", "both" (at once)
	}{
		{"leave", []string{"leave"}},
		{"kill", []string{"kill"}},
		{"leave twice", []string{"leave", "leave"}},
		{"kill twice", []string{"kill", "kill"}},
		{"leave then kill", []string{"leave", "kill"}},
		{"kill then leave", []string{"kill", "leave"}},
		{"both at once", []string{"both"}},
	}
	for _, st := range []lifeState{stateStarting, stateJoined, stateLeaving, stateStopped} {
		for _, seq := range seqs {
			t.Run(st.String()+"/"+seq.name, func(t *testing.T) {
				p, first, gate := peerInState(t, st)
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				var (
					mu      sync.Mutex
					results []error
				)
				leave := func() {
					err := p.Leave(ctx)
					mu.Lock()
					results = append(results, err)
					mu.Unlock()
				}
				done := make(chan struct{})
				go func() {
					defer close(done)
					for _, op := range seq.ops {
						switch op {
						case "leave":
							leave()
						case "kill":
							p.kill()
						case "both":
							var wg sync.WaitGroup
							wg.Go(leave)
							wg.Go(p.kill)
							wg.Wait()
						}
					}
				}()
				if gate != nil && seq.ops[0] == "leave" {
					// The Leave waits for the one in progress, which
					// waits for the held flush: let it go.
					close(gate)
				}
				select {
				case <-done:
				case <-time.After(20 * time.Second):
					t.Fatalf("%v did not return in state %s", seq.ops, st)
				}
				if gate != nil && seq.ops[0] != "leave" {
					close(gate)
				}
				select {
				case <-p.Done():
				default:
					t.Fatal("Done not closed")
				}
				if got := p.lifeStateNow(); got != stateStopped {
					t.Errorf("state %s after %v, want stopped", got, seq.ops)
				}
				if _, err := p.TryLock(ctx, "x"); !errors.Is(err, ErrClosed) {
					t.Errorf("TryLock after %v: %v, want ErrClosed", seq.ops, err)
				}
				// Every Leave returns the first outcome: the first Leave's
				// result, or nil after a kill (no cause: nothing broke).
				if first != nil {
					results = append([]error{<-first}, results...)
				}
				for i, err := range results {
					if err != results[0] {
						t.Errorf("Leave #%d returned %v, the first %v", i+1, err, results[0])
					}
				}
				if err := p.Leave(ctx); len(results) > 0 && err != results[0] {
					t.Errorf("a last Leave returned %v, the first %v", err, results[0])
				}
				if err := p.Err(); err != nil {
					t.Errorf("Err() = %v, want nil (the peer did not stop on its own)", err)
				}
			})
		}
	}
}

// peerInState returns a peer in state st. In leaving, a Leave is under way
// (its result comes on first) and held in its flush until gate is closed.
func peerInState(t *testing.T, st lifeState) (p *Peer, first <-chan error, gate chan struct{}) {
	t.Helper()
	if st == stateStarting {
		p, _ = memPeer(t, newMemNet(), "me", 7)
	} else {
		net := newMemNet()
		c := newCluster(t, net.listen)
		p = c.startN(2)[1]
		if st == stateLeaving {
			gate = p.tr.(*memTransport).gateFlush()
			t.Cleanup(func() {
				select {
				case <-gate:
				default:
					close(gate)
				}
			})
			res := make(chan error, 1)
			go func() { res <- p.Leave(context.Background()) }()
			first = res
			<-p.tr.(*memTransport).flushed
		}
		if st == stateStopped {
			if err := p.Leave(context.Background()); err != nil {
				t.Fatalf("leave: %v", err)
			}
		}
	}
	if got := p.lifeStateNow(); got != st {
		t.Fatalf("peer in state %s, want %s", got, st)
	}
	return p, first, gate
}

// A peer whose Serf shuts down on its own stops, as if it left, with
// ErrSerfDown as its cause, from Leave too.
func TestLifecycleSerfDown(t *testing.T) {
	c := newCluster(t, listenTCP)
	ps := c.startN(2)
	if err := ps[1].serf.Shutdown(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ps[1].Done():
	case <-time.After(10 * time.Second):
		t.Fatal("peer not stopped after its Serf shut down")
	}
	if err := ps[1].Err(); !errors.Is(err, ErrSerfDown) {
		t.Errorf("Err() = %v, want ErrSerfDown", err)
	}
	if err := ps[1].Leave(context.Background()); !errors.Is(err, ErrSerfDown) {
		t.Errorf("Leave() = %v, want ErrSerfDown", err)
	}
	ps[1].kill()
}

// conflictWatch against two real Serf instances with one name: the
// newcomer's watch receives the claim of the node that has the name, at
// that node's address, by the time its Join returns; a member under
// another name raises nothing.
func TestConflictWatchRealSerf(t *testing.T) {
	newSerf := func(name, nonce string) (*serf.Serf, chan serf.Member) {
		t.Helper()
		claims := make(chan serf.Member, 16)
		mc, _ := profile(ProfileFast)
		mc.BindAddr, mc.BindPort = "127.0.0.1", 0
		mc.Logger = newSerfLogger(testLogger())
		sc := serf.DefaultConfig()
		sc.NodeName = name
		sc.Tags = map[string]string{tagNonce: nonce}
		sc.LogOutput = nil
		sc.Logger = mc.Logger
		sc.MemberlistConfig = mc
		sc.EnableNameConflictResolution = false
		sc.Merge = conflictWatch{name: name, nonce: nonce, claims: claims}
		s, err := serf.Create(sc)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Shutdown() })
		return s, claims
	}
	addr := func(s *serf.Serf) string {
		m := s.LocalMember()
		return net.JoinHostPort(m.Addr.String(), strconv.Itoa(int(m.Port)))
	}
	a, _ := newSerf("x", "1")
	other, otherClaims := newSerf("y", "3")
	if _, err := other.Join([]string{addr(a)}, true); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-otherClaims:
		t.Fatalf("a claim to %q by %s under another name", m.Name, m.Addr)
	default:
	}
	b, claims := newSerf("x", "2")
	_, _ = b.Join([]string{addr(a)}, true)
	select {
	case m := <-claims:
		if got, want := net.JoinHostPort(m.Addr.String(), strconv.Itoa(int(m.Port))), addr(a); got != want {
			t.Errorf("claim from %s, want %s", got, want)
		}
	default:
		t.Fatal("no claim seen by the time Join returned")
	}
}
