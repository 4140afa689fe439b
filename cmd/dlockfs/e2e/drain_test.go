package e2e

import (
	"strings"
	"syscall"
	"testing"
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
	if l := d.lock("lock"); l.State != "holding" || l.Token != tok {
		t.Errorf("a's lock during the drain: %+v, want holding with token %d", l, tok)
	}
	if st := b.mustStatus(t).memberStatus(a.name); st != "alive" || wb.hasLine("held ") {
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
