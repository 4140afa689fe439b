package peer

import (
	"testing"

	"github.com/dlockfs/dlockfs/mutex"
)

// TestLockStateWords: the lock states of Status are the core's phases.
func TestLockStateWords(t *testing.T) {
	for p, want := range map[mutex.Phase]string{mutex.Idle: LockIdle, mutex.Requesting: LockRequesting,
		mutex.Holding: LockHolding} {
		if p.String() != want {
			t.Errorf("phase %d is %q in the core, %q in Status", p, p.String(), want)
		}
	}
}
