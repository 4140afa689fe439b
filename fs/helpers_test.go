package fs

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dlockfs/dlockfs/mutex/testutil"
)

// The test binary doubles as a helper program for child processes (see
// helperMain): FS access must come from other processes.
const helperEnv = "DLOCKFS_FS_TEST_HELPER"

// deadline bounds every wait in these tests.
const deadline = 20 * time.Second

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helperMain(mode, os.Args[len(os.Args)-2:]))
	}
	os.Exit(m.Run())
}

// helperMain runs one helper mode with args [path, n] and returns the exit
// code:
//
//	openloop PATH N   open(O_RDONLY)+close N times; print p50 p99 mean ns
//	statloop PATH N   stat N times; print p50 p99 mean ns
//	readdirloop DIR N open+getdents+close N times; print p50 p99 mean ns
//	waiters  PATH N   N concurrent blocking opens, each closed at once
//	mount    DIR  -   mount DIR over a fake locker, print "mounted", wait
//	reread   PATH -   read PATH whole, print it; after a line on stdin,
//	                  lseek to 0 on the same descriptor, read and print again
func helperMain(mode string, args []string) int {
	path := args[0]
	n, _ := strconv.Atoi(args[1])
	switch mode {
	case "openloop", "statloop", "readdirloop":
		op := loopOp(mode)
		d := make([]time.Duration, 0, n)
		for range n {
			t0 := time.Now()
			if err := op(path); err != nil {
				fmt.Fprintln(os.Stderr, mode+":", err)
				return 1
			}
			d = append(d, time.Since(t0))
		}
		slices.Sort(d)
		var sum time.Duration
		for _, x := range d {
			sum += x
		}
		fmt.Println(d[len(d)/2].Nanoseconds(), d[len(d)*99/100].Nanoseconds(), (sum / time.Duration(len(d))).Nanoseconds())
		return 0
	case "waiters":
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for range n {
			wg.Go(func() {
				fd, err := openRetry(path)
				if err != nil {
					errs <- err
					return
				}
				syscall.Close(fd)
			})
		}
		wg.Wait()
		close(errs)
		bad := 0
		for err := range errs {
			fmt.Fprintln(os.Stderr, "open:", err)
			bad++
		}
		fmt.Println("opened", n-bad)
		if bad > 0 {
			return 1
		}
		return 0
	case "reread":
		f, err := os.Open(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer f.Close()
		in := bufio.NewReader(os.Stdin)
		for i := range 2 {
			if i > 0 {
				if _, err := in.ReadString('\n'); err != nil {
					return 1
				}
				if _, err := f.Seek(0, io.SeekStart); err != nil {
					fmt.Fprintln(os.Stderr, "seek:", err)
					return 1
				}
			}
			b, err := io.ReadAll(f)
			if err != nil {
				fmt.Fprintln(os.Stderr, "read:", err)
				return 1
			}
			os.Stdout.Write(b)
		}
		return 0
	case "mount":
		if _, err := Mount(path, Options{Locker: newFake()}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println("mounted")
		select {}
	}
	fmt.Fprintln(os.Stderr, "unknown helper mode", mode)
	return 2
}

// loopOp returns the operation a *loop helper mode times.
func loopOp(mode string) func(path string) error {
	switch mode {
	case "openloop":
		return func(path string) error {
			fd, err := openRetry(path)
			if err == nil {
				syscall.Close(fd)
			}
			return err
		}
	case "statloop":
		return func(path string) error {
			var st syscall.Stat_t
			return syscall.Stat(path, &st)
		}
	default: // readdirloop
		return func(path string) error {
			fd, err := openRetry(path)
			if err != nil {
				return err
			}
			defer syscall.Close(fd)
			buf := make([]byte, 8192)
			for {
				n, err := syscall.Getdents(fd, buf)
				if err != nil || n == 0 {
					return err
				}
			}
		}
	}
}

// openRetry opens path read-only, retrying on EINTR as os.Open does (the
// Go runtime's own signals interrupt a blocked open).
func openRetry(path string) (int, error) {
	for {
		fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != syscall.EINTR {
			return fd, err
		}
	}
}

// testLogger logs to the test at debug level.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// testMount mounts a fresh directory over fk. At cleanup (after the
// children started later have been reaped) it checks that the mount holds
// no grant and no waiter, then unmounts.
func testMount(t testing.TB, fk *fakeLocker) (string, *rootNode) {
	t.Helper()
	dir := t.TempDir()
	srv, root, err := mount(dir, Options{Locker: fk, Logger: quietLogger(t)})
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() {
		testutil.WaitFor(t, deadline, "mount idle (no grant, no waiter)", func() bool {
			root.fs.mu.Lock()
			defer root.fs.mu.Unlock()
			return len(root.fs.open) == 0 && root.fs.names.idle()
		})
		if _, _, bad, _ := fk.counts(); bad != 0 {
			t.Errorf("%d unlocks of grants not held", bad)
		}
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount %s: %v; detaching lazily", dir, err)
			if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
				t.Errorf("lazy unmount %s: %v", dir, err)
			}
		}
	})
	return dir, root
}

// quietLogger logs warnings only (debug logs of 1,000 waiters are noise).
func quietLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// proc is a child bash running a script, with $M set to the mount.
type proc struct {
	t      testing.TB
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr *testutil.SyncBuffer
	done   chan struct{}
	err    error
}

// start runs script in bash with M=mnt. At cleanup its stdin is closed
// (scripts exit on EOF) and, if still running, it is killed.
func start(t testing.TB, mnt, script string) *proc {
	t.Helper()
	return startCmd(t, mnt, exec.Command("bash", "-c", script))
}

// startHelper runs this test binary in a helper mode.
func startHelper(t testing.TB, mode string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"-test.run=^$"}, args...)...)
	cmd.Env = append(os.Environ(), helperEnv+"="+mode)
	return startCmd(t, "", cmd)
}

func startCmd(t testing.TB, mnt string, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{t: t, cmd: cmd, lines: make(chan string, 100), stderr: &testutil.SyncBuffer{}, done: make(chan struct{})}
	cmd.Env = append(cmd.Environ(), "M="+mnt, "LC_ALL=C")
	cmd.Stderr = p.stderr
	var err error
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", cmd.Args, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stdin.Close()
		select {
		case <-p.done:
			return
		case <-time.After(2 * time.Second):
		}
		t.Errorf("child %d (%q) still running at cleanup; killing it", cmd.Process.Pid, cmd.Args)
		cmd.Process.Kill()
		<-p.done
	})
	return p
}

// expect waits for the next line of output and checks it.
func (p *proc) expect(want string) {
	p.t.Helper()
	select {
	case got, ok := <-p.lines:
		if !ok {
			<-p.done
			p.t.Fatalf("child %q ended (%v) before printing %q; stderr: %s", p.cmd.Args, p.err, want, p.stderr)
		}
		if got != want {
			p.t.Fatalf("child printed %q, want %q; stderr: %s", got, want, p.stderr)
		}
	case <-time.After(deadline):
		p.t.Fatalf("child %q did not print %q within %v; stderr: %s", p.cmd.Args, want, deadline, p.stderr)
	}
}

// next returns the next line of output.
func (p *proc) next() string {
	p.t.Helper()
	select {
	case l, ok := <-p.lines:
		if !ok {
			<-p.done
			p.t.Fatalf("child %q ended (%v); stderr: %s", p.cmd.Args, p.err, p.stderr)
		}
		return l
	case <-time.After(deadline):
		p.t.Fatalf("child %q printed nothing within %v; stderr: %s", p.cmd.Args, deadline, p.stderr)
	}
	return ""
}

// send writes a line to the child's stdin.
func (p *proc) send(line string) {
	p.t.Helper()
	if _, err := io.WriteString(p.stdin, line+"\n"); err != nil {
		p.t.Fatalf("write to child: %v", err)
	}
}

// wait waits for the child to end and returns its remaining output.
func (p *proc) wait() (string, error) {
	p.t.Helper()
	var out []string
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				<-p.done
				return strings.Join(out, "\n"), p.err
			}
			out = append(out, l)
		case <-time.After(deadline):
			p.t.Fatalf("child %q still running after %v; stderr: %s", p.cmd.Args, deadline, p.stderr)
		}
	}
}

// signal sends sig to the child.
func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
}

// run runs script to completion and returns stdout, stderr and exit code.
func run(t testing.TB, mnt, script string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	cmd.Env = append(os.Environ(), "M="+mnt, "LC_ALL=C")
	// A grandchild stuck in the file system keeps the pipes open after
	// bash is killed: stop waiting for them.
	cmd.WaitDelay = time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run %q: %v", script, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("run %q: did not finish within %v; stderr: %s", script, deadline, stderr.String())
	}
	return stdout.String(), stderr.String(), code
}

// mustRun runs script and fails the test unless it exits 0 with no stderr.
func mustRun(t testing.TB, mnt, script string) string {
	t.Helper()
	out, errOut, code := run(t, mnt, script)
	if code != 0 || errOut != "" {
		t.Fatalf("%q: exit %d, stderr %q, stdout %q", script, code, errOut, out)
	}
	return out
}

// holder starts a child that holds lock name of mount mnt until it reads a
// line (or its stdin closes), and waits until it holds it.
func holder(t testing.TB, mnt, name string) *proc {
	t.Helper()
	p := start(t, mnt, `exec 9<"$M/`+name+`" || exit 9; echo held; read -r _; exec 9<&-; echo released`)
	p.expect("held")
	return p
}

// free reports whether lock name is idle in the fake.
func free(fk *fakeLocker, name string) func() bool {
	return func() bool {
		held, _, waiting := fk.state(name)
		return !held && waiting == 0
	}
}

// waiting reports whether n openers wait for lock name.
func waiting(fk *fakeLocker, name string, n int) func() bool {
	return func() bool {
		_, _, w := fk.state(name)
		return w == n
	}
}

// slogTo logs to w at debug level.
func slogTo(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
