package e2e

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
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
		{"flock(1) -s (excl.)", `flock -s "$1/flock/$2" -c 'echo held; read -r _'`},
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
