package e2e

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// leaseFast and delayFast are the fast profile's lease and lock-delay
// (peer.LeaseTimes): after a crash the others grant again within about
// leaseFast + delayFast. Waits below are bounds, not assertions on it.
const (
	leaseFast    = time.Second
	delayFast    = 2 * time.Second
	failoverFast = leaseFast + delayFast
)

// dlockfs runs the dlockfs binary with args, bounded by limit.
func dlockfs(t *testing.T, limit time.Duration, args ...string) (int, string, string) {
	t.Helper()
	return run(t, limit, append([]string{suite.binary}, args...)...)
}

// waitNoMajority waits until n's .status says it has no majority.
func waitNoMajority(t *testing.T, n *node) statusDoc {
	t.Helper()
	var d statusDoc
	waitFor(t, startTimeout, n.name+" to report no majority", func() bool {
		var err error
		d, err = n.status()
		return err == nil && d.Quorum != nil && !d.Quorum.HasMajority && !d.Quorum.LeaseValid
	})
	return d
}

// waitVoters waits until every node's voter set is want.
func waitVoters(t *testing.T, nodes []*node, want ...string) {
	t.Helper()
	waitFor(t, startTimeout, "voters "+strings.Join(want, ","), func() bool {
		for _, n := range nodes {
			d, err := n.status()
			if err != nil || !slices.Equal(d.voters(), want) {
				return false
			}
		}
		return true
	})
}

// TestTwoPeersForgetForce: a 2-peer cluster in majority mode that loses one
// peer to SIGKILL grants nothing (lock --timeout exits 13), says so in
// .status and dlockfs status with the command that unblocks it, and grants
// again after that command.
func TestTwoPeersForgetForce(t *testing.T) {
	needEnv(t)
	nodes := startCluster(t, 2, nodeOpts{})
	a, b := nodes[0], nodes[1]
	waitVoters(t, nodes, "a", "b")
	if code, out, errs := dlockfs(t, 30*time.Second, "lock", "--timeout", "20s", a.dir, "--", "true"); code != 0 {
		t.Fatalf("lock with both peers: exit %d\n%s\n%s", code, out, errs)
	}
	b.kill(t)

	d := waitNoMajority(t, a)
	t.Logf("a's quorum after b's SIGKILL: %+v", *d.Quorum)
	if code, _, errs := dlockfs(t, 30*time.Second, "lock", "--timeout", "2s", a.dir, "--", "true"); code != 13 {
		t.Fatalf("lock --timeout 2s without a majority: exit %d, want 13\n%s", code, errs)
	}
	want := "dlockfs forget --control " + a.control() + " --force b"
	code, out, errs := dlockfs(t, 30*time.Second, "status", a.dir)
	if code != 0 || !strings.Contains(out, "NO MAJORITY") || !strings.Contains(out, want) {
		t.Fatalf("status: exit %d, want NO MAJORITY and %q:\n%s\n%s", code, want, out, errs)
	}

	// forget without --force cannot work: there is no majority.
	if code, _, errs := dlockfs(t, 30*time.Second, "forget", "--control", a.control(), "--timeout", "2s", "b"); code != 1 ||
		!strings.Contains(errs, "--force") {
		t.Errorf("forget without --force: exit %d, want 1 and a hint at --force\n%s", code, errs)
	}
	if code, _, errs := dlockfs(t, 30*time.Second, "forget", "--control", a.control(), "--timeout", "5s", "zz"); code != 1 ||
		!strings.Contains(errs, "not a voter") {
		t.Errorf("forget of a stranger: exit %d, want 1 and 'not a voter'\n%s", code, errs)
	}
	if code, out, errs := dlockfs(t, 40*time.Second, strings.Fields(want)[1:]...); code != 0 {
		t.Fatalf("%s: exit %d\n%s\n%s", want, code, out, errs)
	}
	waitVoters(t, []*node{a}, "a")
	if code, _, errs := dlockfs(t, 30*time.Second, "lock", "--timeout", "20s", a.dir, "--", "true"); code != 0 {
		t.Fatalf("lock after forget --force: exit %d\n%s", code, errs)
	}
	if code, out, _ := dlockfs(t, 30*time.Second, "status", a.dir); strings.Contains(out, "NO MAJORITY") || code != 0 {
		t.Errorf("status after forget still says NO MAJORITY (exit %d):\n%s", code, out)
	}
}

// TestThreePeersKillAndForget: of 3 peers, SIGKILL one holding the lock;
// the other two grant again (after about lease + lock-delay, logged), and
// forget without --force removes the dead one.
func TestThreePeersKillAndForget(t *testing.T) {
	needEnv(t)
	nodes := startCluster(t, 3, nodeOpts{})
	a, b, c := nodes[0], nodes[1], nodes[2]
	waitVoters(t, nodes, "a", "b", "c")
	h := shellHold(t, c, "lock")
	tok1, _ := held(t, h.waitLine(t, startTimeout, "held "))
	w := shellHold(t, a, "lock")
	waitWaiting(t, a, "lock", 1)
	killed := nowMicros()
	c.kill(t)
	tok2, enter := held(t, w.waitLine(t, startTimeout, "held "))
	t.Logf("after SIGKILL of the holder's peer, a was granted after %s (lease + lock-delay = %v)",
		ms(enter-killed), failoverFast)
	if tok2 <= tok1 {
		t.Errorf("token after failover %d not above the dead holder's %d", tok2, tok1)
	}
	release(t, w)
	if code, out, errs := dlockfs(t, 40*time.Second, "forget", "--control", b.control(), "c"); code != 0 {
		t.Fatalf("forget c: exit %d\n%s\n%s", code, out, errs)
	}
	waitVoters(t, []*node{a, b}, "a", "b")
	if code, _, errs := dlockfs(t, 30*time.Second, "lock", "--timeout", "20s", b.dir, "--", "true"); code != 0 {
		t.Fatalf("lock after forget: exit %d\n%s", code, errs)
	}
}

// revokedCmd is the CMD of TestLockRevoked: it prints its token, then
// becomes sleep 60 (lock's SIGTERM goes to CMD itself, not to children
// it left in the background).
const revokedCmd = `echo "cmd-token $DLOCKFS_TOKEN"; exec sleep 60`

// TestLockRevoked: 3 peers; 'dlockfs lock' on a holds the lock with a
// sleeping CMD while b waits. a's daemon is paused (SIGSTOP) until b is
// granted (which takes about lease + lock-delay), then resumed: a's lease
// has lapsed, so its hold is revoked, CMD is terminated and lock exits 17.
// b's token is above a's. With shared, two 'dlockfs lock --shared' on a
// hold the lock together (one shared group) and both are revoked.
func TestLockRevoked(t *testing.T) {
	needEnv(t)
	for _, shared := range []bool{false, true} {
		t.Run(fmt.Sprintf("shared=%v", shared), func(t *testing.T) { lockRevoked(t, shared) })
	}
}

func lockRevoked(t *testing.T, shared bool) {
	nodes := startCluster(t, 3, nodeOpts{})
	a, b := nodes[0], nodes[1]
	waitVoters(t, nodes, "a", "b", "c")
	argv := []string{suite.binary, "lock", "--revoke-grace", "2s", a.dir, "--", "bash", "-c", revokedCmd}
	n := 1
	if shared {
		argv = slices.Insert(argv, 2, "--shared")
		n = 2
	}
	var ls []*proc
	var tokA uint64
	for range n {
		l := startProc(t, "dlockfs lock on a", workerTimeout, argv...)
		line := l.waitLine(t, startTimeout, "cmd-token ")
		tok, err := strconv.ParseUint(strings.TrimPrefix(line, "cmd-token "), 10, 64)
		if err != nil {
			t.Fatalf("bad token line %q", line)
		}
		tokA = max(tokA, tok)
		ls = append(ls, l)
	}
	if shared {
		waitLock(t, startTimeout, []*node{a}, "lock", "held by two readers", func(l lockDoc) bool {
			return l.State == "holding" && l.Mode == "shared" && l.Holders == 2
		})
	}
	w := shellHold(t, b, "lock")
	waitWaiting(t, b, "lock", 1)

	a.p.signal(t, syscall.SIGSTOP)
	stopped := nowMicros()
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = a.p.cmd.Process.Signal(syscall.SIGCONT)
		}
	}
	t.Cleanup(resume)
	tokB, enter := held(t, w.waitLine(t, startTimeout, "held "))
	t.Logf("b granted %s after a's daemon was paused (lease + lock-delay = %v)", ms(enter-stopped), failoverFast)
	resume()

	for _, l := range ls {
		if code := l.wait(t, startTimeout); code != 17 {
			t.Fatalf("dlockfs lock exited %d, want 17\nstdout: %q\nstderr: %s", code, l.output(), l.stderr.String())
		}
		if !strings.Contains(l.stderr.String(), "sending SIGTERM to CMD") || strings.Contains(l.stderr.String(), "SIGKILL\n") {
			t.Errorf("CMD was not ended by SIGTERM:\n%s", l.stderr.String())
		}
		if !strings.Contains(l.stderr.String(), "lock revoked") {
			t.Errorf("lock's stderr does not say 'lock revoked':\n%s", l.stderr.String())
		}
	}
	if tokB <= tokA {
		t.Errorf("b's token %d not above the revoked holder's %d", tokB, tokA)
	}
	if !strings.Contains(a.p.stderr.String(), "lock revoked") {
		t.Errorf("a's log does not say 'lock revoked'")
	}
	d := a.mustStatus(t)
	if d.Quorum == nil || d.Quorum.Revoked == 0 || d.Quorum.Lapses == 0 {
		t.Errorf("a's .status quorum does not count the lapse and the revocation: %+v", d.Quorum)
	}
	release(t, w)
	// a grants again once its lease is back.
	if code, _, errs := dlockfs(t, 30*time.Second, "lock", "--timeout", "20s", a.dir, "--", "true"); code != 0 {
		t.Fatalf("lock on a after the pause: exit %d\n%s", code, errs)
	}
}
