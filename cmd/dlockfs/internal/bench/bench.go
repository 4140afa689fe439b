package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"strings"
	"time"

	"github.com/dlockfs/dlockfs/cmd/dlockfs/internal/cli"
	"github.com/dlockfs/dlockfs/cmd/dlockfs/internal/localcluster"
	"github.com/dlockfs/dlockfs/fs"
	"github.com/dlockfs/dlockfs/mutex/peer"
)

// Bench defaults and bounds.
const (
	benchDefaultPeers   = 3
	benchDefaultSeconds = 5.0
	benchDefaultOps     = 2000
	benchMaxOps         = 1_000_000
	benchMaxSeconds     = 600
	benchWarmupOps      = 300
	benchFlockOps       = 20000
	benchStartDelay     = 300 * time.Millisecond // contended clients start together after this
	benchStartPerClient = 50 * time.Millisecond  // ...or this per client, if longer
	benchChildGrace     = 60 * time.Second       // a child's time beyond its planned run
)

// Targets: what dlockfs aims for with 3 peers on a 2-core machine.
const (
	targetUncontendedP50us = 150.0
	targetContendedPerSec  = 3000.0
	targetFairSharePct     = 25.0
	// Ratios inside one run (absolute times on a shared machine move by
	// 2x between runs): (a) and (b) p50 at most this many times the
	// in-process Peer.Lock+Unlock p50 plus the FUSE floor's p50.
	targetFUSERatio = 1.3
	// Contended, 3 peers: the hot path's goal, and each peer's share.
	goalContendedPerSec = 8000.0
	goalFairSharePct    = 90.0
)

const helpBench = `Usage: dlockfs bench [--peers N] [--seconds S] [--ops N] [--fast-path] [--json]
                     [--plaintext] [--quorum majority|none] [--cpuprofile FILE] [--trace FILE]
       dlockfs bench --sweep N,N,... [--plot FILE] [--ops N] [--seconds S] [--json] ...

Measure dlockfs on this machine. Starts a local cluster of N peers inside
this process (127.0.0.1, fast gossip, a fresh cluster key unless
--plaintext), mounts them in a temporary directory, and measures with child
processes (this binary re-executed; they call open(2)/close(2) directly):

  (a) uncontended open+close of MOUNT/lock, one client cycling through the
      mounts, so every acquisition moves the lock to another peer
  (b) the same on one mount only: the peer takes the lock again right after
      its own hold (with --fast-path the Roucairol-Carvalho case: no message)
  (a), (b) split: where each open+close's time went, from the child's
      times and the mounts' Peer.Lock/Unlock calls on the same clock: the
      FUSE open until Peer.Lock, waiting for the previous hold's RELEASE
      (which the kernel sends after close(2) returned), the lock round,
      the reply to the kernel, close(2) (p50, p99 and mean; the means add
      up to the row's mean)
  (c) the FUSE floor: open+close of MOUNT/.status and of the mount's root
      directory, which take no lock
  (d) contention: one looping client per peer for S seconds: acquisitions
      per second, each peer's share and its % of a fair share
  (e) messages sent per acquisition, from the peers' counters
  (f) in this process: a loopback TCP round trip and a fan-out to N-1
      echo servers, and the same over dlockfs's lock channel (framing,
      encryption, goroutine hand-offs)
  (g) flock(2) LOCK_EX+LOCK_UN on a /dev/shm file, for scale

Latencies are p50/p99 over --ops operations after a warm-up. dlockfs's
targets, for 3 peers on 2 cores, are checked at the end: uncontended p50
<= 150 us, contended >= 3000 acquisitions/s, no peer below 25% of its fair
share; and the hot path's goals, as ratios inside the run: (a) and (b) p50
at most 1.3 x (in-process Peer.Lock+Unlock p50 + FUSE floor p50), and
contended >= 8000 acquisitions/s with every peer at >= 90% of its share.

Flags:
  --peers N         peers in the cluster (default 3, 1 to 32)
  --seconds S       duration of the contended run (default 5)
  --ops N           operations per latency row (default 2000)
  --fast-path       also run everything on a second cluster whose peers keep
                    permissions (Roucairol-Carvalho), side by side
  --plaintext       no cluster key (measures the lock channel unencrypted)
  --quorum MODE     majority (default, as mount) or none (plain
                    Ricart-Agrawala), to compare what leases cost
  --sweep N,N,...   instead, measure clusters of each size in turn (e.g.
                    3,8,16,32): (a) uncontended p50 and p99, messages per
                    acquisition, (d) contended acquisitions/s, resident
                    memory per peer; whether p50 grows no worse than
                    linearly in N; and, on the first size, one peer holding
                    10000 named locks and the memory after it let them go.
                    Defaults there: --ops 300, --seconds 1; the peers use
                    the LAN gossip profile (as mount does)
  --plot FILE       with --sweep: also draw it as an SVG in FILE
  --json            print the results as JSON instead of the table
  --cpuprofile FILE write a CPU profile of this process (the peers, the FUSE
                    servers, the in-process network runs): go tool pprof FILE
  --trace FILE      write an execution trace of this process: where the
                    goroutines waited (go tool trace -pprof=sched FILE)
  --debug           log the peers' and go-fuse's debug messages to stderr

Requirements: as for 'dlockfs demo' (root, or fusermount3 and /dev/fuse).

Examples:
  sudo dlockfs bench
  sudo dlockfs bench --fast-path --seconds 3
  sudo dlockfs bench --json --cpuprofile /tmp/cpu.out && go tool pprof -top /tmp/cpu.out

Exit codes: 0 measured (a missed target is reported, not an error), 1 a
measurement failed or was interrupted, 2 usage, 11 the local cluster did not
form, 14 FUSE unavailable.
`

// benchOptions are the flags of "dlockfs bench".
type benchOptions struct {
	peers      int
	seconds    float64
	ops        int
	fastPath   bool
	plaintext  bool
	json       bool
	cpuprofile string
	trace      string
	debug      bool
	quorum     string   // --quorum: majority (default) or none
	sweep      []int    // --sweep: peer counts, each measured on its own cluster
	plot       string   // --plot: the sweep's SVG
	client     []string // the hidden child-client mode's arguments, if set
}

// Command is "dlockfs bench", and its hidden child-client mode
// "bench __client MODE ARGS...".
func Command() cli.Command {
	return cli.NewCommand("bench", "measure lock throughput and latency", helpBench, benchFlags, runBench)
}

// benchFlags parses and checks bench's flags.
func benchFlags(args []string) (benchOptions, error) {
	o := benchOptions{}
	if len(args) > 0 && args[0] == ClientCmd {
		o.client = args[1:]
		if len(o.client) == 0 {
			return o, cli.Usagef("%s: missing MODE", ClientCmd)
		}
		return o, nil
	}
	fs := cli.NewFlagSet("bench")
	fs.IntVar(&o.peers, "peers", benchDefaultPeers, "")
	fs.Float64Var(&o.seconds, "seconds", benchDefaultSeconds, "")
	fs.IntVar(&o.ops, "ops", benchDefaultOps, "")
	fs.BoolVar(&o.fastPath, "fast-path", false, "")
	fs.BoolVar(&o.plaintext, "plaintext", false, "")
	fs.BoolVar(&o.json, "json", false, "")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "")
	fs.StringVar(&o.trace, "trace", "", "")
	fs.BoolVar(&o.debug, "debug", false, "")
	fs.StringVar(&o.quorum, "quorum", peer.QuorumMajority, "")
	sweep := fs.String("sweep", "", "")
	fs.StringVar(&o.plot, "plot", "", "")
	pos, _, err := cli.ParseInterspersed(fs, args, -1)
	if err != nil {
		return o, err
	}
	if *sweep != "" {
		if o.sweep, err = parseSweep(*sweep); err != nil {
			return o, err
		}
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["ops"] {
			o.ops = sweepDefaultOps
		}
		if !set["seconds"] {
			o.seconds = sweepDefaultSeconds
		}
		if set["fast-path"] {
			return o, cli.Usagef("--fast-path: not with --sweep")
		}
	} else if o.plot != "" {
		return o, cli.Usagef("--plot: only with --sweep")
	}
	switch {
	case len(pos) > 0:
		return o, cli.Usagef("bench takes no arguments, got %q", pos)
	case o.quorum != "majority" && o.quorum != "none":
		return o, cli.Usagef("--quorum %q: want majority or none", o.quorum)
	case o.peers < 1 || o.peers > localcluster.MaxPeers:
		return o, cli.Usagef("--peers %d: want 1 to %d", o.peers, localcluster.MaxPeers)
	case !(o.seconds > 0 && o.seconds <= benchMaxSeconds):
		return o, cli.Usagef("--seconds %v: want more than 0, at most %d", o.seconds, benchMaxSeconds)
	case o.ops < 1 || o.ops > benchMaxOps:
		return o, cli.Usagef("--ops %d: want 1 to %d", o.ops, benchMaxOps)
	}
	return o, nil
}

// Report is the result of a bench run (the --json output).
type Report struct {
	Peers     int     `json:"peers"`
	Seconds   float64 `json:"seconds"`
	Ops       int     `json:"ops"`
	CPUs      int     `json:"cpus"`
	GoVersion string  `json:"go_version"`
	Encrypted bool    `json:"encrypted"`
	// Quorum is --quorum: majority (leases) or none (plain
	// Ricart–Agrawala); the fast-path run is always none.
	Quorum string `json:"quorum"`
	// LoadAvg is the 1-minute load average before and after the run
	// (from /proc/loadavg): well above CPUs means the figures are
	// pessimistic, as other programs took CPU time.
	LoadAvg    [2]float64 `json:"load_avg"`
	CPUProfile string     `json:"cpu_profile,omitempty"`
	// Runs has one entry per cluster: plain Ricart–Agrawala, then (with
	// --fast-path) keeping permissions.
	Runs      []benchRun    `json:"runs"`
	TCP       netBench      `json:"tcp"`
	Transport netBench      `json:"transport"`
	Flock     LatencyStats  `json:"flock_tmpfs"`
	FlockPath string        `json:"flock_path"`
	Targets   []benchTarget `json:"targets"`
}

// benchRun is the measurements on one cluster.
type benchRun struct {
	FastPath bool `json:"fast_path"`
	// Dir is the temporary directory the cluster was mounted in (removed
	// at the end).
	Dir string `json:"dir"`
	// Uncontended: one client cycling through the mounts.
	Uncontended     LatencyStats `json:"uncontended"`
	UncontendedMsgs float64      `json:"uncontended_msgs_per_acq"`
	// Repeat: one client on one mount.
	Repeat     LatencyStats `json:"repeat"`
	RepeatMsgs float64      `json:"repeat_msgs_per_acq"`
	// UncontendedBreakdown and RepeatBreakdown split (a) and (b) into
	// where the time went (see Breakdown), from the same runs.
	UncontendedBreakdown Breakdown `json:"uncontended_breakdown"`
	RepeatBreakdown      Breakdown `json:"repeat_breakdown"`
	// FloorStatus and FloorDir: open+close of .status and of the root
	// directory, which take no lock.
	FloorStatus LatencyStats `json:"floor_status"`
	FloorDir    LatencyStats `json:"floor_dir"`
	// PeerUncontended and PeerRepeat are (a) and (b) without FUSE: the
	// bench process calls Peer.Lock and Peer.Unlock itself.
	PeerUncontended LatencyStats   `json:"peer_uncontended"`
	PeerRepeat      LatencyStats   `json:"peer_repeat"`
	Contended       contendedStats `json:"contended"`
}

// contendedStats is the contended run: one looping client per peer.
type contendedStats struct {
	Acquisitions    int         `json:"acquisitions"`
	Seconds         float64     `json:"seconds"`
	PerSecond       float64     `json:"per_second"`
	MsgsPerAcq      float64     `json:"msgs_per_acq"`
	MinFairSharePct float64     `json:"min_fair_share_pct"`
	PerPeer         []peerShare `json:"per_peer"`
}

// peerShare is one peer's part of the contended run.
type peerShare struct {
	Peer         string       `json:"peer"`
	Acquisitions int          `json:"acquisitions"`
	SharePct     float64      `json:"share_pct"`
	FairSharePct float64      `json:"fair_share_pct"`
	Latency      LatencyStats `json:"latency"`
}

// benchTarget is one target (targetUncontendedP50us...) and whether it was met.
type benchTarget struct {
	Name string  `json:"name"`
	Want string  `json:"want"`
	Got  float64 `json:"got"`
	Unit string  `json:"unit"`
	Met  bool    `json:"met"`
}

// startProfile creates path and starts a profile (CPU profile, execution
// trace) written to it; end stops the profile and closes the file.
func startProfile(path string, start func(io.Writer) error, stop func()) (end func() error, err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := start(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() error {
		stop()
		return f.Close()
	}, nil
}

// runBench is "dlockfs bench" (and its hidden child-client mode).
func runBench(ctx context.Context, e *cli.Env, o benchOptions) (err error) {
	if o.client != nil {
		return runBenchClient(e.Stdout, o.client)
	}
	if err := fs.CheckFUSE(false); err != nil {
		return cli.MountError(err)
	}
	sigs := cli.NotifySignals(ctx)
	defer sigs.Stop()
	ctx = sigs.Context()
	progress := e.Stderr
	if !o.json {
		progress = e.Stdout
	}
	for _, prof := range []struct {
		flag, path string
		start      func(io.Writer) error
		stop       func()
	}{
		{"--cpuprofile", o.cpuprofile, pprof.StartCPUProfile, pprof.StopCPUProfile},
		{"--trace", o.trace, trace.Start, trace.Stop},
	} {
		if prof.path == "" {
			continue
		}
		end, perr := startProfile(prof.path, prof.start, prof.stop)
		if perr != nil {
			return fmt.Errorf("%s: %w", prof.flag, perr)
		}
		defer func() {
			if cerr := end(); cerr != nil && err == nil {
				err = fmt.Errorf("%s: %w", prof.flag, cerr)
			}
		}()
	}
	var key []byte
	if !o.plaintext {
		if key, err = localcluster.NewKey(); err != nil {
			return err
		}
	}
	if o.sweep != nil {
		return runSweep(ctx, e, o, key, progress)
	}
	rep := &Report{Peers: o.peers, Seconds: o.seconds, Ops: o.ops, CPUs: runtime.NumCPU(),
		GoVersion: runtime.Version(), Encrypted: key != nil, CPUProfile: o.cpuprofile, Quorum: o.quorum}
	rep.LoadAvg[0] = loadAvg()
	scratch, err := os.MkdirTemp("", "dlockfs-bench-scratch-")
	if err != nil {
		return fmt.Errorf("temporary directory: %w", err)
	}
	defer os.RemoveAll(scratch)

	fmt.Fprintf(progress, "dlockfs bench: %d peers on 127.0.0.1 in this process, %d CPUs, %s; measuring...\n",
		o.peers, rep.CPUs, map[bool]string{true: "encrypted", false: "plaintext"}[key != nil])
	step := func(what string) { fmt.Fprintf(progress, "  %s\n", what) }

	step("(f) in-process loopback TCP and lock channel")
	if rep.TCP, err = benchTCP(o.ops, o.peers-1); err != nil {
		return err
	}
	if rep.Transport, err = benchTransport(ctx, o.ops, o.peers-1, key); err != nil {
		return err
	}
	step("(g) flock(2) on tmpfs")
	if rep.Flock, rep.FlockPath, err = benchFlock(ctx, scratch); err != nil {
		return err
	}
	modes := []bool{false}
	if o.fastPath {
		modes = append(modes, true)
	}
	for _, fast := range modes {
		run, err := benchCluster(ctx, e, o, key, fast, step, sigs)
		if err != nil {
			if ctx.Err() != nil {
				return cli.Codef(cli.ExitError, "interrupted")
			}
			return err
		}
		rep.Runs = append(rep.Runs, run)
	}
	rep.LoadAvg[1] = loadAvg()
	rep.Targets = benchTargets(rep)
	if o.json {
		return printJSON(e.Stdout, rep)
	}
	printBench(e.Stdout, rep)
	return nil
}

// benchCluster starts a cluster and measures (a) to (e) on it.
func benchCluster(ctx context.Context, e *cli.Env, o benchOptions, key []byte, fast bool, step func(string),
	sigs *cli.Signals) (benchRun, error) {
	run := benchRun{FastPath: fast}
	label := "plain Ricart-Agrawala"
	if fast {
		label = "fast path (keep permissions)"
	}
	step(fmt.Sprintf("cluster of %d, %s: starting", o.peers, label))
	times := &localcluster.LockTimes{}
	c, err := localcluster.Start(ctx, localcluster.Options{Peers: o.peers, FastPath: fast, Key: key, Quorum: o.quorum,
		Prefix: "dlockfs-bench-", Log: cli.NewLogger(e, o.debug), Signals: sigs, LockTimes: times})
	if err != nil {
		return run, err
	}
	defer func() {
		if cerr := c.Close(); cerr != nil {
			fmt.Fprintf(e.Stderr, "dlockfs bench: cleanup: %s\n", cli.OneLine(cerr.Error()))
		}
	}()
	run.Dir = c.Dir
	locks := make([]string, len(c.Mounts))
	for i, m := range c.Mounts {
		locks[i] = filepath.Join(m, localcluster.LockName)
	}
	n := strconv.Itoa(o.ops)

	// Warm up every mount (kernel dentry cache, first messages).
	if _, err := benchChild(ctx, 0, append([]string{"open", strconv.Itoa(benchWarmupOps)}, locks...)...); err != nil {
		return run, err
	}
	// measured runs a timed client on paths: its latencies, messages per
	// acquisition, and its breakdown.
	measured := func(paths ...string) (LatencyStats, float64, Breakdown, error) {
		sent0, grants0 := c.Counters()
		times.Start()
		s, err := benchChild(ctx, 0, append([]string{"timed", n}, paths...)...)
		waitUnlocks(ctx, times, s.Ops)
		lks, unl := times.Stop()
		sent1, grants1 := c.Counters()
		bd := breakdown(s.Times, lks, unl)
		s.Times = nil
		return s, perAcq(sent1-sent0, grants1-grants0), bd, err
	}
	step("(a) uncontended, the lock moving between peers")
	if run.Uncontended, run.UncontendedMsgs, run.UncontendedBreakdown, err = measured(locks...); err != nil {
		return run, err
	}
	step("(b) repeat on one peer")
	// One untimed acquisition first, so that the timed ones all follow a
	// hold by the same peer.
	if _, err := benchChild(ctx, 0, "open", "1", locks[0]); err != nil {
		return run, err
	}
	if run.Repeat, run.RepeatMsgs, run.RepeatBreakdown, err = measured(locks[0]); err != nil {
		return run, err
	}
	step("(c) FUSE floor: .status and the root directory")
	if run.FloorStatus, err = benchChild(ctx, 0, "open", n, filepath.Join(c.Mounts[0], fs.StatusFile)); err != nil {
		return run, err
	}
	if run.FloorDir, err = benchChild(ctx, 0, "dir", n, c.Mounts[0]); err != nil {
		return run, err
	}
	step("(a), (b) without FUSE: Peer.Lock+Unlock in this process")
	if run.PeerUncontended, err = benchPeerLock(ctx, c, o.ops, true); err != nil {
		return run, err
	}
	if run.PeerRepeat, err = benchPeerLock(ctx, c, o.ops, false); err != nil {
		return run, err
	}
	step(fmt.Sprintf("(d) contended: one client per peer for %gs", o.seconds))
	if run.Contended, err = benchContended(ctx, c, locks, o.seconds); err != nil {
		return run, err
	}
	return run, nil
}

// benchPeerLock times Peer.Lock+Unlock of the mounts' lock called from
// this process (no FUSE): cycling through the peers, or on the first one
// only.
func benchPeerLock(ctx context.Context, c *localcluster.Cluster, ops int, cycle bool) (LatencyStats, error) {
	ns := make([]int64, 0, ops)
	start := time.Now()
	for i := range ops + benchWarmupOps/10 {
		p := c.Peers[0]
		if cycle {
			p = c.Peers[i%len(c.Peers)]
		}
		t0 := time.Now()
		lctx, cancel := context.WithTimeout(ctx, benchChildGrace)
		g, err := p.Lock(lctx, localcluster.LockName)
		cancel()
		if err != nil {
			return LatencyStats{}, fmt.Errorf("peer %s: %w", p.Node(), err)
		}
		if err := p.Unlock(g); err != nil {
			return LatencyStats{}, fmt.Errorf("peer %s: %w", p.Node(), err)
		}
		if i >= benchWarmupOps/10 {
			ns = append(ns, time.Since(t0).Nanoseconds())
		}
	}
	return summarize(ns, time.Since(start)), nil
}

// waitUnlocks waits (bounded) until the last of ops holds was given back:
// the kernel sends a close's RELEASE after close(2) returned.
func waitUnlocks(ctx context.Context, t *localcluster.LockTimes, ops int) {
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil && t.Unlocks() < ops {
		time.Sleep(time.Millisecond)
	}
}

// perAcq is messages per acquisition.
func perAcq(msgs, grants uint64) float64 {
	if grants == 0 {
		return 0
	}
	return float64(msgs) / float64(grants)
}

// benchContended runs one looping client per mount for seconds, all
// starting together.
func benchContended(ctx context.Context, c *localcluster.Cluster, locks []string, seconds float64) (contendedStats, error) {
	var cs contendedStats
	// Starting the children takes longer the more there are (each is a Go
	// program on a machine the peers keep busy): with too short a delay
	// the last ones start late and lose part of the run.
	from := time.Now().Add(max(benchStartDelay, time.Duration(len(locks))*benchStartPerClient))
	to := from.Add(time.Duration(seconds * float64(time.Second)))
	sent0, grants0 := c.Counters()
	type res struct {
		s   LatencyStats
		err error
	}
	results := make([]chan res, len(locks))
	for i, l := range locks {
		results[i] = make(chan res, 1)
		go func() {
			s, err := benchChild(ctx, time.Until(to),
				"loop", strconv.FormatInt(from.UnixNano(), 10), strconv.FormatInt(to.UnixNano(), 10), l)
			results[i] <- res{s, err}
		}()
	}
	var errs []error
	for i := range locks {
		r := <-results[i]
		if r.err != nil {
			errs = append(errs, r.err)
		}
		cs.PerPeer = append(cs.PerPeer, peerShare{Peer: c.Names[i], Acquisitions: r.s.Ops, Latency: r.s})
		cs.Acquisitions += r.s.Ops
	}
	if err := errors.Join(errs...); err != nil {
		return cs, err
	}
	sent1, grants1 := c.Counters()
	cs.Seconds = seconds
	cs.PerSecond = float64(cs.Acquisitions) / seconds
	cs.MsgsPerAcq = perAcq(sent1-sent0, grants1-grants0)
	cs.MinFairSharePct = 100
	fair := float64(cs.Acquisitions) / float64(len(locks))
	for i := range cs.PerPeer {
		p := &cs.PerPeer[i]
		if cs.Acquisitions > 0 {
			p.SharePct = 100 * float64(p.Acquisitions) / float64(cs.Acquisitions)
			p.FairSharePct = 100 * float64(p.Acquisitions) / fair
		}
		cs.MinFairSharePct = min(cs.MinFairSharePct, p.FairSharePct)
	}
	return cs, nil
}

// benchFlock measures flock(2) on a file in /dev/shm (or dir if there is
// no /dev/shm) from a child.
func benchFlock(ctx context.Context, dir string) (LatencyStats, string, error) {
	base := dir
	if d := localcluster.TmpfsDir(); d != "" {
		base = d
	}
	f, err := os.CreateTemp(base, "dlockfs-bench-flock-")
	if err != nil {
		return LatencyStats{}, "", fmt.Errorf("flock bench: %w", err)
	}
	path := f.Name()
	f.Close()
	defer os.Remove(path)
	s, err := benchChild(ctx, 0, "flock", strconv.Itoa(benchFlockOps), path)
	return s, path, err
}

// benchChild runs "dlockfs bench __client ARGS..." and parses its JSON.
// It is killed if it runs longer than plan plus a grace period, or when
// ctx ends.
func benchChild(ctx context.Context, plan time.Duration, args ...string) (LatencyStats, error) {
	var s LatencyStats
	cmd := exec.Command(localcluster.SelfExe(), append([]string{"bench", ClientCmd}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	ch, err := localcluster.StartChild(cmd)
	if err != nil {
		return s, err
	}
	wctx, cancel := context.WithTimeout(ctx, plan+benchChildGrace)
	defer cancel()
	if err := ch.Wait(wctx); err != nil {
		return s, fmt.Errorf("bench client %s: %w: %s", strings.Join(args[:1], " "), err, strings.TrimSpace(errb.String()))
	}
	if err := json.Unmarshal(out.Bytes(), &s); err != nil {
		return s, fmt.Errorf("bench client %s: output %q: %w", args[0], out.String(), err)
	}
	return s, nil
}

// benchTargets checks the targets on the plain run (and the
// fast-path run, if any).
func benchTargets(rep *Report) []benchTarget {
	var ts []benchTarget
	for _, r := range rep.Runs {
		suffix := ""
		if r.FastPath {
			suffix = ", fast path"
		}
		ts = append(ts,
			benchTarget{Name: fmt.Sprintf("uncontended p50 (%d peers%s)", rep.Peers, suffix),
				Want: fmt.Sprintf("<= %.0f", targetUncontendedP50us), Unit: "us",
				Got: r.Uncontended.P50us, Met: r.Uncontended.P50us <= targetUncontendedP50us},
			benchTarget{Name: "contended acquisitions/s" + suffix,
				Want: fmt.Sprintf(">= %.0f", targetContendedPerSec), Unit: "/s",
				Got: r.Contended.PerSecond, Met: r.Contended.PerSecond >= targetContendedPerSec},
			benchTarget{Name: "lowest % of fair share" + suffix,
				Want: fmt.Sprintf(">= %.0f", targetFairSharePct), Unit: "%",
				Got: r.Contended.MinFairSharePct, Met: r.Contended.MinFairSharePct >= targetFairSharePct},
		)
		if r.FastPath {
			continue
		}
		ratio := func(fuse, inproc LatencyStats) float64 {
			if d := inproc.P50us + r.FloorDir.P50us; d > 0 {
				return fuse.P50us / d
			}
			return 0
		}
		ra, rb := ratio(r.Uncontended, r.PeerUncontended), ratio(r.Repeat, r.PeerRepeat)
		ts = append(ts,
			benchTarget{Name: "(a) p50 / (Peer.Lock p50 + floor p50)", Want: fmt.Sprintf("<= %.1f", targetFUSERatio),
				Unit: "x", Got: ra, Met: ra <= targetFUSERatio},
			benchTarget{Name: "(b) p50 / (Peer.Lock p50 + floor p50)", Want: fmt.Sprintf("<= %.1f", targetFUSERatio),
				Unit: "x", Got: rb, Met: rb <= targetFUSERatio},
			benchTarget{Name: "hot-path goal: contended acquisitions/s", Want: fmt.Sprintf(">= %.0f", goalContendedPerSec),
				Unit: "/s", Got: r.Contended.PerSecond, Met: r.Contended.PerSecond >= goalContendedPerSec},
			benchTarget{Name: "hot-path goal: lowest % of fair share", Want: fmt.Sprintf(">= %.0f", goalFairSharePct),
				Unit: "%", Got: r.Contended.MinFairSharePct, Met: r.Contended.MinFairSharePct >= goalFairSharePct},
		)
	}
	return ts
}

// printBench prints the report as a table.
func printBench(w io.Writer, rep *Report) {
	fmt.Fprintf(w, "\ndlockfs bench: %d peers, %d CPUs, %s, %s lock channel, quorum %s; latencies over %d ops, contended %gs\n\n",
		rep.Peers, rep.CPUs, rep.GoVersion, map[bool]string{true: "encrypted", false: "plaintext"}[rep.Encrypted],
		rep.Quorum, rep.Ops, rep.Seconds)
	if busy := max(rep.LoadAvg[0], rep.LoadAvg[1]); busy > float64(rep.CPUs) {
		fmt.Fprintf(w, "WARNING: the machine was busy (load average %.1f on %d CPUs): other programs took CPU\n"+
			"time from the peers and clients, so these figures are pessimistic.\n\n", busy, rep.CPUs)
	}
	// Column per run.
	fmt.Fprintf(w, "%-52s", "open+close from a child process")
	for _, r := range rep.Runs {
		fmt.Fprintf(w, " | %-26s", runLabel(r, rep.Quorum))
	}
	fmt.Fprintf(w, "\n%-52s", "")
	for range rep.Runs {
		fmt.Fprintf(w, " | %8s %8s %8s", "p50", "p99", "msgs/acq")
	}
	fmt.Fprintln(w)
	row := func(name string, get func(benchRun) (LatencyStats, float64, bool)) {
		fmt.Fprintf(w, "%-52s", name)
		for _, r := range rep.Runs {
			s, m, hasMsgs := get(r)
			msgs := ""
			if hasMsgs {
				msgs = fmt.Sprintf("%.2f", m)
			}
			fmt.Fprintf(w, " | %8s %8s %8s", us(s.P50us), us(s.P99us), msgs)
		}
		fmt.Fprintln(w)
	}
	row("(a) MOUNT/lock, uncontended, moving peer to peer", func(r benchRun) (LatencyStats, float64, bool) {
		return r.Uncontended, r.UncontendedMsgs, true
	})
	row("(b) MOUNT/lock, repeat on the same peer", func(r benchRun) (LatencyStats, float64, bool) {
		return r.Repeat, r.RepeatMsgs, true
	})
	for _, b := range []struct {
		name string
		get  func(benchRun) Breakdown
	}{
		{"(a)", func(r benchRun) Breakdown { return r.UncontendedBreakdown }},
		{"(b)", func(r benchRun) Breakdown { return r.RepeatBreakdown }},
	} {
		for _, part := range []struct {
			name string
			get  func(Breakdown) LatencyStats
		}{
			{"FUSE open until Peer.Lock", func(d Breakdown) LatencyStats { return d.FUSEOpen }},
			{"waiting for the previous hold's RELEASE", func(d Breakdown) LatencyStats { return d.WaitRelease }},
			{"lock round (Peer.Lock, after the RELEASE)", func(d Breakdown) LatencyStats { return d.LockRound }},
			{"reply to the kernel, open(2) returns", func(d Breakdown) LatencyStats { return d.Reply }},
			{"close(2)", func(d Breakdown) LatencyStats { return d.Close }},
		} {
			fmt.Fprintf(w, "%-52s", "    "+b.name+" "+part.name)
			for _, r := range rep.Runs {
				s := part.get(b.get(r))
				fmt.Fprintf(w, " | %8s %8s %8s", us(s.P50us), us(s.P99us), "mean "+us(s.MeanUs))
			}
			fmt.Fprintln(w)
		}
	}
	row("(c) MOUNT/.status (no lock; renders the status)", func(r benchRun) (LatencyStats, float64, bool) {
		return r.FloorStatus, 0, false
	})
	row("(c) MOUNT root directory (no lock: FUSE floor)", func(r benchRun) (LatencyStats, float64, bool) {
		return r.FloorDir, 0, false
	})
	row("(a) without FUSE: Peer.Lock+Unlock, in-process", func(r benchRun) (LatencyStats, float64, bool) {
		return r.PeerUncontended, 0, false
	})
	row("(b) without FUSE: Peer.Lock+Unlock, in-process", func(r benchRun) (LatencyStats, float64, bool) {
		return r.PeerRepeat, 0, false
	})

	fmt.Fprintf(w, "\n(d) contended, one looping client per peer, %gs:\n", rep.Seconds)
	for _, r := range rep.Runs {
		cs := r.Contended
		fmt.Fprintf(w, "  %-26s %8.0f acquisitions/s, %.2f msgs/acq, lowest peer at %.0f%% of its fair share\n",
			runLabel(r, rep.Quorum), cs.PerSecond, cs.MsgsPerAcq, cs.MinFairSharePct)
		for _, p := range cs.PerPeer {
			fmt.Fprintf(w, "      peer %-3s %7d (%5.1f%%, %4.0f%% of fair)  wait p50 %s p99 %s\n",
				p.Peer, p.Acquisitions, p.SharePct, p.FairSharePct, us(p.Latency.P50us), us(p.Latency.P99us))
		}
	}

	fmt.Fprintf(w, "\n%-52s | %8s %8s\n", "for scale", "p50", "p99")
	net := func(name string, s LatencyStats) {
		fmt.Fprintf(w, "%-52s | %8s %8s\n", name, us(s.P50us), us(s.P99us))
	}
	net("(f) loopback TCP round trip, 64 B (in-process)", rep.TCP.RoundTrip)
	if rep.TCP.FanOutPeers > 0 {
		net(fmt.Sprintf("(f) TCP fan-out to %d peers (in-process)", rep.TCP.FanOutPeers), rep.TCP.FanOut)
		net("(f) lock channel round trip (mutex/transport)", rep.Transport.RoundTrip)
		net(fmt.Sprintf("(f) lock channel fan-out to %d peers", rep.Transport.FanOutPeers), rep.Transport.FanOut)
	} else {
		net("(f) lock channel round trip (mutex/transport)", rep.Transport.RoundTrip)
	}
	net("(g) flock(2) LOCK_EX+LOCK_UN on "+filepath.Dir(rep.FlockPath), rep.Flock)

	fmt.Fprintf(w, "\nTargets (for 3 peers on a 2-core machine):\n")
	for _, t := range rep.Targets {
		met := "MISSED"
		if t.Met {
			met = "met"
		}
		fmt.Fprintf(w, "  %-42s want %-7s %-2s got %8.2f %-3s %s\n", t.Name, t.Want, t.Unit, t.Got, t.Unit, met)
	}
	if rep.CPUProfile != "" {
		fmt.Fprintf(w, "\nCPU profile: go tool pprof -top %s\n", rep.CPUProfile)
	}
}

// loadAvg is the 1-minute load average (0 if unknown).
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// runLabel names a run's column.
func runLabel(r benchRun, quorum string) string {
	switch {
	case r.FastPath:
		return "fast path (keeps permits)"
	case quorum == peer.QuorumMajority:
		return "majority quorum (leases)"
	}
	return "plain Ricart-Agrawala"
}

// us formats microseconds.
func us(v float64) string {
	switch {
	case v >= 10000:
		return fmt.Sprintf("%.1f ms", v/1000)
	case v >= 100:
		return fmt.Sprintf("%.0f us", v)
	default:
		return fmt.Sprintf("%.1f us", v)
	}
}

// printJSON writes v as indented JSON and a newline: the --json output.
func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%s\n", b)
	return nil
}
