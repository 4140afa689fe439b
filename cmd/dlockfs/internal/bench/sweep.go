package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dlockfs/dlockfs/cmd/dlockfs/internal/cli"
	"github.com/dlockfs/dlockfs/cmd/dlockfs/internal/localcluster"
	"github.com/dlockfs/dlockfs/mutex"
	"github.com/dlockfs/dlockfs/mutex/peer"
)

// Sweep defaults: short, as a 32-peer point runs 32 peers, 32 mounts and
// 32 looping clients on one machine.
const (
	sweepDefaultOps     = 300
	sweepDefaultSeconds = 1.0
	sweepMaxPoints      = 8
	sweepManyLocks      = 10_000
	sweepIdleWait       = 10 * time.Second // the peers forget the released locks, the heap settles
	sweepSettlePoll     = 250 * time.Millisecond
)

// parseSweep parses --sweep's list of peer counts ("3,8,16,32").
func parseSweep(s string) ([]int, error) {
	var ns []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > localcluster.MaxPeers {
			return nil, cli.Usagef("--sweep %q: %q is not a peer count from 1 to %d", s, f, localcluster.MaxPeers)
		}
		ns = append(ns, n)
	}
	if len(ns) > sweepMaxPoints {
		return nil, cli.Usagef("--sweep %q: at most %d peer counts", s, sweepMaxPoints)
	}
	return ns, nil
}

// SweepReport is the result of "dlockfs bench --sweep" (its --json output).
type SweepReport struct {
	Quorum    string     `json:"quorum"`
	Ops       int        `json:"ops"`
	Seconds   float64    `json:"seconds"`
	CPUs      int        `json:"cpus"`
	Encrypted bool       `json:"encrypted"`
	LoadAvg   [2]float64 `json:"load_avg"`
	Points    []SweepPoint
	// Linear reports whether uncontended p50 grows no worse than linearly
	// in N: p50(N) <= p50(N0) * N/N0 for every point after the first (N0).
	Linear bool `json:"linear"`
	// ManyLocks is the memory of the smallest point's cluster with
	// sweepManyLocks named locks held by one peer, and after.
	ManyLocks ManyLocks `json:"many_locks"`
	Plot      string    `json:"plot,omitempty"`
}

// SweepPoint is the measurements with one cluster size.
type SweepPoint struct {
	Peers       int          `json:"peers"`
	Uncontended LatencyStats `json:"uncontended"`
	MsgsPerAcq  float64      `json:"msgs_per_acq"`
	// Contended is one looping client per peer for the sweep's seconds.
	ContendedPerSec float64 `json:"contended_per_sec"`
	MinFairSharePct float64 `json:"min_fair_share_pct"`
	// RSSPerPeerKiB is this process's resident set with the cluster up
	// minus without, divided by the peers (peer, Serf, lock channel,
	// FUSE server); HeapPerPeerKiB the same for the Go heap in use.
	RSSPerPeerKiB  float64 `json:"rss_per_peer_kib"`
	HeapPerPeerKiB float64 `json:"heap_per_peer_kib"`
	// StartSeconds is how long the cluster took to form and mount.
	StartSeconds float64 `json:"start_seconds"`
	// LinearBound is p50(N0) * N/N0, the most a linear growth allows.
	LinearBoundUs float64 `json:"linear_bound_us"`
}

// ManyLocks is one peer holding many named locks (Peer.Lock in this
// process, each a full round with every peer).
type ManyLocks struct {
	Peers int `json:"peers"`
	Locks int `json:"locks"`
	// Heap and RSS of this process (KiB) before, while held, after every
	// lock was released and forgotten, and after a second such round
	// with other names.
	HeapIdleKiB, HeapHeldKiB, HeapAfterKiB, HeapAfter2KiB float64
	RSSIdleKiB, RSSHeldKiB, RSSAfterKiB, RSSAfter2KiB     float64
	// The lock names the peers know, summed.
	NamesIdle, NamesHeld, NamesAfter, NamesAfter2 int
	// BackToIdle: every peer forgot the names, and the heap is within
	// 10% (or 1 MiB) of idle.
	BackToIdle bool `json:"back_to_idle"`
	// NoGrowth: the second round left the heap within 10% (or 1 MiB) of
	// the first's: what stays is bounded.
	NoGrowth bool    `json:"no_growth"`
	Seconds  float64 `json:"seconds"`
	// SettleSeconds and Settle2Seconds: how long after the names were
	// forgotten the heap took to come within its bound (the lock
	// channel drops the names it interned once a connection is idle for
	// a second or two), or sweepIdleWait if it did not.
	SettleSeconds  float64 `json:"settle_seconds"`
	Settle2Seconds float64 `json:"settle2_seconds"`
}

// runSweep is "dlockfs bench --sweep".
func runSweep(ctx context.Context, e *cli.Env, o benchOptions, key []byte, progress io.Writer) error {
	rep := &SweepReport{Quorum: o.quorum, Ops: o.ops, Seconds: o.seconds, CPUs: runtime.NumCPU(),
		Encrypted: key != nil, Plot: o.plot}
	rep.LoadAvg[0] = loadAvg()
	fmt.Fprintf(progress, "dlockfs bench --sweep: %v peers, quorum %s, %d ops, contended %gs each\n",
		o.sweep, o.quorum, o.ops, o.seconds)
	smallest := slices.Min(o.sweep)
	manyDone := false
	for _, n := range o.sweep {
		many := n == smallest && !manyDone
		manyDone = manyDone || many
		pt, err := sweepPoint(ctx, e, o, key, n, many, rep, progress)
		if err != nil {
			if ctx.Err() != nil {
				return cli.Codef(cli.ExitError, "interrupted")
			}
			return err
		}
		rep.Points = append(rep.Points, pt)
	}
	rep.Linear = true
	first := rep.Points[0]
	for i := range rep.Points {
		p := &rep.Points[i]
		p.LinearBoundUs = first.Uncontended.P50us * float64(p.Peers) / float64(first.Peers)
		if i > 0 && p.Uncontended.P50us > p.LinearBoundUs {
			rep.Linear = false
		}
	}
	rep.LoadAvg[1] = loadAvg()
	if o.plot != "" {
		if err := os.WriteFile(o.plot, sweepSVG(rep), 0o644); err != nil {
			return fmt.Errorf("--plot: %w", err)
		}
	}
	if o.json {
		return printJSON(e.Stdout, rep)
	}
	printSweep(e.Stdout, rep)
	return nil
}

// memNow is this process's Go heap in use and resident set (KiB) after a
// collection that returns freed memory to the system.
func memNow() (heapKiB, rssKiB float64) {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.HeapInuse) / 1024, rssKiB0()
}

// rssKiB0 is VmRSS from /proc/self/status (0 if unknown).
func rssKiB0() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			v, _ := strconv.ParseFloat(f[1], 64)
			return v
		}
	}
	return 0
}

// sweepPoint starts a cluster of n and measures one point (and, if many,
// the many-locks memory: on the smallest cluster, as each lock is a round
// with every peer).
func sweepPoint(ctx context.Context, e *cli.Env, o benchOptions, key []byte, n int, many bool,
	rep *SweepReport, progress io.Writer) (SweepPoint, error) {
	pt := SweepPoint{Peers: n}
	heap0, rss0 := memNow()
	fmt.Fprintf(progress, "  %d peers: starting\n", n)
	t0 := time.Now()
	// The LAN profile (mount's default): the fast one's gossip to every
	// peer every 10 ms would take the CPU from what is measured at 16+.
	c, err := localcluster.Start(ctx, localcluster.Options{Peers: n, Key: key, Quorum: o.quorum, Profile: peer.ProfileLAN,
		Prefix: "dlockfs-bench-", Log: cli.NewLogger(e, o.debug)})
	if err != nil {
		return pt, err
	}
	pt.StartSeconds = time.Since(t0).Seconds()
	defer func() {
		if cerr := c.Close(); cerr != nil {
			fmt.Fprintf(e.Stderr, "dlockfs bench: cleanup: %s\n", cli.OneLine(cerr.Error()))
		}
	}()
	locks := make([]string, len(c.Mounts))
	for i, m := range c.Mounts {
		locks[i] = filepath.Join(m, localcluster.LockName)
	}
	if _, err := benchChild(ctx, 0, append([]string{"open", strconv.Itoa(max(benchWarmupOps/3, 2*n))}, locks...)...); err != nil {
		return pt, err
	}
	fmt.Fprintf(progress, "  %d peers: uncontended, contended\n", n)
	sent0, grants0 := c.Counters()
	if pt.Uncontended, err = benchChild(ctx, 0, append([]string{"open", strconv.Itoa(o.ops)}, locks...)...); err != nil {
		return pt, err
	}
	sent1, grants1 := c.Counters()
	pt.MsgsPerAcq = perAcq(sent1-sent0, grants1-grants0)
	cs, err := benchContended(ctx, c, locks, o.seconds)
	if err != nil {
		return pt, err
	}
	pt.ContendedPerSec, pt.MinFairSharePct = cs.PerSecond, cs.MinFairSharePct
	heap1, rss1 := memNow()
	pt.RSSPerPeerKiB = (rss1 - rss0) / float64(n)
	pt.HeapPerPeerKiB = (heap1 - heap0) / float64(n)
	if many {
		fmt.Fprintf(progress, "  %d peers: %d named locks held by one peer\n", n, sweepManyLocks)
		if rep.ManyLocks, err = benchManyLocks(ctx, c, sweepManyLocks); err != nil {
			return pt, err
		}
	}
	return pt, nil
}

// benchManyLocks has the first peer take count distinct named locks and
// hold them all, then release them, and measures the memory before, while
// held and after the peers forgot them.
func benchManyLocks(ctx context.Context, c *localcluster.Cluster, count int) (ManyLocks, error) {
	ml := ManyLocks{Peers: len(c.Peers), Locks: count}
	names := func() int {
		total := 0
		for _, p := range c.Peers {
			total += len(p.Names())
		}
		return total
	}
	start := time.Now()
	ml.NamesIdle = names()
	ml.HeapIdleKiB, ml.RSSIdleKiB = memNow()
	p := c.Peers[0]
	// round takes count locks, measures, releases them and waits until
	// the peers forgot them.
	round := func(r int) (heldHeap, heldRSS float64, namesHeld, namesAfter int, err error) {
		grants := make([]mutex.Grant, 0, count)
		release := func() error {
			var first error
			for _, g := range grants {
				if err := p.Unlock(g); err != nil && first == nil {
					first = fmt.Errorf("many locks: %w", err)
				}
			}
			grants = nil
			return first
		}
		for i := range count {
			lctx, cancel := context.WithTimeout(ctx, benchChildGrace)
			g, err := p.Lock(lctx, fmt.Sprintf("many-%d-%05d", r, i))
			cancel()
			if err != nil {
				_ = release()
				return 0, 0, 0, 0, fmt.Errorf("many locks: %w", err)
			}
			grants = append(grants, g)
		}
		namesHeld = names()
		heldHeap, heldRSS = memNow()
		if err := release(); err != nil {
			return 0, 0, 0, 0, err
		}
		deadline := time.Now().Add(sweepIdleWait)
		for namesAfter = names(); namesAfter > ml.NamesIdle && time.Now().Before(deadline); namesAfter = names() {
			select {
			case <-ctx.Done():
				return 0, 0, 0, 0, ctx.Err()
			case <-time.After(localcluster.Poll):
			}
		}
		return heldHeap, heldRSS, namesHeld, namesAfter, nil
	}
	// settle measures the memory until the heap is within bound, or
	// sweepIdleWait has passed: idle caches are let go after a while.
	settle := func(bound float64) (heap, rss, secs float64, err error) {
		t0 := time.Now()
		for heap, rss = memNow(); heap > bound && time.Since(t0) < sweepIdleWait; heap, rss = memNow() {
			select {
			case <-ctx.Done():
				return 0, 0, 0, ctx.Err()
			case <-time.After(sweepSettlePoll):
			}
		}
		return heap, rss, time.Since(t0).Seconds(), nil
	}
	idleBound := func(kib float64) float64 { return max(kib*1.1, kib+1024) }
	var err error
	if ml.HeapHeldKiB, ml.RSSHeldKiB, ml.NamesHeld, ml.NamesAfter, err = round(0); err != nil {
		return ml, err
	}
	if ml.HeapAfterKiB, ml.RSSAfterKiB, ml.SettleSeconds, err = settle(idleBound(ml.HeapIdleKiB)); err != nil {
		return ml, err
	}
	// A second round with other names: what stays after the first must
	// be bounded caches, not growth.
	if _, _, _, ml.NamesAfter2, err = round(1); err != nil {
		return ml, err
	}
	if ml.HeapAfter2KiB, ml.RSSAfter2KiB, ml.Settle2Seconds, err = settle(idleBound(ml.HeapAfterKiB)); err != nil {
		return ml, err
	}
	ml.BackToIdle = ml.NamesAfter <= ml.NamesIdle && ml.NamesAfter2 <= ml.NamesIdle &&
		ml.HeapAfterKiB <= idleBound(ml.HeapIdleKiB)
	ml.NoGrowth = ml.NamesAfter2 <= ml.NamesIdle &&
		ml.HeapAfter2KiB <= idleBound(ml.HeapAfterKiB)
	ml.Seconds = time.Since(start).Seconds()
	return ml, nil
}

// printSweep prints the sweep as a table.
func printSweep(w io.Writer, rep *SweepReport) {
	fmt.Fprintf(w, "\ndlockfs bench --sweep: quorum %s, %d CPUs, %s lock channel; %d ops per latency, contended %gs\n",
		rep.Quorum, rep.CPUs, map[bool]string{true: "encrypted", false: "plaintext"}[rep.Encrypted], rep.Ops, rep.Seconds)
	if busy := max(rep.LoadAvg[0], rep.LoadAvg[1]); busy > float64(rep.CPUs) {
		fmt.Fprintf(w, "WARNING: the machine was busy (load average %.1f on %d CPUs): the figures are pessimistic.\n", busy, rep.CPUs)
	}
	fmt.Fprintf(w, "\n%5s | %9s %9s %12s | %8s | %12s %9s | %12s %13s | %7s\n",
		"peers", "p50", "p99", "linear bound", "msgs/acq", "contended/s", "min fair", "RSS/peer", "Go heap/peer", "start")
	for _, p := range rep.Points {
		fmt.Fprintf(w, "%5d | %9s %9s %12s | %8.2f | %12.0f %8.0f%% | %8.0f KiB %9.0f KiB | %6.1fs\n",
			p.Peers, us(p.Uncontended.P50us), us(p.Uncontended.P99us), us(p.LinearBoundUs), p.MsgsPerAcq,
			p.ContendedPerSec, p.MinFairSharePct, p.RSSPerPeerKiB, p.HeapPerPeerKiB, p.StartSeconds)
	}
	verdict := "yes"
	if !rep.Linear {
		verdict = "NO (a p50 is above its linear bound, p50(N0)*N/N0)"
	}
	fmt.Fprintf(w, "\nuncontended p50 grows no worse than linearly in N: %s\n", verdict)
	ml := rep.ManyLocks
	back := "yes"
	if !ml.BackToIdle {
		back = "NO"
	}
	fmt.Fprintf(w, "\n%d named locks held by one peer of %d (this process: all %d peers), %.1fs:\n",
		ml.Locks, ml.Peers, ml.Peers, ml.Seconds)
	fmt.Fprintf(w, "  %-8s %12s %12s %10s\n", "", "Go heap", "RSS", "names")
	fmt.Fprintf(w, "  %-8s %8.0f KiB %8.0f KiB %10d\n", "idle", ml.HeapIdleKiB, ml.RSSIdleKiB, ml.NamesIdle)
	fmt.Fprintf(w, "  %-8s %8.0f KiB %8.0f KiB %10d   (%.0f B of heap per held lock)\n", "held", ml.HeapHeldKiB,
		ml.RSSHeldKiB, ml.NamesHeld, (ml.HeapHeldKiB-ml.HeapIdleKiB)*1024/float64(max(ml.Locks, 1)))
	fmt.Fprintf(w, "  %-8s %8.0f KiB %8.0f KiB %10d   (%+.0f KiB of heap, %.1fs after the names were forgotten)\n", "after",
		ml.HeapAfterKiB, ml.RSSAfterKiB, ml.NamesAfter, ml.HeapAfterKiB-ml.HeapIdleKiB, ml.SettleSeconds)
	fmt.Fprintf(w, "  %-8s %8.0f KiB %8.0f KiB %10d   (%+.0f KiB of heap since the first, %.1fs after)\n", "after 2nd",
		ml.HeapAfter2KiB, ml.RSSAfter2KiB, ml.NamesAfter2, ml.HeapAfter2KiB-ml.HeapAfterKiB, ml.Settle2Seconds)
	growth := "yes"
	if !ml.NoGrowth {
		growth = "NO"
	}
	fmt.Fprintf(w, "  back to idle (names forgotten, heap within 10%% or 1 MiB of idle): %s\n", back)
	fmt.Fprintf(w, "  bounded (a second round of other names leaves the heap within 10%% or 1 MiB): %s\n", growth)
	if rep.Plot != "" {
		fmt.Fprintf(w, "\nplot: %s\n", rep.Plot)
	}
}
