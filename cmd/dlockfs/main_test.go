package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/sys/unix"

	"github.com/dlockfs/dlockfs/cmd/dlockfs/internal/cli"
	"github.com/dlockfs/dlockfs/fs"
	"github.com/dlockfs/dlockfs/mutex/peer"
	"github.com/dlockfs/dlockfs/mutex/testutil"
)

// binary is the dlockfs binary built once by TestMain for the black-box tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dlockfs-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "dlockfs")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Bounds of the black-box tests' waits.
const (
	startTimeout = 30 * time.Second // a mount prints its line
	stopTimeout  = 30 * time.Second // a child exits after a signal
)

// result is a finished child process.
type result struct {
	code           int
	stdout, stderr string
}

// dlockfs runs the binary to completion (bounded by a minute) and returns
// its exit code and output.
func dlockfs(t *testing.T, args ...string) result {
	t.Helper()
	return runCmd(t, exec.Command(binary, args...))
}

// runCmd runs cmd to completion, bounded by a minute.
func runCmd(t *testing.T, cmd *exec.Cmd) result {
	t.Helper()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatalf("%v: %v", cmd.Args, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%v did not finish within a minute\nstdout: %s\nstderr: %s", cmd.Args, out.String(), errb.String())
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%v: %v", cmd.Args, err)
	}
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// wantCode fails the test unless r exited with code.
func wantCode(t *testing.T, r result, code int, what string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("%s: exit code %d, want %d\nstdout: %s\nstderr: %s", what, r.code, code, r.stdout, r.stderr)
	}
}

// isMountpoint reports whether dir is a mount point now.
func isMountpoint(t *testing.T, dir string) bool {
	t.Helper()
	ms, err := fs.MountsUnder(dir)
	if err != nil {
		t.Fatal(err)
	}
	return len(ms) > 0
}

// nobodyBinary is the setup of the tests of a non-root mount without
// fusermount3 (skipped unless run as root, and where fusermount3 is
// installed): a fresh directory that the user nobody can enter, holding a
// copy of the binary.
func nobodyBinary(t *testing.T) (dir, bin string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a child as nobody")
	}
	// Where go-fuse looks for the helper: PATH, then /bin.
	for _, p := range []string{"fusermount3", "/bin/fusermount3"} {
		if _, err := exec.LookPath(p); err == nil {
			t.Skip("fusermount3 is installed here")
		}
	}
	dir, err := os.MkdirTemp("", "dlockfs-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin = filepath.Join(dir, "dlockfs")
	data, err := os.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, bin
}

// runAsNobody runs bin with args as uid and gid 65534.
func runAsNobody(t *testing.T, bin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	return runCmd(t, cmd)
}

// status parses "dlockfs status --json DIR" (zero if status fails).
func status(t *testing.T, dir string) peer.Status {
	t.Helper()
	var d peer.Status
	if r := dlockfs(t, "status", "--json", dir); r.code == 0 {
		_ = json.Unmarshal([]byte(r.stdout), &d)
	}
	return d
}

// aliveMembers counts the alive members in "dlockfs status --json DIR"
// (-1 if status fails).
func aliveMembers(t *testing.T, dir string) int {
	t.Helper()
	r := dlockfs(t, "status", "--json", dir)
	var d peer.Status
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &d) != nil {
		return -1
	}
	n := 0
	for _, m := range d.Members {
		if m.Status == peer.MemberAlive {
			n++
		}
	}
	return n
}

// bgChild is a child process running in the background. Its stdout lines
// arrive on lines (dropped when nobody reads them); out collects its stderr
// (and, if asked, its stdout too); done is closed, and err set to Wait's
// result, once it has exited.
type bgChild struct {
	cmd   *exec.Cmd
	lines chan string
	out   *testutil.SyncBuffer
	done  chan struct{}
	err   error
}

// startBackground starts cmd in the background, with room for buffered
// unread lines; teeStdout also copies its stdout to out. The caller
// registers how to end it at cleanup.
func startBackground(t *testing.T, cmd *exec.Cmd, buffered int, teeStdout bool) *bgChild {
	t.Helper()
	c := &bgChild{cmd: cmd, lines: make(chan string, buffered), out: &testutil.SyncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = c.out
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("%v: %v", cmd.Args, err)
	}
	var stdout io.Reader = pipe
	if teeStdout {
		stdout = io.TeeReader(pipe, c.out)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case c.lines <- sc.Text():
			default:
			}
		}
		c.err = cmd.Wait()
		close(c.done)
	}()
	return c
}

// mountNode is a running "dlockfs mount" child; out is its stderr.
type mountNode struct {
	name, dir, bind string
	lock            string // its --lock-bind
	line            string // the mounted line
	*bgChild
}

// exitCode is the node's exit code once it has exited (-1 if by signal).
func (n *mountNode) exitCode() int {
	var ee *exec.ExitError
	if errors.As(n.err, &ee) {
		return ee.ExitCode()
	}
	if n.err != nil {
		return -1
	}
	return 0
}

// startNode starts "dlockfs mount" on a fresh directory with the fast
// gossip profile on 127.0.0.1 and waits for its mounted line. Cleanup ends
// it by its PID (SIGTERM, then SIGKILL) and unmounts what is left.
func startNode(t *testing.T, name string, extra ...string) *mountNode {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return startNodeAt(t, name, dir, extra...)
}

// startNodeAt is startNode on a given directory.
//
// The ports are drawn free but not held until the child binds them, and
// another test's socket (TestMetrics's --metrics address, a listener of
// this package) can take one in between: a node that fails to start with
// "address already in use" is started again on new ports, at most
// bindTries times in all.
func startNodeAt(t *testing.T, name, dir string, extra ...string) *mountNode {
	t.Helper()
	const bindTries = 3
	for try := 1; try <= bindTries; try++ {
		addrs := testutil.FreeAddrs(t, 2)
		bind, lock := addrs[0], addrs[1]
		args := append([]string{"mount", "--name", name, "--bind", bind, "--lock-bind", lock, "--gossip", "fast",
			"--state-dir", filepath.Join(t.TempDir(), "state-"+name), dir}, extra...)
		n := &mountNode{name: name, dir: dir, bind: bind, lock: lock, bgChild: startBackground(t, exec.Command(binary, args...), 1, false)}
		t.Cleanup(func() { n.stop(t) })
		select {
		case n.line = <-n.lines:
			return n
		case <-n.done:
			if try < bindTries && strings.Contains(n.out.String(), "address already in use") {
				t.Logf("dlockfs mount %s: a port was taken after it was drawn (try %d of %d), drawing new ones:\n%s", name, try, bindTries, n.out.String())
				continue
			}
			t.Fatalf("dlockfs mount %s exited (%v) before mounting\nstderr: %s", name, n.err, n.out.String())
		case <-time.After(startTimeout):
			t.Fatalf("dlockfs mount %s printed nothing in %v\nstderr: %s", name, startTimeout, n.out.String())
		}
	}
	panic("unreachable: the last try returns or fails")
}

// signal sends sig to the node's process (by its PID).
func (n *mountNode) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := n.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to %s: %v", sig, n.name, err)
	}
}

// wait waits (bounded) for the node to exit.
func (n *mountNode) wait(t *testing.T) {
	t.Helper()
	select {
	case <-n.done:
	case <-time.After(stopTimeout):
		t.Fatalf("%s did not exit within %v\nstderr: %s", n.name, stopTimeout, n.out.String())
	}
}

// stop ends the node if it still runs and unmounts its directory if it is
// still a mount point. Never fails: it runs in Cleanup.
func (n *mountNode) stop(t *testing.T) {
	select {
	case <-n.done:
	default:
		_ = n.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-n.done:
		case <-time.After(stopTimeout):
			t.Logf("%s ignored SIGTERM for %v: killing PID %d", n.name, stopTimeout, n.cmd.Process.Pid)
			_ = n.cmd.Process.Kill()
			<-n.done
		}
	}
	if ms, _ := fs.MountsUnder(n.dir); len(ms) > 0 {
		_ = syscall.Unmount(n.dir, syscall.MNT_DETACH)
	}
	if t.Failed() {
		t.Logf("%s stderr:\n%s", n.name, n.out.String())
	}
}

// holder is a running "dlockfs lock PATH -- sh -c '...; read x'" that
// holds the lock until release closes its stdin.
type holder struct {
	stdin io.WriteCloser
	*bgChild
}

// holdLock starts a holder on path and waits until it holds the lock.
func holdLock(t *testing.T, path string) *holder {
	t.Helper()
	cmd := exec.Command(binary, "lock", path, "--", "sh", "-c", `echo "held $DLOCKFS_TOKEN"; read x; exit 0`)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	h := &holder{stdin: stdin, bgChild: startBackground(t, cmd, 1, false)}
	t.Cleanup(func() {
		// Closing stdin ends the shell (a kill of dlockfs lock alone
		// would leave it holding the lock's descriptor, and the mount's
		// stop would wait out its drain); kill only if it lingers.
		h.stdin.Close()
		select {
		case <-h.done:
		case <-time.After(stopTimeout):
			_ = h.cmd.Process.Kill()
		}
	})
	select {
	case line := <-h.lines:
		if !strings.HasPrefix(line, "held ") {
			t.Fatalf("holder printed %q", line)
		}
	case <-h.done:
		t.Fatalf("holder exited (%v) before holding\nstderr: %s", h.err, h.out.String())
	case <-time.After(startTimeout):
		t.Fatalf("holder did not get %s in %v", path, startTimeout)
	}
	return h
}

// release ends the holder and waits for it.
func (h *holder) release(t *testing.T) {
	t.Helper()
	h.stdin.Close()
	select {
	case <-h.done:
		if h.err != nil {
			t.Fatalf("holder: %v; stderr: %s", h.err, h.out.String())
		}
	case <-time.After(stopTimeout):
		t.Fatal("holder did not exit after its stdin closed")
	}
}

// clearScreen is what status --watch writes before each snapshot on a
// terminal: cursor home, clear the screen.
const clearScreen = "\x1b[H\x1b[2J"

func TestKeygen(t *testing.T) {
	a, b := dlockfs(t, "keygen"), dlockfs(t, "keygen")
	wantCode(t, a, cli.ExitOK, "keygen")
	k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(a.stdout))
	if err != nil || len(k) != 32 {
		t.Fatalf("keygen printed %q: %d bytes, %v; want a base64 32-byte key", a.stdout, len(k), err)
	}
	if a.stdout == b.stdout {
		t.Fatal("two keygen runs printed the same key")
	}
}

func TestHelpAndUsage(t *testing.T) {
	tests := []struct {
		args []string
		code int
		out  string // in stdout (code 0) or stderr
	}{
		{[]string{"help"}, cli.ExitOK, "Exit codes:"},
		{[]string{"--help"}, cli.ExitOK, "keygen"},
		{[]string{"-h"}, cli.ExitOK, "Commands:"},
		{[]string{"help", "mount"}, cli.ExitOK, "--gossip"},
		{[]string{"mount", "--help"}, cli.ExitOK, "fast  ~0.5 s"},
		{[]string{"mount", "/x", "-h"}, cli.ExitOK, "--key-file"},
		{[]string{"status", "--help"}, cli.ExitOK, "--json"},
		{[]string{"lock", "--help"}, cli.ExitOK, "DLOCKFS_TOKEN"},
		{[]string{"check", "--help"}, cli.ExitOK, "exec 9<"},
		{[]string{"keygen", "--help"}, cli.ExitOK, "umask 077"},
		{[]string{"keys", "--help"}, cli.ExitOK, "control socket"},
		{[]string{"keys", "install", "xyz"}, cli.ExitUsage, "KEY: the key is 2 bytes, want 16, 24 or 32"},
		{[]string{"help", "--help"}, cli.ExitOK, "Commands:"},
		{nil, cli.ExitUsage, "no command"},
		{[]string{"frob"}, cli.ExitUsage, `unknown command "frob"`},
		{[]string{"mount"}, cli.ExitUsage, "missing MOUNTPOINT"},
		{[]string{"mount", "--bogus", "/x"}, cli.ExitUsage, "flag provided but not defined"},
		{[]string{"mount", "--gossip", "slow", "/x"}, cli.ExitUsage, "lan, wan or fast"},
		{[]string{"mount", "--bind", "localhost:1", "/nonexistent-dlockfs"}, cli.ExitMountpoint, "does not exist"},
		{[]string{"status"}, cli.ExitUsage, "dlockfs status --help"},
		{[]string{"lock", "/x"}, cli.ExitUsage, "missing CMD"},
		{[]string{"keygen", "extra"}, cli.ExitUsage, "no arguments"},
		{[]string{"help", "frob"}, cli.ExitUsage, "Run 'dlockfs help' for usage"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, "_"), func(t *testing.T) {
			r := dlockfs(t, tt.args...)
			wantCode(t, r, tt.code, fmt.Sprint(tt.args))
			got := r.stderr
			if tt.code == cli.ExitOK {
				got = r.stdout
			}
			if !strings.Contains(got, tt.out) {
				t.Fatalf("%q: output lacks %q:\nstdout: %s\nstderr: %s", tt.args, tt.out, r.stdout, r.stderr)
			}
			if strings.Contains(r.stderr, "help --help") {
				t.Fatalf("%q: suggests a help for help: %s", tt.args, r.stderr)
			}
		})
	}
}

func TestMountRefusesMissingDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nope")
	r := dlockfs(t, "mount", "--state-dir", t.TempDir(), "--bind", testutil.FreeAddr(t), dir)
	wantCode(t, r, cli.ExitMountpoint, "mount on a missing dir")
	if !strings.Contains(r.stderr, "mkdir -p "+dir) {
		t.Fatalf("stderr lacks the fix: %s", r.stderr)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	wantCode(t, dlockfs(t, "mount", "--state-dir", t.TempDir(), "--bind", testutil.FreeAddr(t), file), cli.ExitMountpoint, "mount on a file")
}

func TestMountRefusesMountedDir(t *testing.T) {
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "tmpfs-test", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	r := dlockfs(t, "mount", "--state-dir", t.TempDir(), "--bind", testutil.FreeAddr(t), dir)
	wantCode(t, r, cli.ExitMountpoint, "mount on a tmpfs mount point")
	if !strings.Contains(r.stderr, "already a mount point (tmpfs") || !strings.Contains(r.stderr, "umount "+dir) {
		t.Fatalf("stderr: %s", r.stderr)
	}
}

func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	missing := filepath.Join(dir, "missing-mountpoint")
	tests := []struct {
		name, file string
		code       int
		stderr     string
	}{
		{"not base64", write("bad", "not base64!\n", 0o600), cli.ExitKey, "not base64"},
		{"wrong length", write("short", "AAAA\n", 0o600), cli.ExitKey, "is 3 bytes"},
		{"missing file", filepath.Join(dir, "none"), cli.ExitKey, "no such file"},
		{"empty", write("empty", "\n", 0o600), cli.ExitKey, "empty"},
		// A good key gets past the key check to the mountpoint check.
		{"good key", write("good", "AAAAAAAAAAAAAAAAAAAAAA==\n", 0o600), cli.ExitMountpoint, "does not exist"},
		{"readable by others: warning", write("open", "AAAAAAAAAAAAAAAAAAAAAA==\n", 0o644), cli.ExitMountpoint, "chmod 600"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := dlockfs(t, "mount", "--key-file", tt.file, missing)
			wantCode(t, r, tt.code, tt.name)
			if !strings.Contains(r.stderr, tt.stderr) {
				t.Fatalf("stderr lacks %q: %s", tt.stderr, r.stderr)
			}
		})
	}
}

func TestMountNonRootSaysWhatIsMissing(t *testing.T) {
	dir, bin := nobodyBinary(t)
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o777); err != nil {
		t.Fatal(err)
	}
	r := runAsNobody(t, bin, "mount", "--state-dir", filepath.Join(dir, "state"), "--bind", testutil.FreeAddr(t), mnt)
	wantCode(t, r, cli.ExitFUSE, "non-root mount without fusermount3")
	if !strings.Contains(r.stderr, "fusermount3 is not installed") {
		t.Fatalf("stderr does not say what is missing: %s", r.stderr)
	}
}

func TestStatusAndCheck(t *testing.T) {
	a := startNode(t, "solo")
	if !strings.Contains(a.line, "node solo mounted at "+a.dir) || !strings.Contains(a.line, "cluster of 1") ||
		!strings.Contains(a.line, "not encrypted") {
		t.Fatalf("mounted line: %q", a.line)
	}
	wantCode(t, dlockfs(t, "check", a.dir), cli.ExitOK, "check on a live mount")
	wantCode(t, dlockfs(t, "check", "-q", a.dir), cli.ExitOK, "check -q on a live mount")

	// Take the default lock once, so that status has a lock to show.
	r := runCmd(t, exec.Command(binary, "lock", a.dir, "--", "sh", "-c", `echo "token=$DLOCKFS_TOKEN"`))
	wantCode(t, r, cli.ExitOK, "lock")
	if !strings.HasPrefix(r.stdout, "token=") || strings.TrimSpace(r.stdout) == "token=" {
		t.Fatalf("lock's CMD saw no token: %q", r.stdout)
	}

	// A new name, made by the open; CMD reads the held descriptor.
	r = dlockfs(t, "lock", a.dir+"/jobs", "--", "sh", "-c", `cat <&"$DLOCKFS_FD"; echo "env $DLOCKFS_TOKEN $DLOCKFS_LOCK"`)
	wantCode(t, r, cli.ExitOK, "lock on a new name")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 4 || lines[1] != "holder solo" || lines[2] != "lock jobs" ||
		lines[3] != "env "+lines[0]+" "+a.dir+"/jobs" {
		t.Fatalf("lock file content and environment seen by CMD: %q", lines)
	}
	// CMD's status is lock's status.
	wantCode(t, dlockfs(t, "lock", a.dir, "sh", "-c", "exit 7"), 7, "lock passes CMD's status")

	// Idle locks are forgotten: status shows the ones in use, here jobs
	// while the lock CMD holds it.
	r = dlockfs(t, "status", a.dir)
	wantCode(t, r, cli.ExitOK, "status")
	for _, want := range []string{"node solo", "MEMBER", "solo (self)", peer.MemberAlive, "no locks in use", "counters:", "grants 3"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("status lacks %q:\n%s", want, r.stdout)
		}
	}
	r = dlockfs(t, "lock", a.dir+"/jobs", "--", binary, "status", a.dir)
	wantCode(t, r, cli.ExitOK, "status while jobs is held")
	if !regexp.MustCompile(`(?m)^LOCK\s+STATE\s+HOLDER.*\n^jobs\s+holding\s+solo\s`).MatchString(r.stdout) {
		t.Errorf("status while jobs is held lacks its row:\n%s", r.stdout)
	}
	r = dlockfs(t, "status", "--json", a.dir)
	wantCode(t, r, cli.ExitOK, "status --json")
	if !strings.Contains(r.stdout, `"node": "solo"`) && !strings.Contains(r.stdout, `"node":"solo"`) {
		t.Errorf("status --json: %s", r.stdout)
	}

	plain := t.TempDir()
	for _, args := range [][]string{{"status", plain}, {"check", plain}, {"lock", plain, "--", "true"}} {
		r := dlockfs(t, args...)
		wantCode(t, r, cli.ExitNotMounted, fmt.Sprint(args))
		if !strings.Contains(r.stderr, "not a dlockfs mount") {
			t.Errorf("%v: stderr: %s", args, r.stderr)
		}
	}
	wantCode(t, dlockfs(t, "lock", a.dir+"/.status", "true"), cli.ExitUsage, "lock on .status")
	wantCode(t, dlockfs(t, "lock", a.dir, "--", "no-such-command-dlockfs"), cli.ExitNotFound, "lock with a missing CMD")

	// The same directory again: refused, the first mount unharmed.
	r = dlockfs(t, "mount", "--state-dir", t.TempDir(), "--bind", testutil.FreeAddr(t), a.dir)
	wantCode(t, r, cli.ExitMountpoint, "second mount on a live mount")
	if !strings.Contains(r.stderr, "already a mount point (fuse.dlockfs") || !strings.Contains(r.stderr, "dlockfs status "+a.dir) {
		t.Fatalf("stderr: %s", r.stderr)
	}
	wantCode(t, dlockfs(t, "check", a.dir), cli.ExitOK, "check after the refused mount")
}

func TestDeadMountRefused(t *testing.T) {
	a := startNode(t, "dead")
	a.signal(t, syscall.SIGKILL)
	a.wait(t)
	t.Cleanup(func() { _ = syscall.Unmount(a.dir, syscall.MNT_DETACH) })
	if _, err := os.Stat(a.dir); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("stat of the killed mount: %v, want ENOTCONN", err)
	}

	r := dlockfs(t, "mount", "--state-dir", t.TempDir(), "--bind", testutil.FreeAddr(t), a.dir)
	wantCode(t, r, cli.ExitMountpoint, "mount on a dead mount")
	if !strings.Contains(r.stderr, "umount -l "+a.dir) {
		t.Fatalf("stderr lacks the fix: %s", r.stderr)
	}
	wantCode(t, dlockfs(t, "check", a.dir), cli.ExitNotMounted, "check on a dead mount")
	wantCode(t, dlockfs(t, "status", a.dir), cli.ExitNotMounted, "status on a dead mount")
	marker := filepath.Join(t.TempDir(), "ran")
	for _, path := range []string{a.dir, a.dir + "/lock", a.dir + "/other"} {
		r = dlockfs(t, "lock", path, "--", "touch", marker)
		wantCode(t, r, cli.ExitNotMounted, "lock on a dead mount")
		if !strings.Contains(r.stderr, "dead dlockfs mount") {
			t.Fatalf("lock %s: stderr: %s", path, r.stderr)
		}
		if _, err := os.Stat(marker); err == nil {
			t.Fatalf("lock %s ran CMD on a dead mount", path)
		}
	}
}

func TestClusterContention(t *testing.T) {
	a := startNode(t, "a")
	b := startNode(t, "b", "--join", a.bind)
	c := startNode(t, "c", "--join", a.bind+","+b.bind)
	if !strings.Contains(c.line, "cluster of 3") {
		t.Fatalf("c's mounted line: %q", c.line)
	}
	// b may have printed before c joined; wait until everyone sees 3.
	for _, n := range []*mountNode{a, b, c} {
		testutil.WaitFor(t, startTimeout, n.name+" sees 3 alive members", func() bool {
			return aliveMembers(t, n.dir) == 3
		})
	}

	// Busy and timeout while a holds the lock.
	h := holdLock(t, a.dir)
	r := dlockfs(t, "lock", "--try", b.dir, "--", "true")
	wantCode(t, r, cli.ExitBusy, "lock --try while a holds")
	// --timeout 0 does not wait (flock -w 0): it is --try.
	r = dlockfs(t, "lock", "--timeout", "0", b.dir, "--", "true")
	wantCode(t, r, cli.ExitBusy, "lock --timeout 0 while a holds")
	r = dlockfs(t, "lock", "--timeout", "200ms", c.dir+"/lock", "--", "true")
	wantCode(t, r, cli.ExitTimeout, "lock --timeout while a holds")
	// The abandoned open was withdrawn: c waits for nothing.
	testutil.WaitFor(t, stopTimeout, "c to withdraw the timed-out request", func() bool {
		d := status(t, c.dir)
		for _, l := range d.Locks {
			if l.Name == "lock" {
				return l.Waiting == 0 && l.State == peer.LockIdle
			}
		}
		return true
	})
	h.release(t)
	wantCode(t, dlockfs(t, "lock", "--try", b.dir, "--", "true"), cli.ExitOK, "lock --try after a released")
	wantCode(t, dlockfs(t, "lock", "-w", "0", c.dir, "--", "true"), cli.ExitOK, "lock -w 0 after a released")

	// Contention: every node enters the critical section several times,
	// through dlockfs lock (a, b) and util-linux flock (c). An overlap or
	// a token that does not rise is a failure.
	work := t.TempDir()
	cs := fmt.Sprintf(`set -e; cd %s
if ! mkdir inside 2>/dev/null; then echo overlap >> errors; fi
echo "${DLOCKFS_TOKEN:-flock}" >> tokens
i=0; while [ $i -lt 200 ]; do i=$((i+1)); done
rmdir inside`, work)
	const rounds = 5
	var wg sync.WaitGroup
	errs := make(chan string, 3*rounds)
	for _, n := range []*mountNode{a, b, c} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				var cmd *exec.Cmd
				if n.name == "c" {
					cmd = exec.Command("flock", n.dir+"/lock", "sh", "-c", cs)
				} else {
					cmd = exec.Command(binary, "lock", n.dir, "--", "sh", "-c", cs)
				}
				out, err := cmd.CombinedOutput()
				if err != nil {
					errs <- fmt.Sprintf("%s: %v: %s", n.name, err, out)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if data, err := os.ReadFile(filepath.Join(work, "errors")); err == nil {
		t.Fatalf("critical sections overlapped: %s", data)
	}
	data, err := os.ReadFile(filepath.Join(work, "tokens"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Fields(string(data))
	if len(lines) != 3*rounds {
		t.Fatalf("%d critical sections, want %d", len(lines), 3*rounds)
	}
	last := uint64(0)
	for _, l := range lines {
		if l == "flock" {
			continue
		}
		tok, err := strconv.ParseUint(l, 10, 64)
		if err != nil || tok <= last {
			t.Fatalf("tokens do not rise: %q", lines)
		}
		last = tok
	}
}

// TestSIGTERMLeavesAndUnmounts is about plain mode (--quorum none): a
// 2-peer cluster goes on after one leaves. TestSIGTERMLeavesMajority is
// the majority-mode counterpart, with 3 peers.
func TestSIGTERMLeavesAndUnmounts(t *testing.T) {
	a := startNode(t, "a", "--quorum", "none")
	b := startNode(t, "b", "--join", a.bind, "--quorum", "none")
	testutil.WaitFor(t, startTimeout, "a sees b", func() bool {
		return aliveMembers(t, a.dir) == 2
	})
	// Twice at once, as timeout(1) and process-group kills deliver it:
	// still one graceful shutdown.
	b.signal(t, syscall.SIGTERM)
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	b.wait(t)
	if code := b.exitCode(); code != cli.ExitOK {
		t.Fatalf("b exited %d after SIGTERM, want 0\nstderr: %s", code, b.out.String())
	}
	if isMountpoint(t, b.dir) {
		t.Fatal("b's directory is still a mount point after SIGTERM")
	}
	testutil.WaitFor(t, startTimeout, "a sees b leave", func() bool {
		r := dlockfs(t, "status", "--json", a.dir)
		return r.code == 0 && strings.Contains(r.stdout, strconv.Quote(peer.MemberLeft))
	})
	// The cluster goes on without b: a takes the lock alone.
	wantCode(t, dlockfs(t, "lock", "--timeout", "20s", a.dir, "--", "true"), cli.ExitOK, "lock after b left")

	// SIGINT while a process holds a lock: still a clean exit, and the
	// mount is detached.
	holdLock(t, a.dir)
	a.signal(t, syscall.SIGINT)
	a.wait(t)
	if code := a.exitCode(); code != cli.ExitOK {
		t.Fatalf("a exited %d after SIGINT, want 0\nstderr: %s", code, a.out.String())
	}
	if isMountpoint(t, a.dir) {
		t.Fatal("a's directory is still a mount point after SIGINT")
	}
}

// TestSIGTERMLeavesMajority: in majority mode, of 3 peers one leaves at
// SIGTERM (exit 0, unmounted) and the other two go on granting.
func TestSIGTERMLeavesMajority(t *testing.T) {
	a := startNode(t, "a")
	b := startNode(t, "b", "--join", a.bind)
	c := startNode(t, "c", "--join", a.bind)
	testutil.WaitFor(t, startTimeout, "a sees b and c", func() bool {
		return aliveMembers(t, a.dir) == 3
	})
	c.signal(t, syscall.SIGTERM)
	c.wait(t)
	if code := c.exitCode(); code != cli.ExitOK {
		t.Fatalf("c exited %d after SIGTERM, want 0\nstderr: %s", code, c.out.String())
	}
	if isMountpoint(t, c.dir) {
		t.Fatal("c's directory is still a mount point after SIGTERM")
	}
	wantCode(t, dlockfs(t, "lock", "--timeout", "20s", a.dir, "--", "true"), cli.ExitOK, "lock on a after c left")
	wantCode(t, dlockfs(t, "lock", "--timeout", "20s", b.dir, "--", "true"), cli.ExitOK, "lock on b after c left")
}

func TestJoinTimeout(t *testing.T) {
	dir := t.TempDir()
	addrs := testutil.FreeAddrs(t, 2)
	nobody := addrs[0] // nothing listens there
	r := dlockfs(t, "mount", "--state-dir", t.TempDir(), "--bind", addrs[1], "--gossip", "fast", "--join", nobody, "--join-timeout", "500ms", dir)
	wantCode(t, r, cli.ExitJoin, "join to nobody")
	if !strings.Contains(r.stderr, "--join-timeout") {
		t.Fatalf("stderr: %s", r.stderr)
	}
	if isMountpoint(t, dir) {
		t.Fatal("mounted although the join failed")
	}
}

func TestEncryptedCluster(t *testing.T) {
	dir := t.TempDir()
	keyFile := func(name string) string {
		r := dlockfs(t, "keygen")
		wantCode(t, r, cli.ExitOK, "keygen")
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(r.stdout), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	k1, k2 := keyFile("k1"), keyFile("k2")
	a := startNode(t, "a", "--key-file", k1)
	b := startNode(t, "b", "--key-file", k1, "--join", a.bind)
	for _, n := range []*mountNode{a, b} {
		if !strings.Contains(n.line, ", encrypted") {
			t.Fatalf("%s: mounted line %q does not say encrypted", n.name, n.line)
		}
	}
	if !strings.Contains(b.line, "cluster of 2") {
		t.Fatalf("b: mounted line %q", b.line)
	}
	wantCode(t, dlockfs(t, "lock", "--timeout", "20s", b.dir, "--", "true"), cli.ExitOK, "lock on an encrypted cluster")

	for _, tt := range []struct {
		name string
		args []string
	}{
		{"other key", []string{"--key-file", k2}},
		{"no key", nil},
	} {
		mnt := t.TempDir()
		addrs := testutil.FreeAddrs(t, 2)
		args := append([]string{"mount", "--name", "c", "--bind", addrs[0], "--lock-bind", addrs[1],
			"--gossip", "fast", "--join", a.bind, "--join-timeout", "20s", "--state-dir", t.TempDir(), mnt}, tt.args...)
		r := dlockfs(t, args...)
		wantCode(t, r, cli.ExitJoin, tt.name)
		if !strings.Contains(r.stderr, "same --key-file") || strings.Count(r.stderr, "dlockfs mount:") != 1 {
			t.Fatalf("%s: stderr: %s", tt.name, r.stderr)
		}
		if isMountpoint(t, mnt) {
			t.Fatalf("%s: mounted although the join failed", tt.name)
		}
	}
}

func TestStatusWatch(t *testing.T) {
	a := startNode(t, "watcher")

	// Not a terminal (a pipe): N plain snapshots, each under "--- TIME".
	r := dlockfs(t, "status", "--watch", "--interval", "10ms", "--count", "3", a.dir)
	wantCode(t, r, cli.ExitOK, "status --watch to a pipe")
	if strings.Contains(r.stdout, "\x1b") {
		t.Errorf("escape codes in the plain output:\n%q", r.stdout)
	}
	snaps := regexp.MustCompile(`(?m)^--- \d{4}-\d\d-\d\d \d\d:\d\d:\d\d$`).FindAllStringIndex(r.stdout, -1)
	if len(snaps) != 3 || strings.Count(r.stdout, "node watcher at ") != 3 || strings.Count(r.stdout, "MEMBER") != 3 {
		t.Errorf("want 3 snapshots, got %d headers:\n%s", len(snaps), r.stdout)
	}

	// A terminal: each snapshot clears the screen first; until SIGINT,
	// which ends the watch with exit 0.
	ptm, pts := openPTY(t)
	cmd := exec.Command(binary, "status", "--watch", "--interval", "10ms", a.dir)
	cmd.Stdout, cmd.Stderr = pts, pts
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pts.Close()
	var seen bytes.Buffer
	buf := make([]byte, 4096)
	for strings.Count(seen.String(), clearScreen) < 2 {
		n, err := ptm.Read(buf)
		if err != nil {
			t.Fatalf("reading the terminal: %v; so far:\n%q", err, seen.String())
		}
		seen.Write(buf[:n])
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("status --watch after SIGINT: %v, want exit 0", err)
	}
	first := strings.Split(seen.String(), clearScreen)[1]
	for _, want := range []string{"(Ctrl-C to stop)", "node watcher at ", "watcher (self)"} {
		if !strings.Contains(first, want) {
			t.Errorf("terminal snapshot lacks %q:\n%q", want, first)
		}
	}
}

// openPTY opens a pseudo-terminal pair (/dev/ptmx, unlocked; its pts).
func openPTY(t *testing.T) (ptm, pts *os.File) {
	t.Helper()
	ptm, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	t.Cleanup(func() { ptm.Close() })
	if err := unix.IoctlSetPointerInt(int(ptm.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(ptm.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	pts, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pts.Close() })
	return ptm, pts
}

func TestMetrics(t *testing.T) {
	addr := testutil.FreeAddr(t)
	a := startNode(t, "metered", "--metrics", addr)
	// A second member, so that lock messages cross the lock channel.
	startNode(t, "other", "--join", a.bind)
	testutil.WaitFor(t, startTimeout, "a sees b", func() bool { return aliveMembers(t, a.dir) == 2 })
	for range 2 {
		wantCode(t, dlockfs(t, "lock", a.dir+"/jobs", "--", "true"), cli.ExitOK, "lock jobs")
	}
	holdLock(t, a.dir+"/busy")
	wantCode(t, dlockfs(t, "lock", "--try", a.dir+"/busy", "--", "true"), cli.ExitBusy, "lock --try on a held lock")
	wantCode(t, dlockfs(t, "lock", "--timeout", "100ms", a.dir+"/busy", "--", "true"), cli.ExitTimeout, "lock --timeout on a held lock")

	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing the scrape: %v", err)
	}
	value := func(name string, labels ...string) float64 {
		t.Helper()
		mf, ok := mfs[name]
		if !ok {
			t.Fatalf("no metric %s in the scrape", name)
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
		t.Fatalf("no %s%v in the scrape", name, labels)
		return 0
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"dlockfs_acquisitions_total", []string{"lock", "jobs"}, 2},
		{"dlockfs_acquisitions_total", []string{"lock", "busy"}, 1},
		{"dlockfs_trylock_refusals_total", []string{"lock", "busy"}, 1},
		{"dlockfs_interrupts_total", []string{"lock", "busy"}, 1},
		{"dlockfs_acquire_wait_seconds", nil, 3},
		{"dlockfs_holders", nil, 1},
		{"dlockfs_waiters", nil, 0},
		{"dlockfs_draining", nil, 0},
		{"dlockfs_members", []string{"state", peer.MemberAlive}, 2},
		{"dlockfs_members", []string{"state", peer.MemberFailed}, 0},
		{"dlockfs_lock_peers", []string{"state", "disconnected"}, 0},
		{"dlockfs_grants_total", nil, 3},
		// Majority mode (the default): no lease lapsed, nothing revoked.
		{"dlockfs_revocations_total", nil, 0},
		{"dlockfs_lease_lapses_total", nil, 0},
		{"dlockfs_evictions_total", nil, 0},
		{"dlockfs_lease_valid", nil, 1},
	} {
		if got := value(c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	// Each of the 3 grants needed a request to b and b's reply (the
	// try-lock and the timed-out open were refused here, behind the local
	// holder).
	if got := value("dlockfs_lock_channel_messages_total", "direction", "sent", "type", "request"); got < 3 {
		t.Errorf("requests sent = %v, want at least 3", got)
	}
	if got := value("dlockfs_lock_channel_messages_total", "direction", "received", "type", "reply"); got < 3 {
		t.Errorf("replies received = %v, want at least 3", got)
	}
	for _, name := range []string{"dlockfs_messages_sent_total", "dlockfs_messages_received_total",
		"dlockfs_lock_connections", "go_goroutines", "process_cpu_seconds_total"} {
		value(name)
	}

	// The README's metrics paragraph names every dlockfs_ family served.
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, para, _ := strings.Cut(string(readme), "**Metrics.**")
	para, _, _ = strings.Cut(para, "```")
	for name := range mfs {
		if strings.HasPrefix(name, "dlockfs_") && !strings.Contains(para, "`"+name+"`") && !strings.Contains(para, "`"+name+"{") {
			t.Errorf("README's Metrics paragraph does not name %s", name)
		}
	}

	// A taken port fails the start.
	r := dlockfs(t, "mount", "--state-dir", t.TempDir(), "--bind", testutil.FreeAddr(t), "--metrics", addr, t.TempDir())
	if r.code == cli.ExitOK || !strings.Contains(r.stderr, "--metrics "+addr) {
		t.Errorf("mount on a taken --metrics port: exit %d, stderr %s", r.code, r.stderr)
	}
}

// TestBindErrorNamesPort: a taken gossip port is reported as the gossip
// port, a taken lock port as the lock port (the lock channel binds first).
func TestBindErrorNamesPort(t *testing.T) {
	gossip := testutil.FreeAddr(t)
	l, err := net.Listen("tcp", gossip)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r := dlockfs(t, "mount", "--bind", gossip, t.TempDir())
	wantCode(t, r, cli.ExitJoin, "mount on a taken gossip port")
	if !strings.Contains(r.stderr, "gossip port (Serf, TCP) "+gossip) || strings.Contains(r.stderr, "lock channel") {
		t.Fatalf("a taken gossip port %s is not named as such:\n%s", gossip, r.stderr)
	}

	addrs := testutil.FreeAddrs(t, 2)
	lockAddr := addrs[0]
	ll, err := net.Listen("tcp", lockAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer ll.Close()
	r = dlockfs(t, "mount", "--bind", addrs[1], "--lock-bind", lockAddr, t.TempDir())
	wantCode(t, r, cli.ExitJoin, "mount on a taken lock port")
	if !strings.Contains(r.stderr, "lock channel port (TCP) "+lockAddr) {
		t.Fatalf("a taken lock port %s is not named:\n%s", lockAddr, r.stderr)
	}
}

// TestJoinLockPortSaysSo: --join to a peer's lock port (Serf port + 1)
// says it is not a gossip port, plaintext and encrypted, at once (no wait
// for --join-timeout), and a failed mount has no Serf shutdown noise.
func TestJoinLockPortSaysSo(t *testing.T) {
	key := filepath.Join(t.TempDir(), "key")
	r := dlockfs(t, "keygen")
	wantCode(t, r, cli.ExitOK, "keygen")
	if err := os.WriteFile(key, []byte(r.stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		extra []string
	}{{"plaintext", nil}, {"encrypted", []string{"--key-file", key}}} {
		t.Run(tc.name, func(t *testing.T) {
			a := startNode(t, "a", tc.extra...)
			lockPort := a.lock
			args := append([]string{"mount", "--name", "b", "--bind", testutil.FreeAddr(t), "--join", lockPort, "--join-timeout", "0"}, tc.extra...)
			r := dlockfs(t, append(args, t.TempDir())...)
			wantCode(t, r, cli.ExitJoin, "join to the lock port")
			if !strings.Contains(r.stderr, lockPort+": not a Serf gossip port") {
				t.Fatalf("join to lock port %s does not say it is not a gossip port:\n%s", lockPort, r.stderr)
			}
			if strings.Contains(r.stderr, "key mismatch") || strings.Contains(r.stderr, "Shutdown without a Leave") {
				t.Fatalf("misleading or noisy stderr:\n%s", r.stderr)
			}
		})
	}
}

// TestJoinProgress: a join that keeps failing says so (at the first
// failure, then every few seconds) with what to check, and a mount that
// gives up has no Serf shutdown noise.
func TestJoinProgress(t *testing.T) {
	addrs := testutil.FreeAddrs(t, 2)
	nobody := addrs[0]
	r := dlockfs(t, "mount", "--name", "b", "--bind", addrs[1], "--join", nobody, "--join-timeout", "1s", t.TempDir())
	wantCode(t, r, cli.ExitJoin, "join to nobody")
	for _, want := range []string{"still trying", "gossip port", "within --join-timeout 1s"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q", want)
		}
	}
	if strings.Contains(r.stderr, "Shutdown without a Leave") {
		t.Error("Serf's shutdown noise on a failed mount")
	}
	if t.Failed() {
		t.Logf("stderr:\n%s", r.stderr)
	}
}

// TestOutsiderKeyIsAWarning: a node with another key tries to join; the
// healthy peer logs a WARN naming the address, never an ERROR.
func TestOutsiderKeyIsAWarning(t *testing.T) {
	keys := make([]string, 2)
	for i := range keys {
		keys[i] = filepath.Join(t.TempDir(), "key")
		r := dlockfs(t, "keygen")
		wantCode(t, r, cli.ExitOK, "keygen")
		if err := os.WriteFile(keys[i], []byte(r.stdout), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	a := startNode(t, "a", "--key-file", keys[0])
	r := dlockfs(t, "mount", "--name", "b", "--bind", testutil.FreeAddr(t), "--key-file", keys[1], "--join", a.bind, t.TempDir())
	wantCode(t, r, cli.ExitJoin, "join with another key")
	testutil.WaitFor(t, startTimeout, "a to warn about the outsider", func() bool {
		return strings.Contains(a.out.String(), "cluster keys cannot read")
	})
	out := a.out.String()
	if strings.Contains(out, "level=ERROR") || !strings.Contains(out, "level=WARN") || !strings.Contains(out, "from=127.0.0.1:") {
		t.Fatalf("a's log about the outsider:\n%s", out)
	}
}
