package e2e

import (
	"fmt"
	"testing"
	"time"
)

// TestContention runs 3 bash workers per peer, each doing 50 critical
// sections (open MOUNT/lock, read the token, increment a shared counter
// file, close), on clusters of 3 and 5 peers: no increment is lost, no two
// holds overlap and the tokens rise strictly in hold order. The last run
// has every peer keep permissions (--fast-path).
func TestContention(t *testing.T) {
	needEnv(t)
	const perNode, iters = 3, 50
	for _, tc := range []struct {
		size     int
		fastPath bool
	}{{3, false}, {5, false}, {3, true}} {
		size := tc.size
		name := fmt.Sprintf("%d-peers", size)
		if tc.fastPath {
			name += "-fast-path"
		}
		t.Run(name, func(t *testing.T) {
			nodes := startCluster(t, size, nodeOpts{fastPath: tc.fastPath})
			counter := counterFile(t)
			start := time.Now()
			ws := startWorkers(t, nodes, perNode, iters, counter)
			waitWorkers(t, ws)
			elapsed := time.Since(start)
			want := size * perNode * iters
			if got := readCounter(t, counter); got != want {
				t.Errorf("counter = %d, want %d (lost increments)", got, want)
			}
			hs := holds(t, ws)
			if len(hs) != want {
				t.Errorf("%d critical sections recorded, want %d", len(hs), want)
			}
			checkExclusive(t, hs)
			var gaps []int64
			for i := 1; i < len(hs); i++ {
				gaps = append(gaps, hs[i].enter-hs[i-1].leave)
			}
			p50, maxGap := stats(gaps)
			t.Logf("%s: %d peers x %d workers x %d: %d critical sections in %v (%.0f/s); hand-over gap p50 %s, max %s",
				name, size, perNode, iters, len(hs), elapsed.Round(time.Millisecond),
				float64(len(hs))/elapsed.Seconds(), ms(p50), ms(maxGap))
			waitIdle(t, startTimeout, nodes, "lock")
		})
	}
}
