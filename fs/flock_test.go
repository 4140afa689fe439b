package fs

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/dlockfs/dlockfs/mutex/testutil"
)

// pyFile writes a python3 program to a file and returns its path.
func pyFile(t testing.TB, src string) string {
	t.Helper()
	path := t.TempDir() + "/prog.py"
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// pyLock is a python3 program: lock MODE of FILE with fcntl (lockf: POSIX,
// flock: flock(2), ofd: an OFD lock), print "held", wait for a line, then
// (with "close-other") close another descriptor of the file and print
// "closed", wait for a line, exit.
const pyLock = `
import fcntl, os, struct, sys
mode, path, kind = sys.argv[1], sys.argv[2], sys.argv[3]
fd = os.open(path, os.O_RDWR)
ex = {"x": True, "s": False}[kind[0]]
try:
    if mode == "lockf":
        fcntl.lockf(fd, fcntl.LOCK_EX if ex else fcntl.LOCK_SH)
    elif mode == "flock":
        fcntl.flock(fd, fcntl.LOCK_EX if ex else fcntl.LOCK_SH)
    elif mode == "ofd":
        fcntl.fcntl(fd, fcntl.F_OFD_SETLKW, struct.pack("hhqqi", fcntl.F_WRLCK if ex else fcntl.F_RDLCK, 0, 0, 0, 0))
    elif mode == "range":
        fcntl.lockf(fd, fcntl.LOCK_EX, 10, 0)
except OSError as e:
    print("error", e.strerror, flush=True)
    sys.exit(1)
print("held", flush=True)
sys.stdin.readline()
other = os.open(path, os.O_RDONLY)
os.close(other)
print("closed", flush=True)
sys.stdin.readline()
`

// getlk prints the l_type F_GETLK answers for a write lock of FILE.
const pyGetlk = `
import fcntl, os, struct, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
r = fcntl.fcntl(fd, fcntl.F_GETLK, struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0, 0))
t = struct.unpack("hhqqi", r)[0]
print({fcntl.F_UNLCK: "unlocked", fcntl.F_WRLCK: "write", fcntl.F_RDLCK: "read"}[t])
`

// TestFlockViewOpenNeverBlocks: in MOUNT/flock/ an open of a held lock
// returns at once; flock -n on it fails at once, flock -w times out and
// leaves no waiter; the view and the root are the same cluster lock.
func TestFlockViewOpenNeverBlocks(t *testing.T) {
	fk := newFake()
	mnt, _ := testMount(t, fk)
	h := holder(t, mnt, LockFile)
	out := mustRun(t, mnt, `exec 9>"$M/flock/lock" || exit 9
flock -n 9; echo "n=$?"
flock -w 0.2 9; echo "w=$?"
flock -E 7 -n "$M/flock/lock" true; echo "E=$?"
flock -n "$M/flock/lock" -c true; echo "c=$?"`)
	if out != "n=1\nw=1\nE=7\nc=1\n" {
		t.Errorf("try and timed waits against a held lock: %q", out)
	}
	testutil.WaitFor(t, deadline, "no waiter left", waiting(fk, LockFile, 0))
	h.send("")
	h.expect("released")
	testutil.WaitFor(t, deadline, "lock free", free(fk, LockFile))
	// Held through the flock view, the root view's try-lock fails.
	p := start(t, mnt, `exec 9<>"$M/flock/x" && flock 9 && { read -r tok <&9; echo "held $tok"; } && read -r _ && flock -u 9 && echo unlocked && read -r _`)
	line := p.next()
	if _, tok, _ := fk.state("x"); line != "held "+strconv.FormatUint(tok, 10) {
		t.Fatalf("flock 9 then read <&9: %q, want token %d", line, tok)
	}
	if _, _, code := run(t, mnt, `dd if="$M/x" iflag=nonblock count=0 status=none`); code == 0 {
		t.Error("root view try-lock succeeded while flock/x is held")
	}
	p.send("")
	p.expect("unlocked")
	testutil.WaitFor(t, deadline, "x free after LOCK_UN (file still open)", free(fk, "x"))
	p.send("")
	if _, err := p.wait(); err != nil {
		t.Fatalf("holder: %v; stderr %s", err, p.stderr)
	}
	if out := mustRun(t, mnt, `ls "$M/flock"`); !strings.Contains(out, "lock\n") || !strings.Contains(out, "x\n") {
		t.Errorf("ls flock/: %q", out)
	}
	if out := mustRun(t, mnt, `rm "$M/flock/x"; ls "$M/flock"`); out != "lock\n" {
		t.Errorf("ls flock/ after rm flock/x: %q", out)
	}
}

// TestFlockViewReleaseRules: flock and OFD locks end at LOCK_UN or the last
// close of the open file; POSIX locks when the process closes any
// descriptor of the file; any lock when its holder is killed.
func TestFlockViewReleaseRules(t *testing.T) {
	fk := newFake()
	mnt, _ := testMount(t, fk)
	file := mnt + "/flock/r"
	for _, tc := range []struct {
		mode        string
		endsAtClose bool // ends when another descriptor is closed
	}{{"lockf", true}, {"flock", false}, {"ofd", false}} {
		t.Run(tc.mode, func(t *testing.T) {
			p := startCmd(t, mnt, exec.Command("python3", pyFile(t, pyLock), tc.mode, file, "x"))
			p.expect("held")
			if held, _, _ := fk.state("r"); !held {
				t.Fatal("not held")
			}
			p.send("")
			p.expect("closed")
			if tc.endsAtClose {
				testutil.WaitFor(t, deadline, "POSIX lock dropped at the close of another descriptor", free(fk, "r"))
			} else if held, _, _ := fk.state("r"); !held {
				t.Fatal("lock dropped at the close of another open file")
			}
			p.send("")
			if _, err := p.wait(); err != nil {
				t.Fatalf("%v; stderr %s", err, p.stderr)
			}
			testutil.WaitFor(t, deadline, "lock free after exit", free(fk, "r"))
		})
	}
	t.Run("killed", func(t *testing.T) {
		p := start(t, mnt, `exec 9>"$M/flock/r"; flock 9; echo held; read -r _`)
		p.expect("held")
		w := start(t, mnt, `flock "$M/flock/r" echo got`)
		testutil.WaitFor(t, deadline, "a waiter", waiting(fk, "r", 1))
		p.signal(9)
		w.expect("got")
		testutil.WaitFor(t, deadline, "lock free", free(fk, "r"))
	})
	t.Run("range-refused", func(t *testing.T) {
		out, _, code := run(t, mnt, `python3 `+pyFile(t, pyLock)+` range "$M/flock/r" x`)
		if code != 1 || !strings.Contains(out, "Invalid argument") {
			t.Errorf("byte-range lock: exit %d, %q; want EINVAL", code, out)
		}
	})
}

// TestFlockViewShared: LOCK_SH holders share (with a SharedLocker), an
// exclusive request waits for them, and conversions work.
func TestFlockViewShared(t *testing.T) {
	fk := newFake()
	mnt, _ := testMount(t, fk)
	getlk := pyFile(t, pyGetlk)
	a := start(t, mnt, `exec 9>"$M/flock/s"; flock -s 9 && echo held; read -r _; flock -x 9 && echo upgraded; read -r _; flock -s 9 && echo downgraded; read -r _`)
	a.expect("held")
	b := start(t, mnt, `exec 9>"$M/flock/s"; flock -s -n 9 && echo held; read -r _`)
	b.expect("held")
	if n := fk.readers("s"); n != 2 {
		t.Fatalf("%d shared holders, want 2", n)
	}
	if _, _, code := run(t, mnt, `flock -x -n "$M/flock/s" true`); code != 1 {
		t.Errorf("flock -x -n against shared holders: exit %d, want 1", code)
	}
	if out := mustRun(t, mnt, `python3 `+getlk+` "$M/flock/s"`); out != "read\n" {
		t.Errorf("F_GETLK against shared holders: %q", out)
	}
	a.send("") // upgrade: waits for b
	testutil.WaitFor(t, deadline, "upgrade waiting", waiting(fk, "s", 1))
	b.send("")
	a.expect("upgraded")
	if held, _, _ := fk.state("s"); !held || fk.readers("s") != 0 {
		t.Fatal("upgrade did not take the lock exclusively")
	}
	if out := mustRun(t, mnt, `python3 `+getlk+` "$M/flock/s"`); out != "write\n" {
		t.Errorf("F_GETLK against an exclusive holder: %q", out)
	}
	a.send("")
	a.expect("downgraded")
	mustRun(t, mnt, `flock -s -n "$M/flock/s" true`)
	a.send("")
	testutil.WaitFor(t, deadline, "s free", free(fk, "s"))
	if out := mustRun(t, mnt, `python3 `+getlk+` "$M/flock/s"`); out != "unlocked\n" {
		t.Errorf("F_GETLK on a free lock: %q", out)
	}
}

// TestSelfDeadlock: a process that already holds a lock through an open
// file and opens it again (itself or a child that inherited it) fails at
// once with EDEADLK instead of waiting for itself.
func TestSelfDeadlock(t *testing.T) {
	fk := newFake()
	mnt, _ := testMount(t, fk)
	for _, script := range []string{
		`exec 9<"$M/lock"; timeout 10 cat /proc/self/fd/9`,
		`exec 9<"$M/lock"; timeout 10 cat /dev/stdin <&9`,
		`exec 9<"$M/lock"; timeout 10 flock "$M/flock/lock" true`,
		`exec 9<"$M/lock"; exec 8<"$M/lock"`,
		`exec 9>"$M/flock/lock"; flock 9; timeout 10 flock "$M/flock/lock" true`,
		`exec 9>"$M/flock/lock"; flock 9; timeout 10 cat "$M/lock"`,
		`exec 9>"$M/flock/lock"; flock 9; exec 8>"$M/flock/lock"; timeout 10 flock 8`,
		`exec 9>"$M/flock/lock"; python3 -c 'import fcntl; fcntl.lockf(9, fcntl.LOCK_EX); open("'"$M"'/lock")'`,
	} {
		_, errOut, code := run(t, mnt, script)
		if code == 0 || code == 124 || !strings.Contains(errOut, "Resource deadlock avoided") {
			t.Errorf("%s: exit %d, stderr %q; want EDEADLK", script, code, errOut)
		}
		testutil.WaitFor(t, deadline, "lock free", free(fk, LockFile))
	}
	// Another process's hold is waited for as usual, even with a
	// descriptor of the lock open that holds nothing.
	h := holder(t, mnt, LockFile)
	if out := mustRun(t, mnt, `exec 8>"$M/flock/lock"; flock -w 0.2 8; echo "rc=$?"`); out != "rc=1\n" {
		t.Errorf("a timed wait with an idle descriptor open: %q, want rc=1 (timeout)", out)
	}
	w := start(t, mnt, `cat "$M/lock" >/dev/null && echo got`)
	testutil.WaitFor(t, deadline, "a waiter", waiting(fk, LockFile, 1))
	h.send("")
	w.expect("got")
	testutil.WaitFor(t, deadline, "lock free", free(fk, LockFile))
}

// TestStatusReaders: tools that trust the size of .status (0, as reads are
// direct) still read all of it.
func TestStatusReaders(t *testing.T) {
	fk := newFake()
	mnt, _ := testMount(t, fk)
	want, _ := fk.StatusJSON()
	n := len(want) + 1
	out := mustRun(t, mnt, `d=$(mktemp -d); cp "$M/.status" "$d/s"; wc -c <"$d/s"; rm -r "$d"
wc -c <"$M/.status"; wc -c "$M/.status" | cut -d' ' -f1
python3 -c 'import sys; print(len(open(sys.argv[1]).read()))' "$M/.status"`)
	if want := strings.Repeat(strconv.Itoa(n)+"\n", 4); out != want {
		t.Errorf("cp, wc -c <, wc -c, python read: %q, want %q", out, want)
	}
	if out := mustRun(t, mnt, `ls -a "$M" | head -2; ls -a "$M/flock" | head -2`); out != ".\n..\n.\n..\n" {
		t.Errorf("ls -a: %q", out)
	}
}
