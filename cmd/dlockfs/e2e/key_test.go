package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// keyFile writes a fresh "dlockfs keygen" key to a private file.
func keyFile(t *testing.T) string {
	t.Helper()
	code, out, errOut := run(t, 10*time.Second, suite.binary, "keygen")
	if code != 0 {
		t.Fatalf("dlockfs keygen: exit %d: %s", code, errOut)
	}
	p := filepath.Join(t.TempDir(), "cluster.key")
	if err := os.WriteFile(p, []byte(out+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestWrongKey: a peer with another key, or with no key, cannot join an
// encrypted cluster: its mount command fails, it is never listed as a
// member, and it never takes the lock.
func TestWrongKey(t *testing.T) {
	needEnv(t)
	k1 := keyFile(t)
	nodes := startCluster(t, 2, nodeOpts{keyFile: k1})
	a, b := nodes[0], nodes[1]
	for _, n := range nodes {
		if !strings.Contains(n.line, ", encrypted") {
			t.Fatalf("%s's mounted line %q does not say encrypted", n.name, n.line)
		}
	}
	// a holds the lock throughout: an intruder that got in would have
	// to wait, and an intruder that granted itself would show as held.
	h := shellHold(t, a, "lock")
	h.waitLine(t, startTimeout, "held ")

	for _, tc := range []struct {
		name, key string
	}{
		{"other-key", keyFile(t)},
		{"no-key", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Watch both members' lists while the intruder tries.
			stop := make(chan struct{})
			seen := make(chan string, 1)
			go func() {
				for {
					select {
					case <-stop:
						close(seen)
						return
					case <-time.After(pollEvery):
					}
					for _, n := range nodes {
						if d, err := n.status(); err == nil && d.memberStatus("x") != "" {
							select {
							case seen <- n.name + " lists x as " + d.memberStatus("x"):
							default:
							}
						}
					}
				}
			}()
			x := startMount(t, nodeOpts{name: "x", join: []string{a.bind}, keyFile: tc.key})
			code := x.p.wait(t, 20*time.Second+stopTimeout)
			close(stop)
			if s, ok := <-seen; ok {
				t.Errorf("intruder %s: %s", tc.name, s)
			}
			if code == 0 {
				t.Errorf("intruder %s: mount exited 0, want non-zero\nstdout: %q\nstderr: %s",
					tc.name, x.p.output(), x.p.stderr.String())
			}
			if mounted(x.dir) || x.p.hasLine("dlockfs: node ") {
				t.Errorf("intruder %s mounted: %q", tc.name, x.p.output())
			}
			if _, err := os.Stat(filepath.Join(x.dir, "lock")); err == nil {
				t.Errorf("intruder %s: %s/lock exists", tc.name, x.dir)
			}
			errLines := strings.Split(strings.TrimSpace(x.p.stderr.String()), "\n")
			t.Logf("intruder with %s: mount exited %d: %s", tc.name, code, errLines[len(errLines)-1])
		})
	}
	for _, n := range nodes {
		if !n.seesAlive(a.name, b.name) {
			t.Errorf("%s does not see exactly a and b alive: %+v", n.name, n.mustStatus(t).Members)
		}
	}
	// The members still share the lock.
	wb := shellHold(t, b, "lock")
	waitWaiting(t, b, "lock", 1)
	release(t, h)
	wb.waitLine(t, startTimeout, "held ")
	release(t, wb)
	waitIdle(t, startTimeout, nodes, "lock")
}
