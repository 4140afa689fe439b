package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/dlockfs/dlockfs/mutex/peer"
	"github.com/dlockfs/dlockfs/mutex/testutil"
)

// Bounds of the waits. None of them is a timing assertion: each only turns
// a hang into a failure.
const (
	startTimeout  = 30 * time.Second // a mount prints its line; a cluster forms
	stopTimeout   = 20 * time.Second // a process exits after a signal
	workerTimeout = 90 * time.Second // a worker finishes its iterations
	statusTimeout = 5 * time.Second  // one read of .status
	pollEvery     = 5 * time.Millisecond
)

// nowMicros is the wall clock in microseconds, the clock of bash's
// $EPOCHREALTIME.
func nowMicros() int64 { return time.Now().UnixMicro() }

// parseMicros parses bash's $EPOCHREALTIME ("1732300000.123456").
func parseMicros(s string) (int64, error) {
	sec, frac, ok := strings.Cut(strings.Replace(s, ",", ".", 1), ".")
	if !ok || len(frac) != 6 {
		return 0, fmt.Errorf("not an $EPOCHREALTIME: %q", s)
	}
	a, err := strconv.ParseInt(sec, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("not an $EPOCHREALTIME: %q", s)
	}
	b, err := strconv.ParseInt(frac, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("not an $EPOCHREALTIME: %q", s)
	}
	return a*1_000_000 + b, nil
}

// ms formats a duration in microseconds as milliseconds.
func ms(us int64) string { return fmt.Sprintf("%.1f ms", float64(us)/1000) }

// proc is a child process in its own process group, its stdout collected
// line by line. It is killed (its group, by PGID) when its time limit
// passes and in the test's cleanup. The group is never signalled once the
// leader has been reaped, so a recycled PGID cannot be hit.
type proc struct {
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr testutil.SyncBuffer
	done   chan struct{} // closed once it has exited, stdout drained, reaped
	err    error         // Wait's result, once done is closed

	mu     sync.Mutex
	lines  []string
	reaped bool // set just before the leader is reaped
}

// startProc starts argv with a time limit; the test's cleanup kills it if
// it still runs.
func startProc(t *testing.T, name string, limit time.Duration, argv ...string) *proc {
	t.Helper()
	p := &proc{name: name, cmd: exec.Command(argv[0], argv[1:]...), done: make(chan struct{})}
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p.cmd.Stderr = &p.stderr
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	scanned := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
		}
		close(scanned)
	}()
	timer := time.AfterFunc(limit, func() {
		t.Logf("%s (PID %d) still running after %v: killing it", name, p.cmd.Process.Pid, limit)
		p.killGroup()
	})
	go func() {
		// The leader stays a zombie (its PGID taken) until reaped below.
		_ = waitExited(p.cmd.Process.Pid)
		<-scanned // a child still holding stdout is killed by cleanup
		p.mu.Lock()
		p.reaped = true
		p.mu.Unlock()
		timer.Stop()
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		timer.Stop()
		if !p.exited() {
			p.killGroup()
			select {
			case <-p.done:
			case <-time.After(stopTimeout):
				t.Logf("%s (PID %d) did not exit after SIGKILL", name, p.cmd.Process.Pid)
			}
		}
	})
	return p
}

// waitExited waits until process pid has exited without reaping it
// (waitid with WNOWAIT).
func waitExited(pid int) error {
	const pPID = 1
	var info [128]byte // siginfo_t
	for {
		_, _, e := syscall.Syscall6(syscall.SYS_WAITID, pPID, uintptr(pid), uintptr(unsafe.Pointer(&info[0])),
			syscall.WEXITED|syscall.WNOWAIT, 0, 0)
		switch e {
		case 0:
			return nil
		case syscall.EINTR:
			continue
		default:
			return e
		}
	}
}

// killGroup sends SIGKILL to the process group the proc leads (the shell
// and the children it started: cat, timeout), unless the leader has been
// reaped.
func (p *proc) killGroup() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.reaped {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	}
}

// signal sends sig to the process itself (by PID).
func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to %s: %v", sig, p.name, err)
	}
}

// exited reports whether the process has exited.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits (bounded) for the process to exit and returns its exit code
// (-1 if a signal killed it).
func (p *proc) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		t.Fatalf("%s did not exit within %v\nstdout: %q\nstderr: %s", p.name, d, p.output(), p.stderr.String())
	}
	return p.code()
}

// code is the exit code of an exited process (-1 if a signal killed it).
func (p *proc) code() int {
	var ee *exec.ExitError
	switch {
	case p.err == nil:
		return 0
	case errors.As(p.err, &ee):
		return ee.ExitCode()
	default:
		return -1
	}
}

// output returns the stdout lines so far.
func (p *proc) output() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.lines)
}

// waitLine waits (bounded) for a stdout line starting with prefix and
// returns it.
func (p *proc) waitLine(t *testing.T, d time.Duration, prefix string) string {
	t.Helper()
	var line string
	found := func() bool {
		for _, l := range p.output() {
			if strings.HasPrefix(l, prefix) {
				line = l
				return true
			}
		}
		return false
	}
	deadline := time.Now().Add(d)
	for !found() {
		if p.exited() && !found() {
			t.Fatalf("%s exited (%v) without printing %q\nstdout: %q\nstderr: %s",
				p.name, p.err, prefix, p.output(), p.stderr.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s printed no %q line within %v\nstdout: %q\nstderr: %s",
				p.name, prefix, d, p.output(), p.stderr.String())
		}
		time.Sleep(pollEvery)
	}
	return line
}

// hasLine reports whether a stdout line starts with prefix.
func (p *proc) hasLine(prefix string) bool {
	for _, l := range p.output() {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

// run runs argv to completion, bounded by limit, and returns its exit code
// and output.
func run(t *testing.T, limit time.Duration, argv ...string) (int, string, string) {
	t.Helper()
	p := startProc(t, argv[0], limit, argv...)
	p.stdin.Close()
	code := p.wait(t, limit+stopTimeout)
	return code, strings.Join(p.output(), "\n"), p.stderr.String()
}

// mounted reports whether dir is a mount point (per /proc/self/mountinfo).
func mounted(dir string) bool {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// nodeOpts configure a "dlockfs mount" child.
type nodeOpts struct {
	name     string
	dir      string   // mountpoint; default a fresh temp dir
	bind     string   // gossip address; default a free 127.0.0.1 port
	lockBind string   // lock channel; default a free 127.0.0.1 port
	join     []string // gossip addresses to join
	profile  string   // default "fast"
	keyFile  string
	netns    string        // run under nsenter --net=/run/netns/NETNS
	fastPath bool          // --fast-path (Roucairol–Carvalho: keep permissions)
	quorum   string        // --quorum; default the mount's (majority)
	stateDir string        // --state-dir; default a temp dir kept across restarts
	extra    []string      // more mount flags
	limit    time.Duration // the daemon's time limit; default 10 minutes
	binary   string        // default suite.binary
	env      []string      // KEY=VALUE added to the daemon's environment
}

// node is a running "dlockfs mount" child.
type node struct {
	t     *testing.T
	opts  nodeOpts
	name  string
	dir   string
	bind  string
	p     *proc
	line  string // the mounted line
	limit time.Duration
}

// argv is the command line of the node.
func (o nodeOpts) argv() []string {
	bin := suite.binary
	if o.binary != "" {
		bin = o.binary
	}
	args := []string{bin, "mount", "--name", o.name, "--bind", o.bind, "--lock-bind", o.lockBind,
		"--gossip", o.profile, "--join-timeout", "20s", "--state-dir", o.stateDir}
	if o.quorum != "" {
		args = append(args, "--quorum", o.quorum)
	}
	if len(o.join) > 0 {
		args = append(args, "--join", strings.Join(o.join, ","))
	}
	if o.keyFile != "" {
		args = append(args, "--key-file", o.keyFile)
	}
	if o.fastPath {
		args = append(args, "--fast-path", "--quorum", "none") // the fast path is plain mode only
	}
	args = append(args, o.extra...)
	args = append(args, o.dir)
	if len(o.env) > 0 {
		args = append(append([]string{"env"}, o.env...), args...)
	}
	if o.netns != "" {
		args = append([]string{"nsenter", "--net=/run/netns/" + o.netns}, args...)
	}
	return args
}

// filled returns the options with defaults filled in.
func (o nodeOpts) filled(t *testing.T) nodeOpts {
	t.Helper()
	if o.dir == "" {
		o.dir = filepath.Join(t.TempDir(), o.name)
		if err := os.Mkdir(o.dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Both from one call: two FreeAddr calls may draw one port twice.
	addrs := testutil.FreeAddrs(t, 2)
	if o.bind == "" {
		o.bind = addrs[0]
	}
	if o.lockBind == "" {
		o.lockBind = addrs[1]
	}
	if o.profile == "" {
		o.profile = "fast"
	}
	if o.stateDir == "" {
		o.stateDir = filepath.Join(t.TempDir(), "state-"+o.name)
	}
	return o
}

// startMount starts "dlockfs mount" without waiting for it. The cleanup
// stops it (SIGTERM, then SIGKILL) by PID and detaches its mount.
func startMount(t *testing.T, o nodeOpts) *node {
	t.Helper()
	o = o.filled(t)
	n := &node{t: t, opts: o, name: o.name, dir: o.dir, bind: o.bind, limit: 10 * time.Minute}
	if o.limit > 0 {
		n.limit = o.limit
	}
	n.p = startProc(t, "dlockfs mount "+o.name, n.limit, o.argv()...)
	t.Cleanup(n.stop)
	return n
}

// startNode starts "dlockfs mount" and waits for its mounted line.
func startNode(t *testing.T, o nodeOpts) *node {
	t.Helper()
	n := startMount(t, o)
	n.line = n.p.waitLine(t, startTimeout, "dlockfs: node ")
	return n
}

// restart starts the node again with the same name, ports and directory
// (after kill or stop), and waits for its mounted line.
func (n *node) restart(t *testing.T) *node {
	t.Helper()
	if mounted(n.dir) {
		t.Fatalf("restart %s: %s is still mounted", n.name, n.dir)
	}
	return startNode(t, n.opts)
}

// kill SIGKILLs the daemon and waits for it to exit. Its FUSE mount stays,
// dead, until detach.
func (n *node) kill(t *testing.T) {
	t.Helper()
	n.p.signal(t, syscall.SIGKILL)
	n.p.wait(t, stopTimeout)
}

// term sends SIGTERM and waits for a clean exit.
func (n *node) term(t *testing.T) {
	t.Helper()
	n.p.signal(t, syscall.SIGTERM)
	if code := n.p.wait(t, stopTimeout); code != 0 {
		t.Errorf("%s exited %d after SIGTERM, want 0\nstderr: %s", n.name, code, n.p.stderr.String())
	}
}

// detach lazily unmounts the node's directory if it is still mounted
// (umount -l), as a killed daemon leaves a dead mount behind.
func (n *node) detach() {
	if mounted(n.dir) {
		_ = syscall.Unmount(n.dir, syscall.MNT_DETACH)
	}
}

// stop ends the node if it still runs and detaches its mount. It runs in
// cleanup and never fails the test.
func (n *node) stop() {
	if !n.p.exited() {
		_ = n.p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-n.p.done:
		case <-time.After(stopTimeout):
			n.t.Logf("%s ignored SIGTERM for %v: killing PID %d", n.name, stopTimeout, n.p.cmd.Process.Pid)
			_ = n.p.cmd.Process.Kill()
			<-n.p.done
		}
	}
	n.detach()
	if strings.Contains(n.p.stderr.String(), "WARNING: DATA RACE") {
		n.t.Errorf("%s: the race detector reported a data race", n.name)
	}
	if n.t.Failed() {
		n.t.Logf("%s (PID %d) stderr:\n%s", n.name, n.p.cmd.Process.Pid, n.p.stderr.String())
	}
}

// statusDoc is the .status JSON (peer.Status), with the tests' look-ups.
type statusDoc struct{ peer.Status }

// voters lists the voters' names (nil outside majority mode).
func (d statusDoc) voters() []string {
	if d.Quorum == nil {
		return nil
	}
	var vs []string
	for _, v := range d.Quorum.Voters {
		vs = append(vs, v.Name)
	}
	return vs
}

// lockDoc is one lock in .status.
type lockDoc = peer.LockStatus

// status reads and parses MOUNT/.status, bounded by statusTimeout (a
// hanging daemon cannot hang the test: the read runs in a goroutine).
func (n *node) status() (statusDoc, error) {
	type res struct {
		data []byte
		err  error
	}
	ch := make(chan res, 1)
	go func() {
		data, err := os.ReadFile(filepath.Join(n.dir, ".status"))
		ch <- res{data, err}
	}()
	var d statusDoc
	select {
	case r := <-ch:
		if r.err != nil {
			return d, r.err
		}
		if err := json.Unmarshal(r.data, &d); err != nil {
			return d, fmt.Errorf("%s/.status: %w: %q", n.dir, err, r.data)
		}
		return d, nil
	case <-time.After(statusTimeout):
		return d, fmt.Errorf("%s/.status: no answer within %v", n.dir, statusTimeout)
	}
}

// mustStatus is status, failing the test on error.
func (n *node) mustStatus(t *testing.T) statusDoc {
	t.Helper()
	d, err := n.status()
	if err != nil {
		t.Fatalf("%s: %v", n.name, err)
	}
	return d
}

// lock returns the named lock's state in a status (zero if absent).
func (d statusDoc) lock(name string) lockDoc {
	for _, l := range d.Locks {
		if l.Name == name {
			return l
		}
	}
	return lockDoc{Name: name, State: peer.LockIdle}
}

// memberStatus returns a member's status ("" if unknown).
func (d statusDoc) memberStatus(name string) string {
	for _, m := range d.Members {
		if m.Name == name {
			return m.Status
		}
	}
	return ""
}

// seesAlive reports whether the node's status lists exactly the names as
// alive members.
func (n *node) seesAlive(names ...string) bool {
	d, err := n.status()
	if err != nil {
		return false
	}
	var alive []string
	for _, m := range d.Members {
		if m.Status == peer.MemberAlive {
			alive = append(alive, m.Name)
		}
	}
	sort.Strings(alive)
	want := slices.Clone(names)
	sort.Strings(want)
	return slices.Equal(alive, want)
}

// names returns the nodes' names.
func names(nodes []*node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.name)
	}
	return out
}

// waitConverged waits until every node sees exactly the nodes as alive
// members, and returns how long that took.
func waitConverged(t *testing.T, d time.Duration, nodes []*node) time.Duration {
	t.Helper()
	all := names(nodes)
	return testutil.WaitFor(t, d, fmt.Sprintf("every node to see %v alive", all), func() bool {
		for _, n := range nodes {
			if !n.seesAlive(all...) {
				return false
			}
		}
		return true
	})
}

// startCluster starts n nodes named a, b, c... (each joining the first)
// with extra options, and waits until each sees all as alive.
func startCluster(t *testing.T, n int, o nodeOpts) []*node {
	t.Helper()
	var nodes []*node
	for i := range n {
		oi := o
		oi.name = string(rune('a' + i))
		if i > 0 {
			oi.join = []string{nodes[0].bind}
		}
		nodes = append(nodes, startNode(t, oi))
	}
	waitConverged(t, startTimeout, nodes)
	return nodes
}

// lockIdle reports whether a node's lock is idle with nothing waiting,
// queued or awaited: no request of any kind is left on it.
func lockIdle(l lockDoc) bool {
	return l.State == peer.LockIdle && l.Waiting == 0 && len(l.Queued) == 0 && len(l.Awaiting) == 0
}

// waitIdle waits until the lock is idle on every node.
func waitIdle(t *testing.T, d time.Duration, nodes []*node, lock string) {
	t.Helper()
	waitLock(t, d, nodes, lock, "idle everywhere", lockIdle)
}

// noRequests reports whether no request is left on a lock: nothing waits
// locally, nothing is queued or awaited (it may be held).
func noRequests(l lockDoc) bool {
	return l.Waiting == 0 && len(l.Queued) == 0 && len(l.Awaiting) == 0
}

// waitLock waits until ok holds for the lock's state on every node; on
// timeout it fails with every node's state.
func waitLock(t *testing.T, d time.Duration, nodes []*node, lock, what string, ok func(lockDoc) bool) {
	t.Helper()
	var last []string
	deadline := time.Now().Add(d)
	for {
		last = last[:0]
		for _, n := range nodes {
			st, err := n.status()
			if err != nil {
				last = append(last, fmt.Sprintf("%s: %v", n.name, err))
				continue
			}
			if l := st.lock(lock); !ok(l) {
				last = append(last, fmt.Sprintf("%s: %+v", n.name, l))
			}
		}
		if len(last) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("lock %q not %s within %v:\n%s", lock, what, d, strings.Join(last, "\n"))
		}
		time.Sleep(pollEvery)
	}
}

// holderScript takes MOUNT/LOCK, prints "held TOKEN ENTER", holds until a
// line arrives on stdin (or stdin closes), then releases and prints
// "released LEAVE". Times are $EPOCHREALTIME.
const holderScript = `exec 9<"$1/$2" || exit 3
t0=$EPOCHREALTIME
read -r tok <&9 || exit 4
echo "held $tok $t0"
read -r x
t1=$EPOCHREALTIME
exec 9<&-
echo "released $t1"
`

// shellHold starts a bash shell that opens n's lock and holds it until
// release (it may be waiting for it).
func shellHold(t *testing.T, n *node, lock string) *proc {
	t.Helper()
	return startProc(t, "holder on "+n.name, workerTimeout, "bash", "-c", holderScript, "holder", n.dir, lock)
}

// held parses the holder's "held TOKEN ENTER" line.
func held(t *testing.T, line string) (token uint64, enter int64) {
	t.Helper()
	f := strings.Fields(line)
	if len(f) != 3 {
		t.Fatalf("bad held line %q", line)
	}
	token, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		t.Fatalf("bad token in %q", line)
	}
	enter, err = parseMicros(f[2])
	if err != nil {
		t.Fatal(err)
	}
	return token, enter
}

// release makes a holder release (a line on its stdin) and waits for it.
func release(t *testing.T, h *proc) {
	t.Helper()
	if _, err := io.WriteString(h.stdin, "\n"); err != nil {
		t.Fatalf("release %s: %v", h.name, err)
	}
	if code := h.wait(t, stopTimeout); code != 0 {
		t.Fatalf("%s exited %d\nstdout: %q\nstderr: %s", h.name, code, h.output(), h.stderr.String())
	}
}

// waitWaiting waits until node n's lock has at least k local openers
// waiting.
func waitWaiting(t *testing.T, n *node, lock string, k int) {
	t.Helper()
	testutil.WaitFor(t, startTimeout, fmt.Sprintf("%d opener(s) waiting on %s", k, n.name), func() bool {
		d, err := n.status()
		return err == nil && d.lock(lock).Waiting >= k
	})
}

// workerScript does N critical sections on MOUNT/lock (N 0: until the
// file STOP exists): take the lock, read the token, increment the counter
// file, release; after each it prints "ID TOKEN ENTER LEAVE"
// ($EPOCHREALTIME, taken inside the hold).
const workerScript = `M=$1 C=$2 N=$3 ID=$4 STOP=${5:-}
for ((i = 0; N == 0 || i < N; i++)); do
	[[ -n $STOP && -e $STOP ]] && break
	exec 9<"$M/lock" || { echo "$ID: open failed at iteration $i" >&2; exit 3; }
	t0=$EPOCHREALTIME
	read -r token <&9 || { echo "$ID: reading the token failed at iteration $i" >&2; exit 4; }
	read -r v <"$C" || { echo "$ID: reading the counter failed" >&2; exit 5; }
	echo $((v + 1)) >"$C"
	t1=$EPOCHREALTIME
	exec 9<&-
	echo "$ID $token $t0 $t1"
done
`

// counterFile creates a counter file holding 0 and returns its path.
func counterFile(t *testing.T) string {
	t.Helper()
	c := filepath.Join(t.TempDir(), "counter")
	if err := os.WriteFile(c, []byte("0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return c
}

// readCounter returns the counter file's value.
func readCounter(t *testing.T, c string) int {
	t.Helper()
	data, err := os.ReadFile(c)
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatalf("counter %q: %v", data, err)
	}
	return v
}

// startWorkers starts perNode workers on each node, each doing iters
// critical sections on counter.
func startWorkers(t *testing.T, nodes []*node, perNode, iters int, counter string) []*proc {
	t.Helper()
	var ws []*proc
	for _, n := range nodes {
		for i := range perNode {
			id := fmt.Sprintf("%s%d", n.name, i)
			ws = append(ws, startProc(t, "worker "+id, workerTimeout, "bash", "-c", workerScript, "worker",
				n.dir, counter, strconv.Itoa(iters), id))
		}
	}
	return ws
}

// waitWorkers waits for every worker to exit and fails the test for each
// one that did not exit 0.
func waitWorkers(t *testing.T, ws []*proc) {
	t.Helper()
	for _, w := range ws {
		if code := w.wait(t, workerTimeout+stopTimeout); code != 0 {
			t.Errorf("%s exited %d after %d critical sections\nstderr: %s", w.name, code, len(w.output()), w.stderr.String())
		}
	}
}

// hold is one critical section as a worker recorded it.
type hold struct {
	worker       string
	token        uint64
	enter, leave int64 // microseconds
}

// holds parses the workers' output.
func holds(t *testing.T, ws []*proc) []hold {
	t.Helper()
	var hs []hold
	for _, w := range ws {
		for _, line := range w.output() {
			f := strings.Fields(line)
			if len(f) != 4 {
				t.Fatalf("%s: bad line %q", w.name, line)
			}
			tok, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				t.Fatalf("%s: bad token in %q", w.name, line)
			}
			in, err := parseMicros(f[2])
			if err != nil {
				t.Fatal(err)
			}
			out, err := parseMicros(f[3])
			if err != nil {
				t.Fatal(err)
			}
			hs = append(hs, hold{worker: f[0], token: tok, enter: in, leave: out})
		}
	}
	sort.Slice(hs, func(i, j int) bool { return hs[i].enter < hs[j].enter })
	return hs
}

// checkExclusive fails the test if two holds overlap or the tokens do not
// strictly rise in hold order (hs sorted by enter).
func checkExclusive(t *testing.T, hs []hold) {
	t.Helper()
	bad := 0
	for i := 1; i < len(hs) && bad < 10; i++ {
		prev, cur := hs[i-1], hs[i]
		if cur.enter < prev.leave {
			bad++
			t.Errorf("holds overlap: %s [%d, %d] token %d and %s [%d, %d] token %d",
				prev.worker, prev.enter, prev.leave, prev.token, cur.worker, cur.enter, cur.leave, cur.token)
		}
		if cur.token <= prev.token {
			bad++
			t.Errorf("token does not rise: %s token %d, then %s token %d", prev.worker, prev.token, cur.worker, cur.token)
		}
	}
}

// median and max of durations in microseconds.
func stats(us []int64) (p50, maxv int64) {
	if len(us) == 0 {
		return 0, 0
	}
	s := slices.Clone(us)
	slices.Sort(s)
	return s[len(s)/2], s[len(s)-1]
}

// execOutput runs a short command (bounded by 10 s) outside the test's
// control flow, for cleanups that must not call t.Fatal.
func execOutput(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// n0 drops a status error (a zero status then).
func n0(d statusDoc, _ error) statusDoc { return d }
