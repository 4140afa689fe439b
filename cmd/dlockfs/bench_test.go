package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/dlockfs/dlockfs/cmd/dlockfs/internal/bench"
)

func TestBenchJSON(t *testing.T) {
	r := dlockfs(t, "bench", "--seconds", "1", "--ops", "300", "--json", "--fast-path")
	wantCode(t, r, 0, "bench --json")
	var rep bench.Report
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("bench --json output is not a report: %v\n%s", err, r.stdout)
	}
	// The raw document has every field, named as documented.
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(r.stdout), &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"peers", "seconds", "ops", "cpus", "load_avg", "runs", "tcp", "transport",
		"flock_tmpfs", "targets"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("JSON lacks %q", k)
		}
	}
	if rep.Peers != 3 || len(rep.Runs) != 2 || rep.Runs[0].FastPath || !rep.Runs[1].FastPath {
		t.Fatalf("want a plain and a fast-path run of 3 peers, got %d peers, runs %+v", rep.Peers, rep.Runs)
	}
	// Keeping permissions, a peer taking the lock again sends nothing.
	if m := rep.Runs[1].RepeatMsgs; m > 0.1 {
		t.Errorf("fast path: repeat on one peer sent %.2f messages per acquisition, want 0", m)
	}
	run := rep.Runs[0]
	for name, s := range map[string]bench.LatencyStats{
		"uncontended": run.Uncontended, "repeat": run.Repeat, "floor_status": run.FloorStatus,
		"floor_dir": run.FloorDir, "tcp round trip": rep.TCP.RoundTrip, "tcp fan-out": rep.TCP.FanOut,
		"transport round trip": rep.Transport.RoundTrip, "transport fan-out": rep.Transport.FanOut,
	} {
		if s.Ops != 300 || !(s.P50us > 0 && s.P50us <= s.P99us && s.P99us <= s.MaxUs) {
			t.Errorf("%s: want 300 ops and 0 < p50 <= p99 <= max, got %+v", name, s)
		}
	}
	if rep.Flock.Ops == 0 || rep.Flock.P50us <= 0 {
		t.Errorf("flock: %+v", rep.Flock)
	}
	// Plain Ricart–Agrawala: a request and a reply per other peer.
	for name, m := range map[string]float64{"uncontended": run.UncontendedMsgs, "repeat": run.RepeatMsgs,
		"contended": run.Contended.MsgsPerAcq} {
		if m < 3.9 || m > 4.1 {
			t.Errorf("%s: %.2f messages per acquisition, want 4 (2 × (3-1))", name, m)
		}
	}
	cs := run.Contended
	total := 0
	for _, p := range cs.PerPeer {
		total += p.Acquisitions
		if p.Acquisitions == 0 {
			t.Errorf("contended: peer %s never got the lock", p.Peer)
		}
	}
	if len(cs.PerPeer) != 3 || total != cs.Acquisitions || cs.PerSecond <= 0 {
		t.Errorf("contended: %+v", cs)
	}
	if len(rep.Targets) != 6 {
		t.Errorf("targets: %+v", rep.Targets)
	}
	for _, r := range rep.Runs {
		wantCleanedUp(t, r.Dir, nil, []string{binary + "\x00bench\x00" + bench.ClientCmd})
	}
}

// A cluster of one, plaintext, printed as a table.
func TestBenchTable(t *testing.T) {
	r := dlockfs(t, "bench", "--peers", "1", "--seconds", "0.3", "--ops", "100", "--plaintext")
	wantCode(t, r, 0, "bench --peers 1")
	for _, want := range []string{"plain Ricart-Agrawala", "(a) MOUNT/lock", "(c) MOUNT root directory",
		"(d) contended", "peer a ", "(f) lock channel round trip", "(g) flock(2)", "Targets"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("table lacks %q:\n%s", want, r.stdout)
		}
	}
}
