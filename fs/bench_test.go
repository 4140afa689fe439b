package fs

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
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
		b.Run(bc.name, func(b *testing.B) {
			n := max(b.N, 100)
			b.ResetTimer()
			p := startHelper(b, "openloop", bc.path, strconv.Itoa(n))
			out, err := p.wait()
			b.StopTimer()
			if err != nil {
				b.Fatalf("openloop: %v; stderr %s", err, p.stderr)
			}
			var p50, p99, mean float64
			if _, err := fmt.Sscan(strings.TrimSpace(out), &p50, &p99, &mean); err != nil {
				b.Fatalf("openloop output %q: %v", out, err)
			}
			b.ReportMetric(mean, "ns/op")
			b.ReportMetric(p50, "p50-ns")
			b.ReportMetric(p99, "p99-ns")
		})
	}
}
