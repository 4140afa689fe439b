package fs

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/dlockfs/dlockfs/mutex/testutil"
)

// BenchmarkOpenClose measures open(O_RDONLY)+close from a child process
// (this test binary in helper mode, so no same-process FUSE access):
//
//	lock    the uncontended lock file (Lock + Unlock on the fake locker)
//	status  .status on the same mount (no lock; renders the fake's JSON)
//	tmpfs   a plain file outside FUSE, for scale
//
// Besides ns/op (the mean, child-side), it reports p50-ns and p99-ns.
//
//	go test -run '^$' -bench OpenClose -benchtime 20000x ./fs
func BenchmarkOpenClose(b *testing.B) {
	fk := newFake()
	mnt, _ := testMount(b, fk)
	plain := b.TempDir() + "/plain"
	if out, errOut, code := run(b, "", "touch "+plain); code != 0 {
		b.Fatalf("touch: %s %s", out, errOut)
	}
	for _, bc := range []struct{ name, path string }{
		{"lock", mnt + "/" + LockFile},
		{"status", mnt + "/" + StatusFile},
		{"tmpfs", plain},
	} {
		b.Run(bc.name, func(b *testing.B) { benchLoop(b, "openloop", bc.path) })
	}
}

// BenchmarkWhileWaiters measures stat, readdir and open+close of .status
// while 1,000 openers are blocked on the lock (compare with
// BenchmarkIdle).
//
//	go test -run '^$' -bench 'Idle|WhileWaiters' -benchtime 5000x ./fs
func BenchmarkWhileWaiters(b *testing.B) {
	benchMeta(b, 1000)
}

// BenchmarkIdle is BenchmarkWhileWaiters with no opener blocked.
func BenchmarkIdle(b *testing.B) {
	benchMeta(b, 0)
}

func benchMeta(b *testing.B, waiters int) {
	fk := newFake()
	mnt, _ := testMount(b, fk)
	if waiters > 0 {
		h := holder(b, mnt, LockFile)
		w := startHelper(b, "waiters", mnt+"/lock", strconv.Itoa(waiters))
		testutil.WaitFor(b, deadline, fmt.Sprintf("%d waiters", waiters), waiting(fk, LockFile, waiters))
		b.Cleanup(func() {
			h.send("")
			w.wait()
		})
	}
	b.Run("stat", func(b *testing.B) { benchLoop(b, "statloop", mnt+"/lock") })
	b.Run("readdir", func(b *testing.B) { benchLoop(b, "readdirloop", mnt) })
	b.Run("status", func(b *testing.B) { benchLoop(b, "openloop", mnt+"/"+StatusFile) })
}

// benchLoop runs a timing helper for b.N operations on path and reports
// its mean (ns/op), p50 and p99.
func benchLoop(b *testing.B, mode, path string) {
	n := max(b.N, 100)
	b.ResetTimer()
	p := startHelper(b, mode, path, strconv.Itoa(n))
	out, err := p.wait()
	b.StopTimer()
	if err != nil {
		b.Fatalf("%s: %v; stderr %s", mode, err, p.stderr)
	}
	var p50, p99, mean float64
	if _, err := fmt.Sscan(strings.TrimSpace(out), &p50, &p99, &mean); err != nil {
		b.Fatalf("%s output %q: %v", mode, out, err)
	}
	b.ReportMetric(mean, "ns/op")
	b.ReportMetric(p50, "p50-ns")
	b.ReportMetric(p99, "p99-ns")
}

// BenchmarkFlush measures open(O_RDONLY)+close of the uncontended lock
// file by how the root view treats FLUSH, and of a flock-view file (which
// needs FLUSH for POSIX locks):
//
//	noflush   FOPEN_NOFLUSH (the default): no FLUSH for the root view
//	flush     FLUSH sent on every close, answered 0
//	enosys    FLUSH answered ENOSYS: the kernel stops sending it for the
//	          whole mount (the old behaviour; breaks POSIX locks in flock/)
//	flockview open+close of MOUNT/flock/lock (takes no lock; FLUSH sent)
//
//	go test -run '^$' -bench Flush -benchtime 20000x ./fs
func BenchmarkFlush(b *testing.B) {
	for _, bc := range []struct {
		name string
		mode flushMode
		path string
	}{
		{"noflush", noFlush, LockFile},
		{"flush", flushOK, LockFile},
		{"enosys", flushENOSYS, LockFile},
		{"flockview", noFlush, FlockDir + "/" + LockFile},
	} {
		b.Run(bc.name, func(b *testing.B) {
			fk := newFake()
			mnt, root := testMount(b, fk)
			root.fs.flushMode = bc.mode
			benchLoop(b, "openloop", mnt+"/"+bc.path)
		})
	}
}
