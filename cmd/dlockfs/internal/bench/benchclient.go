package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"syscall"
	"time"

	"github.com/dlockfs/dlockfs/cmd/dlockfs/internal/cli"
	"github.com/dlockfs/dlockfs/cmd/dlockfs/internal/localcluster"
)

// The bench's child clients: "dlockfs bench __client MODE ARGS..." (hidden;
// bench re-executes its own binary so that the mounts it serves are only
// touched by other processes). Each loops one operation with raw system
// calls and prints a LatencyStats as JSON on stdout:
//
//	open  N PATH [PATH...]     open(O_RDONLY)+close N times, cycling the paths
//	dir   N PATH               open(O_RDONLY|O_DIRECTORY)+close of a directory
//	flock N PATH               open once, then flock(LOCK_EX)+flock(LOCK_UN) N times
//	loop  START END PATH       open+close from START until END (Unix ns), as often as possible
const ClientCmd = "__client"

// benchClientMaxOps bounds a loop client's operations.
const benchClientMaxOps = 10_000_000

// LatencyStats summarises the latencies of repeated operations.
type LatencyStats struct {
	Ops    int     `json:"ops"`
	P50us  float64 `json:"p50_us"`
	P90us  float64 `json:"p90_us"`
	P99us  float64 `json:"p99_us"`
	MaxUs  float64 `json:"max_us"`
	MeanUs float64 `json:"mean_us"`
	// Seconds is the wall time of the whole loop.
	Seconds float64 `json:"seconds"`
	// EINTR counts operations retried after EINTR (not in the latencies).
	EINTR int `json:"eintr,omitempty"`
}

// summarize computes LatencyStats from durations in nanoseconds.
func summarize(ns []int64, elapsed time.Duration) LatencyStats {
	s := LatencyStats{Ops: len(ns), Seconds: elapsed.Seconds()}
	if len(ns) == 0 {
		return s
	}
	us := make([]float64, len(ns))
	var sum int64
	for i, v := range ns {
		us[i] = float64(v) / 1e3
		sum += v
	}
	s.P50us = localcluster.Percentile(us, 50) // sorts us
	s.P90us = localcluster.Percentile(us, 90)
	s.P99us = localcluster.Percentile(us, 99)
	s.MaxUs = us[len(us)-1]
	s.MeanUs = float64(sum) / float64(len(ns)) / 1e3
	return s
}

// runBenchClient runs one child client and prints its JSON on w.
func runBenchClient(w io.Writer, args []string) error {
	if len(args) < 3 {
		return cli.Usagef("%s: want MODE ARGS..., got %q", ClientCmd, args)
	}
	mode := args[0]
	var (
		ns    []int64
		eintr int
		err   error
	)
	start := time.Now()
	switch mode {
	case "open", "dir":
		n, perr := strconv.Atoi(args[1])
		if perr != nil || n < 1 || n > benchClientMaxOps {
			return cli.Usagef("%s %s: bad count %q", ClientCmd, mode, args[1])
		}
		flags := syscall.O_RDONLY | syscall.O_CLOEXEC
		if mode == "dir" {
			flags |= syscall.O_DIRECTORY
		}
		ns, eintr, err = openLoop(args[2:], flags, n, time.Time{})
	case "flock":
		n, perr := strconv.Atoi(args[1])
		if perr != nil || n < 1 || n > benchClientMaxOps {
			return cli.Usagef("%s flock: bad count %q", ClientCmd, args[1])
		}
		ns, err = flockLoop(args[2], n)
	case "loop":
		if len(args) != 4 {
			return cli.Usagef("%s loop: want START END PATH", ClientCmd)
		}
		from, err1 := strconv.ParseInt(args[1], 10, 64)
		to, err2 := strconv.ParseInt(args[2], 10, 64)
		if err1 != nil || err2 != nil || to <= from {
			return cli.Usagef("%s loop: bad START END %q %q", ClientCmd, args[1], args[2])
		}
		time.Sleep(time.Until(time.Unix(0, from)))
		start = time.Now()
		ns, eintr, err = openLoop(args[3:], syscall.O_RDONLY|syscall.O_CLOEXEC, benchClientMaxOps, time.Unix(0, to))
	default:
		return cli.Usagef("%s: unknown mode %q", ClientCmd, mode)
	}
	if err != nil {
		return err
	}
	s := summarize(ns, time.Since(start))
	s.EINTR = eintr
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// openLoop opens and closes paths (cycling) n times or until the deadline
// (if not zero), and returns each open+close's duration. An open
// interrupted by a signal (EINTR) is retried and counted, not timed.
func openLoop(paths []string, flags, n int, deadline time.Time) ([]int64, int, error) {
	ns := make([]int64, 0, min(n, 1<<20))
	eintr := 0
	for i := 0; i < n; i++ {
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			break
		}
		path := paths[i%len(paths)]
		t0 := time.Now()
		fd, err := syscall.Open(path, flags, 0)
		if errors.Is(err, syscall.EINTR) {
			eintr++
			if eintr > n {
				return ns, eintr, fmt.Errorf("open %s: EINTR %d times", path, eintr)
			}
			i--
			continue
		}
		if err != nil {
			return ns, eintr, fmt.Errorf("open %s: %w", path, err)
		}
		if err := syscall.Close(fd); err != nil {
			return ns, eintr, fmt.Errorf("close %s: %w", path, err)
		}
		ns = append(ns, time.Since(t0).Nanoseconds())
	}
	return ns, eintr, nil
}

// flockLoop takes and drops flock(2)'s exclusive lock on path n times.
func flockLoop(path string, n int) ([]int64, error) {
	fd, err := syscall.Open(path, syscall.O_RDWR|syscall.O_CREAT|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer syscall.Close(fd)
	ns := make([]int64, 0, n)
	for range n {
		t0 := time.Now()
		if err := syscall.Flock(fd, syscall.LOCK_EX); err != nil {
			return ns, fmt.Errorf("flock %s: %w", path, err)
		}
		if err := syscall.Flock(fd, syscall.LOCK_UN); err != nil {
			return ns, fmt.Errorf("flock %s: %w", path, err)
		}
		ns = append(ns, time.Since(t0).Nanoseconds())
	}
	return ns, nil
}
