package e2e

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dlockfs/dlockfs/mutex/peer"
)

// setlkC is a C program using fcntl(2) locks: PROG FILE wait|try [SECS]
// takes a write lock on FILE (F_SETLKW or F_SETLK; with SECS, SIGALRM
// without SA_RESTART interrupts the wait), prints "held" and holds until
// a line arrives on stdin; on failure it prints "error STRERROR", exit 1.
const setlkC = `#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static void onalarm(int sig) { (void)sig; }
int main(int argc, char **argv) {
	int fd = open(argv[1], O_RDWR);
	if (fd < 0) { printf("error open %s\n", strerror(errno)); return 2; }
	if (argc > 3) {
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_handler = onalarm; /* no SA_RESTART: the wait ends with EINTR */
		sigaction(SIGALRM, &sa, NULL);
		alarm(atoi(argv[3]));
	}
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	if (fcntl(fd, strcmp(argv[2], "wait") == 0 ? F_SETLKW : F_SETLK, &fl) < 0) {
		printf("error %s\n", strerror(errno));
		return 1;
	}
	printf("held\n");
	fflush(stdout);
	char c;
	if (read(0, &c, 1) < 0) return 3;
	return 0;
}
`

// TestLegacyFileLocks: unchanged programs that lock with flock(2),
// fcntl(2) or lockf(3) in MOUNT/flock/ exclude each other across two
// peers: util-linux flock(1) in its forms, python3 fcntl.flock and
// fcntl.lockf, perl flock, a C program with F_SETLK(W) and, if installed,
// lckdo (moreutils). The
// non-blocking forms fail at once, timed and interrupted waits end, and no
// request is left behind on either peer.
func TestLegacyFileLocks(t *testing.T) {
	needEnv(t)
	for _, prog := range []string{"flock", "python3", "perl", "gcc"} {
		if _, err := exec.LookPath(prog); err != nil {
			t.Skipf("%s is not installed", prog)
		}
	}
	setlk := filepath.Join(t.TempDir(), "setlk")
	if err := os.WriteFile(setlk+".c", []byte(setlkC), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("gcc", "-Wall", "-o", setlk, setlk+".c").CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	nodes := startCluster(t, 2, nodeOpts{})
	a, b := nodes[0], nodes[1]

	// The holders, run on peer a: each prints "held" once it holds
	// MOUNT/flock/$2, then holds until a line arrives.
	holders := []struct{ name, script string }{
		{"flock(1)", `flock "$1/flock/$2" -c 'echo held; read -r _'`},
		{"flock(1) -x fd", `exec 9>"$1/flock/$2"; flock -x 9; echo held; read -r _`},
		{"flock(1) -o", `flock -o "$1/flock/$2" -c 'echo held; read -r _'`},
		{"flock(1) -F", `flock -F "$1/flock/$2" bash -c 'echo held; read -r _'`},
		{"flock(1) -s", `flock -s "$1/flock/$2" -c 'echo held; read -r _'`}, // a reader: the writers' tries fail
		{"python3 fcntl.flock", `python3 -c 'import fcntl,sys; f=open(sys.argv[1],"w"); fcntl.flock(f, fcntl.LOCK_EX); print("held", flush=True); sys.stdin.readline()' "$1/flock/$2"`},
		{"python3 fcntl.lockf", `python3 -c 'import fcntl,sys; f=open(sys.argv[1],"w"); fcntl.lockf(f, fcntl.LOCK_EX); print("held", flush=True); sys.stdin.readline()' "$1/flock/$2"`},
		{"perl flock", `perl -e 'use Fcntl qw(:flock); open(my $f, ">", $ARGV[0]) or die; flock($f, LOCK_EX) or die; $|=1; print "held\n"; <STDIN>' "$1/flock/$2"`},
		{"C fcntl(F_SETLKW)", setlk + ` "$1/flock/$2" wait`},
		{"flock(1) --verbose", `flock --verbose "$1/flock/$2" -c 'echo held; read -r _' 2>/dev/null`},
		{"root view open (<)", `exec 9<"$1/$2"; echo held; read -r _`},
		{"flock(1) -u then -x", `exec 9>"$1/flock/$2"; flock -x 9; flock -u 9; flock -x 9; echo held; read -r _`},
		{"python3 -s then -x", `python3 -c 'import fcntl,sys; f=open(sys.argv[1],"w"); fcntl.flock(f, fcntl.LOCK_SH); fcntl.flock(f, fcntl.LOCK_EX); print("held", flush=True); sys.stdin.readline()' "$1/flock/$2"`},
		{"C fcntl(F_SETLK) try", setlk + ` "$1/flock/$2" try`},
	}
	// The tries, run on peer b against a held lock: each must fail fast
	// (it prints what it got) and leave no request behind.
	tries := []struct{ name, script, want string }{
		{"flock -n", `flock -n "$1/flock/$2" true; echo "rc=$?"`, "rc=1"},
		{"flock -E", `flock -E 42 -n "$1/flock/$2" true; echo "rc=$?"`, "rc=42"},
		{"flock -s -n", `flock -s -n "$1/flock/$2" true; echo "rc=$?"`, "rc=1"},
		{"flock -w", `flock -w 0.3 "$1/flock/$2" true; echo "rc=$?"`, "rc=1"},
		{"flock -w --verbose", `flock --verbose -w 0.3 "$1/flock/$2" true 2>&1 | grep -c 'timeout while waiting'`, "1"},
		{"python3 flock NB", `python3 -c 'import fcntl,sys; f=open(sys.argv[1],"w")
try: fcntl.flock(f, fcntl.LOCK_EX|fcntl.LOCK_NB)
except BlockingIOError: print("busy")' "$1/flock/$2"`, "busy"},
		{"python3 lockf NB", `python3 -c 'import fcntl,sys; f=open(sys.argv[1],"w")
try: fcntl.lockf(f, fcntl.LOCK_EX|fcntl.LOCK_NB)
except OSError as e: print("busy", e.errno)' "$1/flock/$2"`, "busy 11"},
		{"perl flock NB", `perl -e 'use Fcntl qw(:flock); open(my $f, ">", $ARGV[0]) or die; print flock($f, LOCK_EX|LOCK_NB) ? "got\n" : "busy\n"' "$1/flock/$2"`, "busy"},
		{"C F_SETLK", setlk + ` "$1/flock/$2" try </dev/null`, "error Resource temporarily unavailable"},
		{"C F_SETLKW alarm", setlk + ` "$1/flock/$2" wait 1 </dev/null`, "error Interrupted system call"},
		{"timeout cat", `timeout 0.3 cat "$1/$2" >/dev/null; echo "rc=$?"`, "rc=124"},
	}
	// lckdo (moreutils: fcntl locks, F_GETLK for -t), if installed.
	if _, err := exec.LookPath("lckdo"); err == nil {
		holders = append(holders, struct{ name, script string }{"lckdo -w", `lckdo -w "$1/flock/$2" bash -c 'echo held; read -r _'`})
		tries = append(tries,
			struct{ name, script, want string }{"lckdo", `lckdo -q "$1/flock/$2" true; echo "rc=$?"`, "rc=75"},
			struct{ name, script, want string }{"lckdo -W", `lckdo -q -W 1 "$1/flock/$2" true; echo "rc=$?"`, "rc=75"},
			struct{ name, script, want string }{"lckdo -t", `lckdo -t "$1/flock/$2" 2>&1 | grep -c 'is locked by process'`, "1"})
	} else {
		t.Log("lckdo (moreutils) is not installed: not tested")
	}
	for i, hd := range holders {
		hname, hscript := hd.name, hd.script
		lock := "legacy" + string(rune('a'+i))
		// Every try against the first holder; the quick ones against
		// the others (the timed ones cost their timeout).
		ts := tries
		if i > 0 {
			ts = []struct{ name, script, want string }{tries[0], tries[6], tries[8]}
		}
		t.Run(hname, func(t *testing.T) {
			h := startProc(t, hname+" on a", workerTimeout, "bash", "-c", hscript, "holder", a.dir, lock)
			h.waitLine(t, startTimeout, "held")
			for _, tr := range ts {
				t0 := time.Now()
				code, out, errOut := run(t, 10*time.Second, "bash", "-c", tr.script, "try", b.dir, lock)
				if out != tr.want {
					t.Errorf("%s on b while %s holds: %q (exit %d, stderr %q), want %q", tr.name, hname, out, code, errOut, tr.want)
				}
				if d := time.Since(t0); d > 5*time.Second {
					t.Errorf("%s took %v", tr.name, d)
				}
			}
			waitLock(t, startTimeout, nodes, lock, "left with no request", noRequests)
			// A blocking flock on b waits, and is granted at the release.
			w := startProc(t, "waiter on b", workerTimeout, "bash", "-c", `flock "$1/flock/$2" -c 'echo got'`, "waiter", b.dir, lock)
			waitWaiting(t, b, lock, 1)
			if _, err := io.WriteString(h.stdin, "\n"); err != nil {
				t.Fatal(err)
			}
			w.waitLine(t, startTimeout, "got")
			if code := h.wait(t, stopTimeout); code != 0 {
				t.Errorf("holder exited %d; stderr %s", code, h.stderr.String())
			}
			waitIdle(t, startTimeout, nodes, lock)
		})
	}
}

// TestLegacyNamesAndDirs: a name made on one peer opens on the other
// without being created there; a killed flock holder releases at once; a
// process that would wait for itself fails
// with EDEADLK; and flock(1) on the mount's directories fails at once with
// EISDIR instead of taking a lock only local to the machine.
func TestLegacyNamesAndDirs(t *testing.T) {
	needEnv(t)
	nodes := startCluster(t, 2, nodeOpts{})
	a, b := nodes[0], nodes[1]
	h := startProc(t, "holder on a", workerTimeout, "bash", "-c", `exec 9>"$1/made-on-a"; echo held; read -r _`, "h", a.dir)
	h.waitLine(t, startTimeout, "held")
	code, out, _ := run(t, 10*time.Second, "bash", "-c", `test -e "$1/made-on-a" && echo exists; flock -n "$1/flock/made-on-a" true; echo "rc=$?"; flock -n "$1/never-made" true && echo free`, "b", b.dir)
	if code != 0 || out != "exists\nrc=1\nfree" {
		t.Errorf("on b: exit %d, %q", code, out)
	}
	release(t, h)
	// A killed flock holder on a releases at once to a waiter on b.
	k := startProc(t, "flock holder on a", workerTimeout, "bash", "-c", `exec 9>"$1/flock/k"; flock 9; echo held; read -r _`, "k", a.dir)
	k.waitLine(t, startTimeout, "held")
	w := startProc(t, "waiter on b", workerTimeout, "flock", b.dir+"/flock/k", "echo", "got")
	waitWaiting(t, b, "k", 1)
	k.signal(t, syscall.SIGKILL)
	w.waitLine(t, startTimeout, "got")
	waitIdle(t, startTimeout, nodes, "k")
	// A process waiting for itself fails at once (EDEADLK).
	for _, script := range []string{
		`exec 9<"$1/lock"; timeout 10 cat /proc/self/fd/9`,
		`exec 9<"$1/lock"; timeout 10 cat /dev/stdin <&9`,
		`exec 9>"$1/flock/lock"; flock 9; timeout 10 flock "$1/flock/lock" true`,
	} {
		code, out, errOut := run(t, 15*time.Second, "bash", "-c", script, "self", b.dir)
		if code == 0 || code == 124 || !strings.Contains(errOut, "Resource deadlock avoided") {
			t.Errorf("%s: exit %d, %q, %q; want EDEADLK", script, code, out, errOut)
		}
	}
	for _, dir := range []string{a.dir, b.dir + "/flock"} {
		code, out, errOut := run(t, 10*time.Second, "flock", "-n", dir, "true")
		if code == 0 || !strings.Contains(errOut, "Is a directory") {
			t.Errorf("flock -n %s: exit %d, %q, %q; want EISDIR", dir, code, out, errOut)
		}
	}
	waitIdle(t, startTimeout, nodes, "made-on-a")
}

// sharedScript returns a script that takes MOUNT/NAME ($1/$2) shared with
// the program kind names, prints "held TIME" once it holds, and holds until
// a line arrives on stdin.
func sharedScript(kind string) (string, bool) {
	s, ok := map[string]string{
		"flock -s":        `flock -s "$1/flock/$2" bash -c 'echo "held $EPOCHREALTIME"; read -r _'`,
		"python3 lockf":   `python3 -c 'import fcntl,sys,time; f=open(sys.argv[1],"r"); fcntl.lockf(f, fcntl.LOCK_SH); print("held %.6f" % time.time(), flush=True); sys.stdin.readline()' "$1/flock/$2"`,
		"perl LOCK_SH":    `perl -MTime::HiRes=time -e 'use Fcntl qw(:flock); open(my $f, "<", $ARGV[0]) or die; flock($f, LOCK_SH) or die; $|=1; printf "held %.6f\n", time; <STDIN>' "$1/flock/$2"`,
		"dlockfs lock -s": suite.binary + ` lock --shared "$1/$2" -- bash -c 'echo "held $EPOCHREALTIME"; read -r _'`,
	}[kind]
	return s, ok
}

func startShared(t *testing.T, kind string, n *node, lock string) *proc {
	t.Helper()
	script, ok := sharedScript(kind)
	if !ok {
		t.Fatalf("no shared holder %q", kind)
	}
	return startProc(t, kind+" on "+n.name, workerTimeout, "bash", "-c", script, "reader", n.dir, lock)
}

// waitShared waits until each node in ns holds lock shared with k local
// holders.
func waitShared(t *testing.T, lock string, k int, ns ...*node) {
	t.Helper()
	waitLock(t, startTimeout, ns, lock, fmt.Sprintf("held shared by %d here", k), func(l lockDoc) bool {
		return l.State == peer.LockHolding && l.Mode == peer.ModeShared && l.Holders == k
	})
}

// TestLegacySharedLocks: readers hold together across two peers, whatever
// program takes the shared lock (flock -s, Python fcntl.lockf with
// LOCK_SH (F_RDLCK), Perl flock LOCK_SH, dlockfs lock --shared); a writer
// (flock -x) waits for the readers, and readers that come after a waiting
// writer wait behind it, on its peer and on the other; then they hold
// together again. Shared tries succeed beside readers, exclusive ones fail
// at once. In majority mode and with --fast-path (kept permissions).
func TestLegacySharedLocks(t *testing.T) {
	needEnv(t)
	for _, prog := range []string{"flock", "python3", "perl"} {
		if _, err := exec.LookPath(prog); err != nil {
			t.Skipf("%s is not installed", prog)
		}
	}
	for _, fast := range []bool{false, true} {
		t.Run(fmt.Sprintf("fast-path=%v", fast), func(t *testing.T) { legacyShared(t, fast) })
	}
}

func legacyShared(t *testing.T, fast bool) {
	o := nodeOpts{}
	if fast {
		o = nodeOpts{fastPath: true, quorum: "none"} // the fast path is plain mode only
	}
	nodes := startCluster(t, 2, o)
	a, b := nodes[0], nodes[1]
	for i, pair := range [][2]string{
		{"flock -s", "flock -s"},
		{"python3 lockf", "perl LOCK_SH"},
		{"perl LOCK_SH", "dlockfs lock -s"},
		{"dlockfs lock -s", "python3 lockf"},
	} {
		lock := "shared" + string(rune('a'+i))
		t.Run(pair[0]+" and "+pair[1], func(t *testing.T) {
			r1 := startShared(t, pair[0], a, lock)
			r1.waitLine(t, startTimeout, "held")
			r2 := startShared(t, pair[1], b, lock)
			r2.waitLine(t, startTimeout, "held") // while r1 holds
			waitShared(t, lock, 1, a, b)
			code, out, errOut := run(t, 10*time.Second, "bash", "-c",
				`flock -n -s "$1/flock/$2" true; echo "s=$?"; flock -n -x "$1/flock/$2" true; echo "x=$?"`, "try", b.dir, lock)
			if code != 0 || out != "s=0\nx=1" {
				t.Errorf("tries on b beside readers: %q (exit %d, %q), want shared granted, exclusive busy", out, code, errOut)
			}
			// A writer on a queues behind a's reader; once that one
			// is done, the writer's request waits for b's reader.
			w := startProc(t, "writer on a", workerTimeout, "bash", "-c",
				`flock -x "$1/flock/$2" -c 'echo got; read -r _'`, "writer", a.dir, lock)
			waitWaiting(t, a, lock, 1)
			release(t, r1)
			waitLock(t, startTimeout, []*node{b}, lock, "deferring a's writer", func(l lockDoc) bool {
				return len(l.Queued) == 1 && l.Queued[0] == a.name
			})
			// Readers after the writer wait behind it: on a (behind
			// the local writer) and on b (though only a reader holds
			// there, it defers the writer's earlier request).
			r3 := startShared(t, pair[0], a, lock)
			r4 := startShared(t, pair[1], b, lock)
			waitWaiting(t, a, lock, 1)
			waitWaiting(t, b, lock, 1)
			if r3.hasLine("held") || r4.hasLine("held") || w.hasLine("got") {
				t.Fatalf("a reader or the writer entered early: r3 %q r4 %q w %q", r3.output(), r4.output(), w.output())
			}
			release(t, r2)
			w.waitLine(t, startTimeout, "got")
			waitLock(t, startTimeout, []*node{a}, lock, "held exclusively", func(l lockDoc) bool {
				return l.State == peer.LockHolding && l.Mode == peer.ModeExclusive
			})
			if r3.hasLine("held") || r4.hasLine("held") {
				t.Fatalf("a reader entered beside the writer: r3 %q r4 %q", r3.output(), r4.output())
			}
			release(t, w)
			// Both later readers now hold together.
			r3.waitLine(t, startTimeout, "held")
			r4.waitLine(t, startTimeout, "held")
			waitShared(t, lock, 1, a, b)
			release(t, r3)
			release(t, r4)
			waitIdle(t, startTimeout, nodes, lock)
		})
	}
}

// TestLockSharedTryTimeout: dlockfs lock --shared beside a writer on the
// other peer: --try exits 12 and --timeout exits 13 without running CMD,
// leaving no request behind; beside a reader it runs CMD at once with a
// token, even with --try.
func TestLockSharedTryTimeout(t *testing.T) {
	needEnv(t)
	nodes := startCluster(t, 2, nodeOpts{})
	a, b := nodes[0], nodes[1]
	h := shellHold(t, a, "db") // a writer: the root view's open
	h.waitLine(t, startTimeout, "held ")
	for _, c := range []struct {
		flags []string
		want  int
	}{{[]string{"--try"}, 12}, {[]string{"--timeout", "300ms"}, 13}} {
		args := append(append([]string{"lock", "--shared"}, c.flags...), b.dir+"/db", "--", "echo", "ran")
		code, out, errOut := dlockfs(t, 20*time.Second, args...)
		if code != c.want || out != "" {
			t.Errorf("%v beside a writer: exit %d, stdout %q, stderr %q; want exit %d, CMD not run", c.flags, code, out, errOut, c.want)
		}
		waitLock(t, startTimeout, nodes, "db", "left with no request", noRequests)
	}
	release(t, h)
	r := startShared(t, "flock -s", a, "db")
	r.waitLine(t, startTimeout, "held")
	code, out, errOut := dlockfs(t, 20*time.Second, "lock", "--shared", "--try", b.dir+"/db", "--",
		"bash", "-c", `echo "token $DLOCKFS_TOKEN"`)
	if code != 0 || !regexp.MustCompile(`^token [0-9]+$`).MatchString(out) {
		t.Errorf("--shared --try beside a reader: exit %d, %q, %q", code, out, errOut)
	}
	release(t, r)
	waitIdle(t, startTimeout, nodes, "db")
}

// TestSharedThreeReaders: three readers, one per peer, started at once, all
// hold together (each holds until every one has printed "held", and every
// peer's .status and dlockfs status say shared), and none waits for
// another. The log compares each one's time from start to grant with a
// reader's alone, and gives the spread of the three grants. Run with -v
// for the figures:
//
//	go test -count=1 -v -run TestSharedThreeReaders ./cmd/dlockfs/e2e
func TestSharedThreeReaders(t *testing.T) {
	needEnv(t)
	nodes := startCluster(t, 3, nodeOpts{})
	const rounds = 20
	var alone, three, spread []int64
	grantAt := func(p *proc) int64 {
		line := p.waitLine(t, startTimeout, "held")
		f := strings.Fields(line)
		at, err := parseMicros(f[len(f)-1])
		if err != nil {
			t.Fatal(err)
		}
		return at
	}
	for r := range rounds {
		lock := fmt.Sprintf("three%d", r)
		start := nowMicros()
		solo := startShared(t, "flock -s", nodes[r%3], lock+"-solo")
		alone = append(alone, grantAt(solo)-start)
		release(t, solo)

		start = nowMicros()
		var rs []*proc
		for _, n := range nodes {
			rs = append(rs, startShared(t, "flock -s", n, lock))
		}
		first, last := int64(1<<62), int64(0)
		for _, p := range rs {
			at := grantAt(p)
			three = append(three, at-start)
			first, last = min(first, at), max(last, at)
		}
		spread = append(spread, last-first)
		// All three printed "held" before any is told to release: they
		// hold at the same time, and each peer's status says so.
		waitShared(t, lock, 1, nodes...)
		if r == 0 {
			code, out, errOut := run(t, 10*time.Second, suite.binary, "status", nodes[1].dir)
			if code != 0 || !regexp.MustCompile(`(?m)^`+lock+`\s+holding \(shared, 1 here\)\s`).MatchString(out) {
				t.Errorf("dlockfs status: exit %d\n%s\n%s", code, out, errOut)
			}
			// The cluster view lists the three readers as holders of a
			// shared hold, not as a violation.
			d := clusterStatus(t, nodes[0], "5s")
			for _, l := range d.Locks {
				if l.Name == lock && (l.Mode != peer.ModeShared || len(l.Holders) != 3) {
					t.Errorf("status --cluster: %+v, want 3 shared holders", l)
				}
			}
			code, out, errOut = dlockfs(t, time.Minute, "status", "--cluster", nodes[0].dir)
			if code != 0 || !regexp.MustCompile(`(?m)^`+lock+`\s+a,b,c \(shared\)\s`).MatchString(out) {
				t.Errorf("dlockfs status --cluster: exit %d\n%s\n%s", code, out, errOut)
			}
		}
		for _, p := range rs {
			release(t, p)
		}
		waitIdle(t, startTimeout, nodes, lock)
	}
	a50, amax := stats(alone)
	t50, tmax := stats(three)
	s50, smax := stats(spread)
	t.Logf("flock(1) processes, start to grant (bash + flock start included), %d rounds: one reader alone p50 %s max %s; "+
		"3 readers on 3 peers at once p50 %s max %s; spread of the 3 grants p50 %s max %s",
		rounds, ms(a50), ms(amax), ms(t50), ms(tmax), ms(s50), ms(smax))

	// The same without process start-up: flock(2) from this process on
	// each peer's mount at once, timed around the call. Readers all hold
	// before any unlocks; writers, for contrast, hold writerHold each (a
	// stand-in for work, not a synchronisation), so they queue.
	const writerHold = 10 * time.Millisecond
	for _, how := range []int{syscall.LOCK_SH, syscall.LOCK_EX} {
		var solo, each, lastOf []int64
		for r := range rounds {
			lock := fmt.Sprintf("sys%d-%d", how, r)
			var fs []*os.File
			for _, n := range nodes {
				f, err := os.OpenFile(filepath.Join(n.dir, "flock", lock), os.O_RDONLY|os.O_CREATE, 0o644)
				if err != nil {
					t.Fatal(err)
				}
				fs = append(fs, f)
			}
			t0 := nowMicros()
			if err := syscall.Flock(int(fs[r%3].Fd()), how); err != nil {
				t.Fatal(err)
			}
			solo = append(solo, nowMicros()-t0)
			if err := syscall.Flock(int(fs[r%3].Fd()), syscall.LOCK_UN); err != nil {
				t.Fatal(err)
			}
			waitIdle(t, startTimeout, nodes, lock)
			got := make(chan int64, len(fs))
			go0 := make(chan struct{})
			for _, f := range fs {
				go func() {
					<-go0
					t0 := nowMicros()
					err := syscall.Flock(int(f.Fd()), how)
					d := nowMicros() - t0
					if err != nil {
						t.Errorf("flock: %v", err)
					}
					if how == syscall.LOCK_EX {
						time.Sleep(writerHold)
						_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
					}
					got <- d
				}()
			}
			close(go0)
			var last int64
			for range fs {
				d := <-got
				each = append(each, d)
				last = max(last, d)
			}
			lastOf = append(lastOf, last)
			if how == syscall.LOCK_SH {
				waitShared(t, lock, 1, nodes...) // all three hold now
			}
			for _, f := range fs {
				f.Close()
			}
			waitIdle(t, startTimeout, nodes, lock)
		}
		o50, omax := stats(solo)
		e50, emax := stats(each)
		l50, lmax := stats(lastOf)
		what := "readers (LOCK_SH)"
		if how == syscall.LOCK_EX {
			what = fmt.Sprintf("writers (LOCK_EX, each holding %v)", writerHold)
		}
		t.Logf("flock(2) calls, %d rounds, %s: one alone p50 %s max %s; 3 on 3 peers at once: each p50 %s max %s, "+
			"the last of the 3 p50 %s max %s", rounds, what, ms(o50), ms(omax), ms(e50), ms(emax), ms(l50), ms(lmax))
	}
}

// TestFlockTryRoundTrip measures the try-lock round trip through flock(1):
// "flock -n" on peer b against a lock held on peer a, 200 times; every one
// must fail (exit 1). The log gives p50 and p90 of one flock -n process
// (fork, exec, open, flock(LOCK_EX|LOCK_NB) answered busy by a, exit).
// Run with -v for the figures:
//
//	go test -count=1 -v -run TestFlockTryRoundTrip ./cmd/dlockfs/e2e
func TestFlockTryRoundTrip(t *testing.T) {
	needEnv(t)
	if _, err := exec.LookPath("flock"); err != nil {
		t.Skip("flock is not installed")
	}
	const runs = 200
	// tries runs flock -n TRY FILE runs times in one bash; every one must
	// exit 1. It returns the sorted durations, in µs.
	tries := func(file, try, what string) []int64 {
		code, out, errOut := run(t, 60*time.Second, "bash", "-c", `for ((i = 0; i < $3; i++)); do
	t0=$EPOCHREALTIME; flock -n $2 "$1" true; rc=$?; t1=$EPOCHREALTIME
	echo "$rc $t0 $t1"
done`, "tries", file, try, fmt.Sprint(runs))
		if code != 0 {
			t.Fatalf("try loop: exit %d, %s", code, errOut)
		}
		var us []int64
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) != 3 || f[0] != "1" {
				t.Fatalf("flock -n %s against %s: %q, want exit 1", try, what, line)
			}
			t0, err0 := parseMicros(f[1])
			t1, err1 := parseMicros(f[2])
			if err0 != nil || err1 != nil {
				t.Fatalf("bad line %q", line)
			}
			us = append(us, t1-t0)
		}
		if len(us) != runs {
			t.Fatalf("%d results, want %d", len(us), runs)
		}
		slices.Sort(us)
		t.Logf("flock -n %s against %s: %d runs, p50 %s, p90 %s, max %s",
			try, what, runs, ms(us[len(us)/2]), ms(us[len(us)*9/10]), ms(us[len(us)-1]))
		return us
	}
	// Baseline: the same processes against a local file (no dlockfs).
	local := filepath.Join(t.TempDir(), "busy")
	h := startProc(t, "local holder", workerTimeout, "flock", "-x", local, "-c", "echo held; read -r _")
	h.waitLine(t, startTimeout, "held")
	tries(local, "-x", "a local file held by flock -x (baseline: process start-up)")
	release(t, h)

	nodes := startCluster(t, 2, nodeOpts{})
	a, b := nodes[0], nodes[1]
	for _, c := range []struct{ hold, try string }{{"-x", "-x"}, {"-x", "-s"}, {"-s", "-x"}} {
		h := startProc(t, "holder on a", workerTimeout, "bash", "-c",
			`flock `+c.hold+` "$1/flock/busy" -c 'echo held; read -r _'`, "holder", a.dir)
		h.waitLine(t, startTimeout, "held")
		tries(b.dir+"/flock/busy", c.try, "flock "+c.hold+" held on the other peer")
		if c.hold == "-x" && c.try == "-x" {
			// The round trip alone: flock(2) from this process.
			f, err := os.Open(b.dir + "/flock/busy")
			if err != nil {
				t.Fatal(err)
			}
			var us []int64
			for range runs {
				t0 := nowMicros()
				err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
				us = append(us, nowMicros()-t0)
				if !errors.Is(err, syscall.EWOULDBLOCK) {
					t.Fatalf("flock(LOCK_EX|LOCK_NB) against a held lock: %v, want EWOULDBLOCK", err)
				}
			}
			f.Close()
			slices.Sort(us)
			t.Logf("flock(2) LOCK_EX|LOCK_NB on b against flock -x on a: %d calls, p50 %s, p90 %s, max %s",
				runs, ms(us[len(us)/2]), ms(us[len(us)*9/10]), ms(us[len(us)-1]))
		}
		release(t, h)
		waitIdle(t, startTimeout, nodes, "busy")
	}
}
