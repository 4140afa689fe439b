package e2e

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dlockfs/dlockfs/mutex/peer"
)

// TestDrainingStop stops a peer with SIGTERM while its shell holds the
// lock and a peer's shell waits for it: the peer drains. It refuses new
// local opens and withdraws its local waiter, still answers the others,
// and leaves only once its holder has released; the holder keeps the lock
// to its end, and the waiter elsewhere enters only after that.
func TestDrainingStop(t *testing.T) {
	needEnv(t)
	nodes := startCluster(t, 3, nodeOpts{})
	a, b := nodes[0], nodes[1]
	h := shellHold(t, a, "lock")
	tok, _ := held(t, h.waitLine(t, startTimeout, "held "))
	wb := shellHold(t, b, "lock")
	waitQueued(t, a, "lock", b.name)
	wa := shellHold(t, a, "lock") // a local waiter: withdrawn by the drain
	waitWaiting(t, a, "lock", 1)

	a.p.signal(t, syscall.SIGTERM)
	waitFor(t, startTimeout, "a's .status to show draining", func() bool {
		d, err := a.status()
		return err == nil && d.Draining
	})
	if code := wa.wait(t, stopTimeout); code == 0 || wa.hasLine("held ") {
		t.Errorf("a's waiter during the drain: exit %d, output %q", code, wa.output())
	}
	code, _, stderr := run(t, stopTimeout, "bash", "-c", `exec 9<"$1/lock"`, "new", a.dir)
	if code == 0 || !strings.Contains(stderr, "Cannot send after transport endpoint shutdown") {
		t.Errorf("a new open on a draining peer: exit %d, stderr %q; want ESHUTDOWN", code, stderr)
	}
	// Still draining, still a member, still holding: b waits, queued.
	d := a.mustStatus(t)
	if l := d.lock("lock"); l.State != peer.LockHolding || l.Token != tok {
		t.Errorf("a's lock during the drain: %+v, want holding with token %d", l, tok)
	}
	if st := b.mustStatus(t).memberStatus(a.name); st != peer.MemberAlive || wb.hasLine("held ") {
		t.Errorf("during the drain b sees a %q and its waiter printed %q; want alive and still waiting", st, wb.output())
	}
	if a.p.exited() {
		t.Fatalf("a exited during the drain\nstderr: %s", a.p.stderr.String())
	}

	release(t, h)
	if code := a.p.wait(t, stopTimeout); code != 0 {
		t.Errorf("a exited %d after the drain, want 0\nstderr: %s", code, a.p.stderr.String())
	}
	rel := h.waitLine(t, startTimeout, "released ")
	relAt, err := parseMicros(strings.Fields(rel)[1])
	if err != nil {
		t.Fatal(err)
	}
	tokB, enterB := held(t, wb.waitLine(t, startTimeout, "held "))
	if enterB < relAt {
		t.Errorf("b's waiter entered at %d, before a's holder released at %d", enterB, relAt)
	}
	if tokB <= tok {
		t.Errorf("b's token %d not above a's %d", tokB, tok)
	}
	log := a.p.stderr.String()
	for _, want := range []string{"draining", "lock (token", "PID ", "drained: every local holder released"} {
		if !strings.Contains(log, want) {
			t.Errorf("a's log lacks %q:\n%s", want, log)
		}
	}
	t.Logf("b entered %s after a's holder released", ms(enterB-relAt))
	release(t, wb)
}

// TestDrainingStopCutShort: a drain ends at --drain-timeout, or at a second
// SIGTERM, while the holder still holds: the peer leaves and the waiter on
// another peer is granted.
func TestDrainingStopCutShort(t *testing.T) {
	needEnv(t)
	for _, tc := range []struct {
		name  string
		extra []string
	}{
		{"drain-timeout", []string{"--drain-timeout", "500ms"}},
		{"second-signal", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nodes := startCluster(t, 2, nodeOpts{extra: tc.extra})
			a, b := nodes[0], nodes[1]
			h := shellHold(t, a, "lock")
			h.waitLine(t, startTimeout, "held ")
			wb := shellHold(t, b, "lock")
			waitQueued(t, a, "lock", b.name)
			term := time.Now()
			a.p.signal(t, syscall.SIGTERM)
			waitFor(t, startTimeout, "a's .status to show draining", func() bool {
				d, err := a.status()
				return err == nil && d.Draining
			})
			if tc.extra == nil {
				// Repeats within a second are the same request (timeout(1)
				// and group kills deliver SIGTERM twice): the pause is the
				// behaviour under test, not synchronisation.
				time.Sleep(time.Until(term.Add(1100 * time.Millisecond)))
				a.p.signal(t, syscall.SIGTERM)
			}
			if code := a.p.wait(t, stopTimeout); code != 0 {
				t.Errorf("a exited %d, want 0\nstderr: %s", code, a.p.stderr.String())
			}
			wb.waitLine(t, startTimeout, "held ")
			want := "--drain-timeout passed"
			if tc.extra == nil {
				want = "second signal: leaving now"
			}
			if log := a.p.stderr.String(); !strings.Contains(log, want) {
				t.Errorf("a's log lacks %q:\n%s", want, log)
			}
			release(t, wb)
		})
	}
}
