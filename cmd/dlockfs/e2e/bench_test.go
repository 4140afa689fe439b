package e2e

import (
	"encoding/xml"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestBenchSweep runs "dlockfs bench --sweep 3,4 --plot FILE" (short) and
// checks that it prints a row per cluster size, the linearity verdict and
// the many-locks memory, and writes an SVG with a line per series. No
// figure is checked: speed belongs to the bench, not to tests.
func TestBenchSweep(t *testing.T) {
	needEnv(t)
	plot := filepath.Join(t.TempDir(), "sweep.svg")
	code, out, errs := run(t, 3*time.Minute, suite.binary, "bench", "--sweep", "3,4", "--plot", plot,
		"--ops", "50", "--seconds", "0.3", "--quorum", "none")
	if code != 0 {
		t.Fatalf("bench --sweep: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	for _, re := range []string{
		`(?m)^peers \|\s+p50\s+p99\s+linear bound \| msgs/acq \|\s+contended/s`,
		`(?m)^\s+3 \|\s+[0-9.]+ (us|ms)\s+[0-9.]+ (us|ms)`,
		`(?m)^\s+4 \|\s+[0-9.]+ (us|ms)\s+[0-9.]+ (us|ms)`,
		`(?m)^uncontended p50 grows no worse than linearly in N: (yes|NO)`,
		`(?m)^10000 named locks held by one peer of 3`,
		`(?m)^\s+held\s+[0-9]+ KiB\s+[0-9]+ KiB\s+10000`,
		`(?m)^\s+back to idle .*: (yes|NO)$`,
		`(?m)^plot: ` + regexp.QuoteMeta(plot) + `$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("output does not match %s:\n%s", re, out)
		}
	}
	b, err := os.ReadFile(plot)
	if err != nil {
		t.Fatalf("plot: %v", err)
	}
	var doc struct {
		XMLName   xml.Name `xml:"svg"`
		Polylines []struct {
			Points string `xml:"points,attr"`
		} `xml:"polyline"`
	}
	if err := xml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("plot is not SVG: %v\n%s", err, b)
	}
	// Latency p50, p99, linear bound; contended; RSS, msgs: six lines of
	// two points each (3 and 4 peers).
	if len(doc.Polylines) != 6 {
		t.Fatalf("plot has %d lines, want 6", len(doc.Polylines))
	}
	for i, p := range doc.Polylines {
		if n := len(strings.Fields(p.Points)); n != 2 {
			t.Errorf("line %d has %d points, want 2: %q", i, n, p.Points)
		}
	}
}
