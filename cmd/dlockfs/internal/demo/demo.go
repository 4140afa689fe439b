package demo

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dlockfs/dlockfs/cmd/dlockfs/internal/cli"
	"github.com/dlockfs/dlockfs/cmd/dlockfs/internal/localcluster"
	"github.com/dlockfs/dlockfs/fs"
	"github.com/dlockfs/dlockfs/mutex/peer"
)

// Demo defaults and bounds.
const (
	demoDefaultPeers   = 3
	demoDefaultWorkers = 2
	demoDefaultSeconds = 5.0
	demoMaxWorkers     = 16
	demoMaxSeconds     = 3600
	demoTick           = 100 * time.Millisecond // one timeline line
	demoGrace          = 20 * time.Second       // workers finish their last hold after the deadline
	demoMaxLoops       = 10_000_000             // a worker's loop bound, besides the deadline
)

const helpDemo = `Usage: dlockfs demo [--keep] [--seconds N] [--workers N] [--peers N]

Show dlockfs at work on this one machine, with nothing to set up. The demo
starts a cluster of 3 peers inside this process (on 127.0.0.1, free ports,
fast gossip, a fresh random cluster key), mounts each peer's lock directory
in a temporary directory, and runs bash workers against the mounts (2 per
mount by default) for a few seconds. Each worker loops:

  exec 9<MOUNT/lock          # blocks until the whole cluster grants the lock
  read -r token <&9          # the fencing token of this hold
  read n <counter; echo $((n+1)) >counter    # unprotected read-modify-write
  exec 9<&-                  # release

and logs each hold (peer, worker, token, enter and leave time). Meanwhile a
timeline shows, every 100 ms, which peer holds the lock with which token and
how many holds each peer got. The summary then checks the run: the shared
counter equals the number of holds (no lost update), no two holds overlap in
time, and the tokens rise strictly in hold order. Exit 0 if all hold.

Everything is cleaned up at the end or on Ctrl-C: workers killed, mounts
unmounted, peers gone, the temporary directory removed. The demo process never
touches its own mounts (only its child processes do).

Flags:
  --seconds N   how long the workers run (default 5; fractions allowed)
  --workers N   bash workers per mount (default 2, at most 16)
  --peers N     peers in the cluster (default 3, 1 to 26)
  --keep        after the run, keep the cluster up and print its mount paths
                and commands to try from other shells, until Ctrl-C
  --debug       log the peers' and go-fuse's debug messages to stderr

Requirements: root (or a non-root user with fusermount3 and access to
/dev/fuse), and bash.

Examples:
  sudo dlockfs demo
  sudo dlockfs demo --seconds 2 --workers 4
  sudo dlockfs demo --keep      # then play with the printed commands

Exit codes: 0 all checks passed (--keep: also after Ctrl-C), 1 a check failed
or the run was interrupted, 2 usage, 11 the local cluster did not form,
14 FUSE unavailable.
`

// demoOptions are the flags of "dlockfs demo".
type demoOptions struct {
	keep    bool
	seconds float64
	workers int
	peers   int
	debug   bool
}

// Command is "dlockfs demo [--keep] [--seconds N] [--workers N] [--peers N]".
func Command() cli.Command {
	return cli.NewCommand("demo", "run a local demo cluster", helpDemo, demoFlags, runDemo)
}

// demoFlags parses and checks demo's flags.
func demoFlags(args []string) (demoOptions, error) {
	o := demoOptions{}
	fs := cli.NewFlagSet("demo")
	fs.BoolVar(&o.keep, "keep", false, "")
	fs.Float64Var(&o.seconds, "seconds", demoDefaultSeconds, "")
	fs.IntVar(&o.workers, "workers", demoDefaultWorkers, "")
	fs.IntVar(&o.peers, "peers", demoDefaultPeers, "")
	fs.BoolVar(&o.debug, "debug", false, "")
	pos, _, err := cli.ParseInterspersed(fs, args, -1)
	if err != nil {
		return o, err
	}
	switch {
	case len(pos) > 0:
		return o, cli.Usagef("demo takes no arguments, got %q", pos)
	case !(o.seconds > 0 && o.seconds <= demoMaxSeconds):
		return o, cli.Usagef("--seconds %v: want more than 0, at most %d", o.seconds, demoMaxSeconds)
	case o.workers < 1 || o.workers > demoMaxWorkers:
		return o, cli.Usagef("--workers %d: want 1 to %d per mount", o.workers, demoMaxWorkers)
	case o.peers < 1 || o.peers > localcluster.MaxPeers:
		return o, cli.Usagef("--peers %d: want 1 to %d", o.peers, localcluster.MaxPeers)
	}
	return o, nil
}

// demoWorkerScript is one bash worker. Everything in its loop is a bash
// builtin (no fork), so a hold lasts tens of microseconds. Times come from
// EPOCHREALTIME (microseconds; LC_ALL=C makes its separator a dot).
const demoWorkerScript = `
set -u
exec 3>>"$LOG" || exit 3
i=0
while (( i < MAXLOOPS )); do
	now=${EPOCHREALTIME/./}
	(( now < DEADLINE )) || break
	exec 9<"$MNT/lock" || { echo "worker $PEER/$WORKER: cannot open $MNT/lock" >&2; exit 4; }
	read -r token <&9 || token=none
	enter=${EPOCHREALTIME/./}
	read -r n <"$COUNTER"
	echo $((n + 1)) >"$COUNTER"
	leave=${EPOCHREALTIME/./}
	exec 9<&-
	echo "$PEER $WORKER $token ${enter}000 ${leave}000" >&3
	i=$((i + 1))
done
`

// demoWorker is one running bash worker.
type demoWorker struct {
	peer   string
	id     int
	log    string
	stderr *lockedBuffer
	proc   *localcluster.Child
}

// lockedBuffer is a bytes.Buffer for one writer and concurrent readers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// hold is one hold of the lock, as a worker logged it.
type hold struct {
	peer         string
	worker       int
	token        uint64
	enter, leave int64 // Unix nanoseconds (microsecond resolution)
}

// runDemo is "dlockfs demo".
func runDemo(ctx context.Context, e *cli.Env, o demoOptions) error {
	bash, err := exec.LookPath("bash")
	if err != nil {
		return cli.Codef(cli.ExitError, "the demo's workers need bash: %w", err)
	}
	sigs := cli.NotifySignals(ctx)
	defer sigs.Stop()
	ctx = sigs.Context()
	log := cli.NewLogger(e, o.debug)
	key, err := localcluster.NewKey()
	if err != nil {
		return err
	}

	if err := fs.CheckFUSE(false); err != nil {
		return cli.MountError(err)
	}
	fmt.Fprintf(e.Stdout, "Starting %d peers on 127.0.0.1 (fast gossip, encrypted) and mounting them...\n", o.peers)
	c, err := localcluster.Start(ctx, localcluster.Options{Peers: o.peers, Key: key, Prefix: "dlockfs-demo-", Log: log,
		Signals: sigs})
	if err != nil {
		if ctx.Err() != nil {
			return cli.Codef(cli.ExitError, "interrupted while starting the cluster")
		}
		return err
	}
	defer func() {
		if cerr := c.Close(); cerr != nil {
			fmt.Fprintf(e.Stderr, "dlockfs demo: cleanup: %s\n", cli.OneLine(cerr.Error()))
		}
	}()
	for i, m := range c.Mounts {
		fmt.Fprintf(e.Stdout, "  peer %s  mounted at %s\n", c.Names[i], m)
	}

	holds, runErr := demoRun(ctx, e, c, o, bash)
	if ctx.Err() != nil {
		fmt.Fprintln(e.Stdout, "Interrupted: stopping the workers and the cluster.")
		return cli.Codef(cli.ExitError, "interrupted")
	}
	var checkErr error
	if runErr == nil {
		checkErr = demoSummary(e.Stdout, c, o, holds)
	}
	failed := errors.Join(runErr, checkErr)
	if o.keep {
		demoKeep(ctx, e, c)
	}
	return failed
}

// demoRun runs the workers for o.seconds, printing the timeline, and
// returns every hold they logged. It ends every worker before returning.
func demoRun(ctx context.Context, e *cli.Env, c *localcluster.Cluster, o demoOptions, bash string) (*demoResult, error) {
	// The counter and the logs live on tmpfs when there is one: a hold
	// then lasts microseconds instead of an ext4 truncate and write.
	data, err := os.MkdirTemp(localcluster.TmpfsDir(), "dlockfs-demo-data-")
	if err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	defer os.RemoveAll(data)
	counter := filepath.Join(data, "counter")
	if err := os.WriteFile(counter, []byte("0\n"), 0o644); err != nil {
		return nil, fmt.Errorf("counter file: %w", err)
	}
	logs := data
	start := time.Now()
	deadline := start.Add(time.Duration(o.seconds * float64(time.Second)))
	var workers []*demoWorker
	defer func() {
		for _, w := range workers {
			w.proc.Kill()
		}
	}()
	for i, mnt := range c.Mounts {
		for j := range o.workers {
			w := &demoWorker{peer: c.Names[i], id: j, stderr: &lockedBuffer{},
				log: filepath.Join(logs, fmt.Sprintf("%s-%d.log", c.Names[i], j))}
			cmd := exec.Command(bash, "--noprofile", "--norc", "-c", demoWorkerScript)
			cmd.Dir = c.Dir
			cmd.Env = append(os.Environ(), "LC_ALL=C",
				"MNT="+mnt, "COUNTER="+counter, "LOG="+w.log,
				"PEER="+w.peer, "WORKER="+strconv.Itoa(j),
				"DEADLINE="+strconv.FormatInt(deadline.UnixMicro(), 10),
				"MAXLOOPS="+strconv.Itoa(demoMaxLoops))
			cmd.Stdout = w.stderr
			cmd.Stderr = w.stderr
			p, err := localcluster.StartChild(cmd)
			if err != nil {
				return nil, err
			}
			w.proc = p
			workers = append(workers, w)
		}
	}
	fmt.Fprintf(e.Stdout, "Running %d bash workers (%d per mount) for %gs. Each loops: open lock, read token, "+
		"counter+1, close.\n\n", len(workers), o.workers, o.seconds)

	tl := newTimeline(e.Stdout, c, workers, start)
	tl.header()
	ticker := time.NewTicker(demoTick)
	defer ticker.Stop()
	allDone := make(chan struct{})
	go func() {
		for _, w := range workers {
			<-w.proc.Done
		}
		close(allDone)
	}()
	grace := time.NewTimer(time.Until(deadline) + demoGrace)
	defer grace.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-ticker.C:
			tl.tick()
		case <-allDone:
			tl.tick()
			break loop
		case <-grace.C:
			return nil, fmt.Errorf("workers still running %v after the deadline: a lock was never granted?", demoGrace)
		}
	}
	var errs []error
	for _, w := range workers {
		if w.proc.Err != nil {
			errs = append(errs, fmt.Errorf("worker %s/%d: %w: %s", w.peer, w.id, w.proc.Err,
				strings.TrimSpace(w.stderr.String())))
		}
	}
	res := &demoResult{elapsed: time.Since(start)}
	for _, w := range workers {
		hs, err := readHolds(w.log)
		if err != nil {
			errs = append(errs, err)
		}
		res.holds = append(res.holds, hs...)
	}
	b, err := os.ReadFile(counter)
	if err != nil {
		errs = append(errs, fmt.Errorf("counter: %w", err))
	} else if res.counter, err = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err != nil {
		errs = append(errs, fmt.Errorf("counter file holds %q: %w", b, err))
	}
	res.workers = len(workers)
	return res, errors.Join(errs...)
}

// demoResult is what a demo run produced.
type demoResult struct {
	holds   []hold
	counter int64
	workers int
	elapsed time.Duration
}

// readHolds parses a worker's log.
func readHolds(path string) ([]hold, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil // the worker never got the lock
	}
	if err != nil {
		return nil, fmt.Errorf("worker log: %w", err)
	}
	defer f.Close()
	var out []hold
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		h, err := parseHold(sc.Text())
		if err != nil {
			return out, fmt.Errorf("%s:%d: %w", path, n, err)
		}
		out = append(out, h)
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("worker log: %w", err)
	}
	return out, nil
}

// parseHold parses "PEER WORKER TOKEN ENTER_NS LEAVE_NS".
func parseHold(line string) (hold, error) {
	f := strings.Fields(line)
	if len(f) != 5 {
		return hold{}, fmt.Errorf("malformed hold %q", line)
	}
	var h hold
	var err1, err2, err3, err4 error
	h.peer = f[0]
	h.worker, err1 = strconv.Atoi(f[1])
	h.token, err2 = strconv.ParseUint(f[2], 10, 64)
	h.enter, err3 = strconv.ParseInt(f[3], 10, 64)
	h.leave, err4 = strconv.ParseInt(f[4], 10, 64)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return hold{}, fmt.Errorf("malformed hold %q: %w", line, err)
	}
	return h, nil
}

// timeline prints one line per tick: the lock's holder and token right
// now (from the peers' status, in this process), and the holds each peer
// got since the last tick (from the workers' logs, in the temp directory).
type timeline struct {
	w       io.Writer
	c       *localcluster.Cluster
	start   time.Time
	workers []*demoWorker
	offsets map[string]int64 // bytes of each log consumed
	partial map[string]string
}

func newTimeline(w io.Writer, c *localcluster.Cluster, workers []*demoWorker, start time.Time) *timeline {
	return &timeline{w: w, c: c, start: start, workers: workers,
		offsets: map[string]int64{}, partial: map[string]string{}}
}

func (t *timeline) header() {
	fmt.Fprintf(t.w, "%7s  %-6s %7s  %-14s | %s\n", "time", "holder", "token", "last hold",
		"holds in the last 100 ms, per peer")
}

func (t *timeline) tick() {
	holder, token := "-", "-"
	for i, p := range t.c.Peers {
		for _, l := range p.Status().Locks {
			if l.Name == localcluster.LockName && l.State == peer.LockHolding {
				holder, token = t.c.Names[i], strconv.FormatUint(l.Token, 10)
			}
		}
	}
	counts := map[string]int{}
	total := 0
	var last hold
	for _, w := range t.workers {
		n, h := t.newLines(w.log)
		counts[w.peer] += n
		total += n
		if n > 0 && h.enter > last.enter {
			last = h
		}
	}
	lastHold := "-"
	if total > 0 {
		lastHold = fmt.Sprintf("%s/%d #%d", last.peer, last.worker, last.token)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%6.2fs  %-6s %7s  %-14s |", time.Since(t.start).Seconds(), holder, token, lastHold)
	for _, name := range t.c.Names {
		fmt.Fprintf(&b, " %s %4d ", name, counts[name])
	}
	fmt.Fprintf(&b, " = %d", total)
	fmt.Fprintln(t.w, b.String())
}

// newLines counts the complete lines appended to a log since the last
// call, and parses the last one.
func (t *timeline) newLines(path string) (int, hold) {
	f, err := os.Open(path)
	if err != nil {
		return 0, hold{}
	}
	defer f.Close()
	if _, err := f.Seek(t.offsets[path], io.SeekStart); err != nil {
		return 0, hold{}
	}
	b, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return 0, hold{}
	}
	t.offsets[path] += int64(len(b))
	s := t.partial[path] + string(b)
	n := strings.Count(s, "\n")
	end := strings.LastIndexByte(s, '\n')
	t.partial[path] = s[end+1:]
	var last hold
	if n > 0 {
		complete := s[:end]
		last, _ = parseHold(complete[strings.LastIndexByte(complete, '\n')+1:])
	}
	return n, last
}

// demoSummary prints the checks of a run and returns an error if one
// failed.
func demoSummary(w io.Writer, c *localcluster.Cluster, o demoOptions, r *demoResult) error {
	holds := slices.Clone(r.holds)
	slices.SortFunc(holds, func(a, b hold) int {
		if a.enter != b.enter {
			return int(a.enter - b.enter)
		}
		return int(int64(a.token) - int64(b.token))
	})
	total := len(holds)
	fmt.Fprintf(w, "\nSummary: %d holds in %.1fs (%.0f/s) by %d workers on %d peers\n",
		total, r.elapsed.Seconds(), float64(total)/r.elapsed.Seconds(), r.workers, len(c.Peers))

	perPeer := map[string]int{}
	perWorker := map[string]int{}
	for _, h := range holds {
		perPeer[h.peer]++
		perWorker[fmt.Sprintf("%s/%d", h.peer, h.worker)]++
	}
	fmt.Fprintf(w, "  holds per peer:")
	for _, name := range c.Names {
		share := 0.0
		if total > 0 {
			share = 100 * float64(perPeer[name]) / float64(total)
		}
		fmt.Fprintf(w, "  %s %d (%.0f%%", name, perPeer[name], share)
		for j := range o.workers {
			sep := ": "
			if j > 0 {
				sep = "+"
			}
			fmt.Fprintf(w, "%s%d", sep, perWorker[fmt.Sprintf("%s/%d", name, j)])
		}
		fmt.Fprint(w, ")")
	}
	fmt.Fprintln(w)

	var fails []string
	check := func(ok bool, format string, args ...any) {
		mark := "ok  "
		if !ok {
			mark = "FAIL"
			fails = append(fails, fmt.Sprintf(format, args...))
		}
		fmt.Fprintf(w, "  %s %s\n", mark, fmt.Sprintf(format, args...))
	}
	check(total > 0, "the lock was granted %d times", total)
	check(r.counter == int64(total), "counter %d, expected %d (one increment per hold: no lost update)",
		r.counter, total)

	overlaps, firstOverlap := 0, ""
	var maxLeave int64
	var maxHold hold
	for i, h := range holds {
		if i > 0 && h.enter < maxLeave {
			overlaps++
			if firstOverlap == "" {
				firstOverlap = fmt.Sprintf(": e.g. %s/%d token %d entered %d µs before %s/%d token %d left",
					h.peer, h.worker, h.token, (maxLeave-h.enter)/1000, maxHold.peer, maxHold.worker, maxHold.token)
			}
		}
		if h.leave > maxLeave {
			maxLeave, maxHold = h.leave, h
		}
	}
	check(overlaps == 0, "%d overlapping holds%s", overlaps, firstOverlap)

	rising, firstBad := true, ""
	for i := 1; i < total; i++ {
		if holds[i].token <= holds[i-1].token {
			rising = false
			firstBad = fmt.Sprintf(": token %d (%s) after token %d (%s)",
				holds[i].token, holds[i].peer, holds[i-1].token, holds[i-1].peer)
			break
		}
	}
	if total > 0 {
		check(rising, "tokens strictly rising in hold order (%d .. %d)%s",
			holds[0].token, holds[total-1].token, firstBad)
	}

	// Handover: from one hold's leave to the next hold's enter, when the
	// lock moves to another peer (messages) or stays (local queue).
	var moved, stayed []float64
	for i := 1; i < total; i++ {
		gap := float64(holds[i].enter-holds[i-1].leave) / 1e3
		if holds[i].peer != holds[i-1].peer {
			moved = append(moved, gap)
		} else {
			stayed = append(stayed, gap)
		}
	}
	var held []float64
	for _, h := range holds {
		held = append(held, float64(h.leave-h.enter)/1e3)
	}
	if len(held) > 0 {
		fmt.Fprintf(w, "  hold (enter to leave: counter read and written): p50 %.0f µs, p99 %.0f µs\n",
			localcluster.Percentile(held, 50), localcluster.Percentile(held, 99))
	}
	if len(moved) > 0 {
		fmt.Fprintf(w, "  handover to another peer: %d times, p50 %.0f µs, p99 %.0f µs (close, release, "+
			"messages, grant, open returns)\n", len(moved), localcluster.Percentile(moved, 50), localcluster.Percentile(moved, 99))
	}
	if len(stayed) > 0 {
		fmt.Fprintf(w, "  handover within a peer:   %d times, p50 %.0f µs, p99 %.0f µs\n",
			len(stayed), localcluster.Percentile(stayed, 50), localcluster.Percentile(stayed, 99))
	}
	if len(fails) > 0 {
		fmt.Fprintln(w, "RESULT: FAILED")
		return cli.Codef(cli.ExitError, "demo check failed: %s", strings.Join(fails, "; "))
	}
	fmt.Fprintf(w, "RESULT: ok: mutual exclusion held across %d peers\n", len(c.Peers))
	return nil
}

// demoKeep keeps the cluster up until ctx ends (Ctrl-C), after printing
// how to play with it.
func demoKeep(ctx context.Context, e *cli.Env, c *localcluster.Cluster) {
	exe := localcluster.SelfExe()
	a, b := c.Mounts[0], c.Mounts[len(c.Mounts)-1]
	fmt.Fprintf(e.Stdout, "\nThe cluster stays up until Ctrl-C. Mounts:\n")
	for i, m := range c.Mounts {
		fmt.Fprintf(e.Stdout, "  %s  %s\n", c.Names[i], m)
	}
	fmt.Fprintf(e.Stdout, `
Try, from other shells:
  exec 9<%[1]s/lock; cat <&9            # hold the lock on %[3]s: token, holder
  timeout 2 cat %[2]s/lock; echo $?     # %[4]s waits (124: timed out) while %[3]s holds it
  %[5]s status %[1]s
  exec 9<&-                              # release it
  flock %[2]s/lock -c 'cat %[2]s/.status | head -3'   # flock(1) opens it: a cluster lock
  %[5]s lock %[2]s -- sh -c 'echo token $DLOCKFS_TOKEN; sleep 1'
  exec 8<%[1]s/deploy; ls %[1]s; exec 8<&-   # any file name is a lock (listed where used)

`, a, b, c.Names[0], c.Names[len(c.Names)-1], exe)
	select {
	case <-ctx.Done():
	case <-anyPeerDone(c):
		fmt.Fprintln(e.Stderr, "dlockfs demo: a peer stopped on its own")
	}
	fmt.Fprintln(e.Stdout, "Stopping the cluster...")
}

// anyPeerDone is closed when one of the cluster's peers stops.
func anyPeerDone(c *localcluster.Cluster) <-chan struct{} {
	ch := make(chan struct{})
	var once sync.Once
	for _, p := range c.Peers {
		go func() {
			<-p.Done()
			once.Do(func() { close(ch) })
		}()
	}
	return ch
}
