package bench

import (
	"testing"

	"github.com/dlockfs/dlockfs/cmd/dlockfs/internal/localcluster"
)

// TestBreakdown splits two operations: the first waits for a RELEASE that
// came late, the second's came first; an interrupted Lock is ignored.
func TestBreakdown(t *testing.T) {
	ops := []OpTimes{{100, 200, 210}, {300, 400, 405}}
	locks := []localcluster.LockEvent{
		{Peer: 0, Called: 110, Returned: 190, OK: true},
		{Peer: 1, Called: 305, Returned: 306, OK: false}, // EINTR, retried
		{Peer: 1, Called: 310, Returned: 390, OK: true},
	}
	unlocks := []localcluster.UnlockEvent{
		{Peer: 2, At: 150}, // the hold before the run
		{Peer: 0, At: 230},
		{Peer: 1, At: 420},
	}
	b := breakdown(ops, locks, unlocks)
	if b.Ops != 2 || b.Unmatched != 0 {
		t.Fatalf("ops %d unmatched %d, want 2 and 0", b.Ops, b.Unmatched)
	}
	// Means in us: FUSE open (10+10)/2 ns, wait (40+0)/2, round (40+80)/2,
	// reply (10+10)/2, close (10+5)/2, release lag (20+15)/2.
	for _, c := range []struct {
		name string
		got  float64
		want float64
	}{
		{"fuse open", b.FUSEOpen.MeanUs, 0.010},
		{"wait release", b.WaitRelease.MeanUs, 0.020},
		{"lock round", b.LockRound.MeanUs, 0.060},
		{"reply", b.Reply.MeanUs, 0.010},
		{"close", b.Close.MeanUs, 0.0075},
		{"release lag", b.ReleaseLag.MeanUs, 0.0175},
	} {
		if d := c.got - c.want; d > 1e-9 || d < -1e-9 {
			t.Errorf("%s mean %v us, want %v", c.name, c.got, c.want)
		}
	}
	// An operation with no granted Lock inside it is counted, not timed.
	if b := breakdown(append(ops, OpTimes{500, 600, 610}), locks, unlocks); b.Ops != 2 || b.Unmatched != 1 {
		t.Errorf("ops %d unmatched %d, want 2 and 1", b.Ops, b.Unmatched)
	}
}
