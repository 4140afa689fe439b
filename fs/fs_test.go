package fs

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dlockfs/dlockfs/mutex/testutil"
)

// TestOpenModes: every way a shell opens a file takes the lock, and the
// last close releases it.
func TestOpenModes(t *testing.T) {
	fk := newFake()
	mnt, _ := testMount(t, fk)
	for _, tc := range []struct{ name, script, want string }{
		{"read", `exec 9<"$M/lock" || exit 9; read -r token <&9; echo "token=$token"; exec 9<&-`, "token=1\n"},
		{"write-trunc", `exec 9>"$M/lock" || exit 9; echo data >&9 || exit 8; echo ok`, "ok\n"},
		{"append", `exec 9>>"$M/lock" || exit 9; echo data >&9 || exit 8; echo ok`, "ok\n"},
		{"rdwr", `exec 9<>"$M/lock" || exit 9; read -r token <&9; echo "token=$token"; echo x >&9 || exit 8`, "token=4\n"},
		{"cat", `cat "$M/lock"`, "5\nholder fakenode\nlock lock\n"},
		{"cat-held-fd", `exec 9<"$M/lock"; cat <&9`, "6\nholder fakenode\nlock lock\n"},
		{"flock", `flock "$M/lock" echo inside`, "inside\n"},
		{"nonblock", `dd if="$M/lock" iflag=nonblock count=0 status=none && echo ok`, "ok\n"},
		{"truncate", `truncate -s 0 "$M/lock" && echo ok`, "ok\n"},
		{"kernel-flock", `exec 9<"$M/lock"; flock -n 9 && echo flocked; flock -u 9; exec 9<&-; echo closed`, "flocked\nclosed\n"},
		{"stat", `stat -c %s "$M/lock"`, "0\n"},
		// .status has a truthful size: what a read returns.
		{"status size", `s=$(stat -c %s "$M/.status"); n=$(wc -c <"$M/.status"); [ "$s" = "$n" ] && [ "$s" -gt 0 ] && echo same`, "same\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := mustRun(t, mnt, tc.script)
			if tc.want != "" && out != tc.want {
				t.Errorf("output %q, want %q", out, tc.want)
			}
			testutil.WaitFor(t, deadline, "lock free", free(fk, LockFile))
		})
	}
	if g, u, _, _ := fk.counts(); g != u {
		t.Errorf("%d grants, %d unlocks", g, u)
	}
}

// TestHolderBlocksOthers: a second opener waits until the holder closes,
// and gets a higher token.
func TestHolderBlocksOthers(t *testing.T) {
	fk := newFake()
	mnt, _ := testMount(t, fk)
	h := holder(t, mnt, LockFile)
	_, tok1, _ := fk.state(LockFile)
	w := start(t, mnt, `read -r token < "$M/lock" && echo "$token"`)
	testutil.WaitFor(t, deadline, "one waiter", waiting(fk, LockFile, 1))
	// Status, stat and readdir answer while an open is blocked.
	mustRun(t, mnt, `cat "$M/.status" >/dev/null && stat "$M/lock" >/dev/null && ls "$M" >/dev/null`)
	h.send("")
	h.expect("released")
	out, err := w.wait()
	if err != nil {
		t.Fatalf("waiter: %v; stderr %s", err, w.stderr)
	}
	if tok2, _ := strconv.ParseUint(out, 10, 64); tok2 <= tok1 {
		t.Errorf("second token %q not above first %d", out, tok1)
	}
	testutil.WaitFor(t, deadline, "lock free", free(fk, LockFile))
}

// TestRevokedHoldEIO: once the Locker revokes a hold (the peer lost its
// lease), reads, writes and fsyncs of the held file fail with EIO, in the
// root view and the flock view, and the last close does not unlock again.
func TestRevokedHoldEIO(t *testing.T) {
	fk := newFake()
	mnt, _ := testMount(t, fk)
	h := start(t, mnt, `exec 9<>"$M/lock" || exit 9; read -r tok <&9 && echo "held $tok"; read -r _
		if read -r x <&9; then echo read-ok; else echo read-failed; fi
		if echo x >&9; then echo write-ok; else echo write-failed; fi
		exec 9<&-; echo closed`)
	h.expect("held 1")
	if fk.revoke(LockFile) == 0 {
		t.Fatal("revoke: the lock is not held")
	}
	h.send("")
	h.expect("read-failed")
	h.expect("write-failed")
	h.expect("closed")
	if _, _, bad, _ := fk.counts(); bad != 0 {
		t.Errorf("%d bad unlocks after a revoked hold", bad)
	}
	// The lock is granted to the next opener at once.
	mustRun(t, mnt, `read -r tok < "$M/lock" && [ "$tok" = 2 ]`)

	// The flock view: a revoked flock(2) hold reads EIO too.
	fl := start(t, mnt, `exec 8<"$M/flock/f" && flock 8 && echo held; read -r _
		if cat <&8 >/dev/null; then echo read-ok; else echo read-failed; fi`)
	fl.expect("held")
	if fk.revoke("f") == 0 {
		t.Fatal("revoke: flock f is not held")
	}
	fl.send("")
	fl.expect("read-failed")
}

// TestDescriptionOutlivesDescriptor: dup'd, forked and exec-inherited
// descriptors keep the lock until the last one closes.
func TestDescriptionOutlivesDescriptor(t *testing.T) {
	for _, tc := range []struct{ name, script string }{
		{"fork", `exec 3<&0; exec 9<"$M/lock" || exit 9; ( read -r _ <&3; echo child-done ) & exec 9<&-; echo parent-closed; wait`},
		{"exec", `exec 9<"$M/lock" || exit 9; echo parent-closed; exec bash -c 'read -r _; echo child-done'`},
		{"dup", `exec 9<"$M/lock" || exit 9; exec 8<&9; exec 9<&-; echo parent-closed; read -r _; exec 8<&-; echo child-done; read -r _`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fk := newFake()
			mnt, _ := testMount(t, fk)
			p := start(t, mnt, tc.script)
			p.expect("parent-closed")
			// A wrong release would be seen here (or, racing, missed:
			// this check cannot fail spuriously).
			if _, _, code := run(t, mnt, `dd if="$M/lock" iflag=nonblock count=0 status=none`); code == 0 {
				t.Fatal("try-lock succeeded while a descriptor is still open")
			}
			if _, u, _, _ := fk.counts(); u != 0 {
				t.Fatalf("%d unlocks while a descriptor is open", u)
			}
			p.send("")
			p.expect("child-done")
			testutil.WaitFor(t, deadline, "lock free after the last close", free(fk, LockFile))
		})
	}
}

// TestKilledHolderReleases: SIGKILL of the holder releases at once.
func TestKilledHolderReleases(t *testing.T) {
	fk := newFake()
	mnt, _ := testMount(t, fk)
	h := holder(t, mnt, LockFile)
	w := start(t, mnt, `cat "$M/lock" >/dev/null && echo got`)
	testutil.WaitFor(t, deadline, "one waiter", waiting(fk, LockFile, 1))
	h.signal(syscall.SIGKILL)
	w.expect("got")
	testutil.WaitFor(t, deadline, "lock free", free(fk, LockFile))
}

// TestInterruptedWait: a signal to a blocked opener withdraws its request.
func TestInterruptedWait(t *testing.T) {
	for name, sig := range map[string]syscall.Signal{"SIGINT": syscall.SIGINT, "SIGTERM": syscall.SIGTERM, "SIGKILL": syscall.SIGKILL} {
		t.Run(name, func(t *testing.T) {
			fk := newFake()
			mnt, _ := testMount(t, fk)
			h := holder(t, mnt, LockFile)
			w := start(t, mnt, `exec cat "$M/lock"`)
			testutil.WaitFor(t, deadline, "one waiter", waiting(fk, LockFile, 1))
			w.signal(sig)
			if _, err := w.wait(); err == nil {
				t.Fatal("interrupted cat succeeded")
			}
			testutil.WaitFor(t, deadline, "waiter withdrawn", waiting(fk, LockFile, 0))
			if held, _, _ := fk.state(LockFile); !held {
				t.Fatal("holder lost the lock")
			}
			h.send("")
			h.expect("released")
			testutil.WaitFor(t, deadline, "lock free", free(fk, LockFile))
			mustRun(t, mnt, `cat "$M/lock" >/dev/null`)
		})
	}
}

// TestTimeoutCat: `timeout 1 cat lock` exits 124 and leaves no waiter.
func TestTimeoutCat(t *testing.T) {
	fk := newFake()
	mnt, _ := testMount(t, fk)
	h := holder(t, mnt, LockFile)
	out := mustRun(t, mnt, `timeout 1 cat "$M/lock"; echo "rc=$?"`)
	if out != "rc=124\n" {
		t.Errorf("got %q, want rc=124", out)
	}
	testutil.WaitFor(t, deadline, "no waiter left", waiting(fk, LockFile, 0))
	h.send("")
	h.expect("released")
	testutil.WaitFor(t, deadline, "lock free", free(fk, LockFile))
	if out := mustRun(t, mnt, `timeout 10 cat "$M/lock" | head -1`); out != "2\n" {
		t.Errorf("next holder read token %q, want 2", out)
	}
}

// TestTryLockBusy: O_NONBLOCK fails with EAGAIN while the lock is held.
func TestTryLockBusy(t *testing.T) {
	fk := newFake()
	mnt, _ := testMount(t, fk)
	h := holder(t, mnt, LockFile)
	_, errOut, code := run(t, mnt, `dd if="$M/lock" iflag=nonblock count=0 status=none`)
	if code == 0 || !strings.Contains(errOut, "Resource temporarily unavailable") {
		t.Errorf("try-lock while held: exit %d, stderr %q; want EAGAIN", code, errOut)
	}
	h.send("")
	h.expect("released")
	testutil.WaitFor(t, deadline, "lock free", free(fk, LockFile))
	mustRun(t, mnt, `dd if="$M/lock" iflag=nonblock count=0 status=none`)
}

// TestGrantRacesInterrupt: a grant that arrives after the interrupt is
// kept by the open: a killed opener's descriptor is released by the kernel
// at once, and an opener that handles the signal holds the lock.
func TestGrantRacesInterrupt(t *testing.T) {
	for name, sig := range map[string]syscall.Signal{"SIGKILL": syscall.SIGKILL, "SIGINT": syscall.SIGINT} {
		t.Run(name, func(t *testing.T) {
			fk := newFake()
			mnt, _ := testMount(t, fk)
			h := holder(t, mnt, LockFile)
			w := start(t, mnt, `exec cat "$M/lock"`)
			testutil.WaitFor(t, deadline, "one waiter", waiting(fk, LockFile, 1))
			fk.setRaceGrant(true)
			w.signal(sig)
			testutil.WaitFor(t, deadline, "the fake to see the cancel", func() bool { _, _, _, c := fk.counts(); return c == 1 })
			h.send("") // the grant now goes to the interrupted opener
			h.expect("released")
			if _, err := w.wait(); err == nil {
				t.Fatal("killed cat succeeded")
			}
			testutil.WaitFor(t, deadline, "raced grant released", free(fk, LockFile))
			if g, u, _, _ := fk.counts(); g != 2 || u != 2 {
				t.Errorf("grants %d, unlocks %d; want 2, 2", g, u)
			}
		})
	}
	t.Run("handled", func(t *testing.T) {
		fk := newFake()
		mnt, _ := testMount(t, fk)
		h := holder(t, mnt, LockFile)
		w := start(t, mnt, `trap 'echo trapped' USR1; exec 9<"$M/lock" || exit 9; echo held; read -r _; exec 9<&-; echo released`)
		testutil.WaitFor(t, deadline, "one waiter", waiting(fk, LockFile, 1))
		fk.setRaceGrant(true)
		w.signal(syscall.SIGUSR1)
		testutil.WaitFor(t, deadline, "the fake to see the cancel", func() bool { _, _, _, c := fk.counts(); return c == 1 })
		h.send("")
		h.expect("released")
		got := []string{w.next(), w.next()}
		slices.Sort(got)
		if got[0] != "held" || got[1] != "trapped" {
			t.Fatalf("opener printed %q; want held and trapped; stderr %s", got, w.stderr)
		}
		if held, tok, _ := fk.state(LockFile); !held || tok != 2 {
			t.Fatalf("held %v token %d; want the opener to hold token 2", held, tok)
		}
		w.send("")
		w.expect("released")
		testutil.WaitFor(t, deadline, "lock free", free(fk, LockFile))
	})
}

// TestStatus: .status is the Locker's JSON, rendered once per read from
// offset 0: fresh for every cat, and for a re-read after lseek 0 on the
// same descriptor.
func TestStatus(t *testing.T) {
	fk := newFake()
	mnt, _ := testMount(t, fk)
	want, _ := fk.StatusJSON()
	// The first lookup of .status renders it once to learn its size.
	mustRun(t, mnt, `stat "$M/.status" >/dev/null`)
	before := fk.statusCalls()
	if got := mustRun(t, mnt, `cat "$M/.status"`); got != string(want)+"\n" {
		t.Errorf(".status = %q, want %q", got, want)
	}
	if n := fk.statusCalls() - before; n != 1 {
		t.Errorf("one cat of .status rendered it %d times, want 1", n)
	}
	h := holder(t, mnt, LockFile)
	want, _ = fk.StatusJSON()
	if got := mustRun(t, mnt, `cat "$M/.status"`); got != string(want)+"\n" || !strings.Contains(got, `"holding":true`) {
		t.Errorf(".status while held = %q, want %q", got, want)
	}
	// A descriptor opened while held and read after the release shows
	// the release: reads are fresh, not the state at open.
	p := start(t, mnt, `exec 9<"$M/.status" || exit 9; echo ready; read -r _; cat <&9`)
	p.expect("ready")
	// The same descriptor read while held, then again from offset 0
	// after the release.
	r := startHelper(t, "reread", mnt+"/"+StatusFile, "0")
	if got := r.next(); !strings.Contains(got, `"holding":true`) {
		t.Errorf("first read while held: %q", got)
	}
	h.send("")
	h.expect("released")
	testutil.WaitFor(t, deadline, "lock free", free(fk, LockFile))
	want, _ = fk.StatusJSON()
	r.send("")
	if out, err := r.wait(); err != nil || out != string(want) {
		t.Errorf("re-read after lseek 0 and the release: %q (%v), want %q; stderr %s", out, err, want, r.stderr)
	}
	p.send("")
	out, err := p.wait()
	if err != nil || out != string(want) {
		t.Errorf("read of .status after the release: %q (%v), want %q", out, err, want)
	}
	if _, errOut, code := run(t, mnt, `echo x > "$M/.status"`); code == 0 || !strings.Contains(errOut, "Permission denied") {
		t.Errorf("writing .status: exit %d, %q; want EACCES", code, errOut)
	}
}

// TestNamedLocks: creating, listing, locking and removing names.
func TestNamedLocks(t *testing.T) {
	fk := newFake()
	fk.addExtra("remote")
	mnt, _ := testMount(t, fk)
	mustRun(t, mnt, `touch "$M/a"`)
	mustRun(t, mnt, `flock "$M/c" true`)
	h := start(t, mnt, `exec 9>"$M/b" || exit 9; read -r token <&9 || echo unreadable; echo held; read -r _`)
	h.expect("unreadable") // a write-only descriptor cannot be read
	h.expect("held")
	if held, _, _ := fk.state("b"); !held {
		t.Fatal("exec 9>b did not take lock b")
	}
	if out := mustRun(t, mnt, `ls -A "$M"`); out != ".status\na\nb\nc\nflock\nlock\nremote\n" {
		t.Errorf("ls -A: %q", out)
	}
	if out := mustRun(t, mnt, `cat "$M/remote"`); !strings.HasSuffix(out, "lock remote\n") {
		t.Errorf("cat remote: %q", out)
	}
	// rm takes a name out of the listing; like every valid name, it can
	// still be opened.
	mustRun(t, mnt, `rm "$M/a"; ls "$M" | grep -qx a && exit 1; test -e "$M/a"`)
	for _, tc := range []struct{ script, errText string }{
		{`rm "$M/b"`, "Device or resource busy"},
		{`rm "$M/lock"`, "Operation not permitted"},
		{`rm "$M/.status"`, "Operation not permitted"},
		{`touch "$M/.hidden"`, "Invalid argument"},
		{`exec 9>"$M/.hidden"`, "Invalid argument"},
		{`flock "$M/.hidden" true`, "Invalid argument"},
		{`mkdir "$M/d"`, "File exists"},
		{`mv "$M/c" "$M/z"`, "Operation not permitted"},
		{`ln -s x "$M/s"`, "File exists"},
		{`ln "$M/c" "$M/hard"`, "File exists"},
		{`mkfifo "$M/fifo"`, "File exists"},
		{`mknod "$M/dev" c 1 3`, "File exists"},
		{`chmod 600 "$M/lock"`, "Operation not permitted"},
		{`chown 1 "$M/lock"`, "Operation not permitted"},
		{`rmdir "$M/lock"`, "Not a directory"},
		{`touch "$M/` + strings.Repeat("n", 256) + `"`, "File name too long"},
		{`touch "$M/flock/` + strings.Repeat("n", 256) + `"`, "File name too long"},
		{`cat "$M/.nosuch"`, "No such file or directory"},
		{`rm "$M/flock"`, "Is a directory"},
		{`rmdir "$M/flock"`, "Operation not permitted"},
		{`flock -n "$M" true`, "Is a directory"},
		{`flock -n "$M/flock" true`, "Is a directory"},
	} {
		_, errOut, code := run(t, mnt, "timeout 10 "+tc.script)
		if code == 0 || code == 124 || !strings.Contains(errOut, tc.errText) {
			t.Errorf("%s: exit %d, stderr %q; want %q", tc.script, code, errOut, tc.errText)
		}
	}
	// touch of a held name: its open (O_NONBLOCK, a try-lock) fails with
	// EAGAIN, and touch falls back to utimensat, which succeeds.
	mustRun(t, mnt, `touch "$M/b"`)
	if out := mustRun(t, mnt, `ls "$M"`); out != "b\nc\nflock\nlock\nremote\n" {
		t.Errorf("ls: %q", out)
	}
	h.send("")
	testutil.WaitFor(t, deadline, "b free", free(fk, "b"))
	mustRun(t, mnt, `rm "$M/b" "$M/c"`)
	if out := mustRun(t, mnt, `ls "$M"`); out != "flock\nlock\nremote\n" {
		t.Errorf("ls after rm: %q", out)
	}
	// A name only known from peers leaves the listing once the Locker
	// forgets it (the core forgets idle locks); names used here stay.
	fk.addExtra("remote2")
	mustRun(t, mnt, `touch "$M/mine"; ls "$M" | grep -qx remote2`)
	fk.dropExtra("remote2")
	if out := mustRun(t, mnt, `ls "$M"`); out != "flock\nlock\nmine\nremote\n" {
		t.Errorf("ls after the Locker forgot remote: %q", out)
	}
}

// TestManyWaiters: 1,000 blocked openers leave stat, readdir and .status
// responsive, and all get the lock in turn.
func TestManyWaiters(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	const n = 1000
	fk := newFake()
	mnt, _ := testMount(t, fk)
	// Each check is bounded by timeout(1), so that a hang fails clearly
	// instead of hanging the test.
	const bound = 10
	check := func(when string) {
		t.Helper()
		for _, script := range []string{`stat "$M/lock"`, `ls -l "$M"`, `cat "$M/.status"`} {
			t0 := time.Now()
			_, errOut, code := run(t, mnt, fmt.Sprintf("timeout %d %s >/dev/null", bound, script))
			switch {
			case code == 124:
				t.Fatalf("%s: %s did not answer within %d s", when, script, bound)
			case code != 0 || errOut != "":
				t.Fatalf("%s: %s: exit %d, stderr %q", when, script, code, errOut)
			}
			t.Logf("%s: %s took %v (process spawn included)", when, script, time.Since(t0))
		}
	}
	check("idle")
	h := holder(t, mnt, LockFile)
	w := startHelper(t, "waiters", mnt+"/lock", strconv.Itoa(n))
	testutil.WaitFor(t, deadline, fmt.Sprintf("%d waiters", n), waiting(fk, LockFile, n))
	check(fmt.Sprintf("with %d blocked openers", n))
	t0 := time.Now()
	h.send("")
	if out, err := w.wait(); err != nil || out != fmt.Sprintf("opened %d", n) {
		t.Fatalf("waiters: %q, %v; stderr %s", out, err, w.stderr)
	}
	t.Logf("%d queued openers granted in turn in %v", n, time.Since(t0))
	testutil.WaitFor(t, deadline, "lock free", free(fk, LockFile))
}

// TestManyWaitersKilled: killing a process with 1,000 blocked opens
// withdraws them all.
func TestManyWaitersKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	const n = 1000
	fk := newFake()
	mnt, _ := testMount(t, fk)
	h := holder(t, mnt, LockFile)
	w := startHelper(t, "waiters", mnt+"/lock", strconv.Itoa(n))
	testutil.WaitFor(t, deadline, fmt.Sprintf("%d waiters", n), waiting(fk, LockFile, n))
	t0 := time.Now()
	w.signal(syscall.SIGKILL)
	w.wait()
	testutil.WaitFor(t, deadline, "all waiters withdrawn", waiting(fk, LockFile, 0))
	t.Logf("SIGKILL withdrew %d waiters in %v", n, time.Since(t0))
	h.send("")
	testutil.WaitFor(t, deadline, "lock free", free(fk, LockFile))
}

// TestDebugLogs: Debug sends go-fuse's request log to the slog logger.
func TestDebugLogs(t *testing.T) {
	dir := t.TempDir()
	buf := &testutil.SyncBuffer{}
	logger := slogTo(buf)
	srv, err := Mount(dir, Options{Locker: newFake(), Debug: true, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	mustRun(t, dir, `cat "$M/lock" >/dev/null`)
	testutil.WaitFor(t, deadline, "debug log of OPEN and RELEASE", func() bool {
		s := buf.String()
		return strings.Contains(s, "OPEN") && strings.Contains(s, "RELEASE") && strings.Contains(s, "lock released")
	})
}

// TestAllowOther: without AllowOther only the mounting user gets in; with
// it, anyone can take the lock.
func TestAllowOther(t *testing.T) {
	const asNobody = `setpriv --reuid=65534 --regid=65534 --clear-groups `
	for _, allow := range []bool{false, true} {
		t.Run(fmt.Sprint("allow_other=", allow), func(t *testing.T) {
			fk := newFake()
			dir := t.TempDir()
			if err := os.Chmod(filepath.Dir(dir), 0o755); err != nil {
				t.Fatal(err)
			}
			srv, err := Mount(dir, Options{Locker: fk, AllowOther: allow, Logger: quietLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := srv.Unmount(); err != nil {
					t.Errorf("unmount: %v", err)
				}
			})
			out, errOut, code := run(t, dir, asNobody+`cat "$M/lock"`)
			if allow && (code != 0 || out != "1\nholder fakenode\nlock lock\n") {
				t.Errorf("as nobody with allow_other: exit %d, %q, %q", code, out, errOut)
			}
			if !allow && (code == 0 || !strings.Contains(errOut, "Permission denied")) {
				t.Errorf("as nobody without allow_other: exit %d, %q, %q", code, out, errOut)
			}
			testutil.WaitFor(t, deadline, "lock free", free(fk, LockFile))
		})
	}
}

// TestUnmountReleasesLeftovers: grants whose RELEASE never came are given
// back when the mount ends (root OnForget), once.
func TestUnmountReleasesLeftovers(t *testing.T) {
	fk := newFake()
	mnt, root := testMount(t, fk)
	h := holder(t, mnt, LockFile)
	root.OnForget() // what the end of the mount does
	if held, _, _ := fk.state(LockFile); held {
		t.Fatal("OnForget left the grant held")
	}
	h.send("") // the late RELEASE must not unlock again
	h.expect("released")
	mustRun(t, mnt, `cat "$M/lock" >/dev/null`)
	testutil.WaitFor(t, deadline, "lock free", free(fk, LockFile))
	if _, u, bad, _ := fk.counts(); u != 2 || bad != 0 {
		t.Errorf("unlocks %d, bad unlocks %d; want 2, 0", u, bad)
	}
}
