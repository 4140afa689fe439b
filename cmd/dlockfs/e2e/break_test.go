package e2e

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBreak: `dlockfs break NAME` on c ends a's hold of NAME, which would
// last for ever otherwise: a's `dlockfs lock` exits 17 (revoked), a waiter
// on b is granted the lock, and every node logs the break. A break of a
// lock nobody holds is an error that changes nothing.
func TestBreak(t *testing.T) {
	needEnv(t)
	nodes := startCluster(t, 3, nodeOpts{})
	a, b, c := nodes[0], nodes[1], nodes[2]

	if code, _, errs := dlockfs(t, 30*time.Second, "break", "--control", c.control(), "free"); code != 1 ||
		!strings.Contains(errs, "nobody holds it") {
		t.Fatalf("break of a free lock: exit %d, stderr %q; want 1 and 'nobody holds it'", code, errs)
	}

	l := startProc(t, "lock on a", workerTimeout, suite.binary, "lock", "--revoke-grace", "1s",
		filepath.Join(a.dir, "x"), "--", "sh", "-c", "echo held; exec sleep 600")
	l.waitLine(t, startTimeout, "held")
	w := shellHold(t, b, "x")
	start := time.Now()
	if code, out, errs := dlockfs(t, 30*time.Second, "break", "--control", c.control(), "x"); code != 0 ||
		!strings.Contains(out, "broke x") {
		t.Fatalf("break x: exit %d, stdout %q, stderr %q; want 0 and 'broke x'", code, out, errs)
	}
	if code := l.wait(t, startTimeout); code != 17 {
		t.Fatalf("a's dlockfs lock exited %d, want 17 (revoked by the break)\nstderr: %s", code, l.stderr.String())
	}
	w.waitLine(t, startTimeout, "held ")
	t.Logf("b granted x %v after the break on c", time.Since(start).Round(time.Millisecond))
	release(t, w)
	for _, n := range nodes {
		log := n.p.stderr.String()
		if !strings.Contains(log, "an operator broke") {
			t.Errorf("%s's log does not mention the break:\n%s", n.name, log)
		}
	}
	if log := a.p.stderr.String(); !strings.Contains(log, "broke this peer's hold") {
		t.Errorf("a's log does not say its own hold was broken")
	}
}
