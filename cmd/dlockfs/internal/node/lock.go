package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dlockfs/dlockfs/cmd/dlockfs/internal/cli"
	"github.com/dlockfs/dlockfs/fs"
)

// runCheck exits 0 iff the path is the root of a live dlockfs mount.
func runCheck(ctx context.Context, e *cli.Env, cfg config) error {
	live, err := checkLive(ctx, cfg.check.mountpoint)
	if err != nil {
		if cfg.check.quiet {
			return cli.WithCode(cli.ExitNotMounted, cli.ErrSilent)
		}
		return err
	}
	if !cfg.check.quiet {
		var st struct {
			Node string `json:"node"`
		}
		_ = json.Unmarshal(live.status, &st) // checkLive parsed it already
		fmt.Fprintf(e.Stdout, "%s is a live dlockfs mount (node %s)\n", live.root, st.Node)
	}
	return nil
}

// lockTarget resolves MOUNTPOINT[/NAME] to the mount and the lock file,
// checking the mount is live before anything is opened.
func lockTarget(ctx context.Context, path string) (live liveMount, file string, err error) {
	root, name := path, defaultLockName
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, syscall.ENOTCONN), errors.Is(err, syscall.ECONNABORTED):
		// path is the dead mount's root, or inside it: checkLive says so.
		if _, err := checkLive(ctx, path); err != nil {
			return liveMount{}, "", err
		}
	case err == nil && fi.IsDir():
	default:
		root, name = filepath.Dir(path), filepath.Base(path)
	}
	live, err = checkLive(ctx, root)
	if err != nil {
		if _, serr := os.Stat(path); errors.Is(serr, os.ErrNotExist) {
			return liveMount{}, "", cli.Codef(cli.ExitNotMounted,
				"%s does not exist, and %s is not a live dlockfs mount to take lock %q in: %w", path, root, name, err)
		}
		return liveMount{}, "", err
	}
	if err := fs.ValidName(name); err != nil {
		return liveMount{}, "", cli.Usagef("%s: %w", path, err)
	}
	return live, filepath.Join(live.root, name), nil
}

// Revocation watch of "dlockfs lock".
const (
	// revokePoll is how often lock reads the held file to notice a
	// revocation (EIO).
	revokePoll = 100 * time.Millisecond
	// defaultRevokeGrace is --revoke-grace: SIGTERM to SIGKILL.
	defaultRevokeGrace = 5 * time.Second
)

// runLock takes the lock and runs CMD as a child that inherits the
// descriptor holding it. It reads the descriptor every revokePoll: once a
// read fails with EIO the peer revoked the hold (it lost its lease), and
// CMD is sent SIGTERM, then SIGKILL after --revoke-grace; lock then exits
// cli.ExitRevoked. SIGINT, SIGTERM and SIGHUP are forwarded to CMD. Otherwise
// lock exits with CMD's status (128+N if signal N killed it).
func runLock(ctx context.Context, e *cli.Env, cfg config) error {
	l := cfg.lock
	// Find CMD first: a typo must not take (and drop) the lock.
	bin, err := exec.LookPath(l.argv[0])
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return cli.Codef(cli.ExitCannotExec, "%s: %w", l.argv[0], err)
		}
		return cli.Codef(cli.ExitNotFound, "%s: command not found", l.argv[0])
	}
	_, file, err := lockTarget(ctx, l.path)
	if err != nil {
		return err
	}
	// Signals from now on are CMD's (once it runs): a signal before that
	// ends lock as usual, withdrawing its request.
	sigs := make(chan os.Signal, 4)
	open := openLock
	if l.shared {
		file = filepath.Join(filepath.Dir(file), flockDir, filepath.Base(file))
		open = openShared
	}
	f, err := open(ctx, file, l.try, l.timeout)
	if err != nil {
		return err
	}
	defer f.Close()
	// The mount may have gone between the check and the open: then the
	// open made a plain file in the bare directory. Never run CMD on it.
	var sfs syscall.Statfs_t
	if err := syscall.Fstatfs(int(f.Fd()), &sfs); err != nil || sfs.Type != fuseSuperMagic {
		return cli.Codef(cli.ExitNotMounted, "%s is no longer on a dlockfs mount (unmounted meanwhile?): CMD not run", file)
	}
	token, err := readToken(f)
	if err != nil {
		if errors.Is(err, syscall.EIO) {
			return cli.Codef(cli.ExitRevoked, "%s: the hold was revoked before CMD ran (this node lost its lease): CMD not run", file)
		}
		return cli.Codef(cli.ExitError, "%s is not a dlockfs lock file (%w): CMD not run", file, err)
	}
	if err := syscall.SetNonblock(int(f.Fd()), false); err != nil {
		return fmt.Errorf("%s: clearing O_NONBLOCK: %w", file, err)
	}
	// The child gets the descriptor as fd 3 (ExtraFiles[0]).
	const childFD = 3
	env := append(withoutDlockfsEnv(os.Environ()),
		"DLOCKFS_TOKEN="+strconv.FormatUint(token, 10),
		"DLOCKFS_FD="+strconv.Itoa(childFD),
		"DLOCKFS_LOCK="+file,
	)
	cmd := &exec.Cmd{Path: bin, Args: l.argv, Env: env, Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr,
		ExtraFiles: []*os.File{f}}
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		if errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.ENOEXEC) || errors.Is(err, syscall.EISDIR) {
			return cli.Codef(cli.ExitCannotExec, "%s: %w", l.argv[0], err)
		}
		return cli.Codef(cli.ExitNotFound, "%s: %w", l.argv[0], err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopWatch := make(chan struct{})
	defer close(stopWatch)
	lost := watchRevoked(f, stopWatch)

	var revokedErr error
	var kill <-chan time.Time
	for {
		select {
		case s := <-sigs:
			_ = cmd.Process.Signal(s)
		case err := <-lost:
			lost = nil
			revokedErr = err
			fmt.Fprintf(e.Stderr, "dlockfs lock: %s: %v: sending SIGTERM to CMD (PID %d), SIGKILL after --revoke-grace %v\n",
				file, err, cmd.Process.Pid, l.revokeGrace)
			_ = cmd.Process.Signal(syscall.SIGTERM)
			t := time.NewTimer(l.revokeGrace)
			defer t.Stop()
			kill = t.C
		case <-kill:
			kill = nil
			fmt.Fprintf(e.Stderr, "dlockfs lock: CMD (PID %d) still runs %v after SIGTERM: SIGKILL\n", cmd.Process.Pid, l.revokeGrace)
			_ = cmd.Process.Kill()
		case err := <-exited:
			if revokedErr != nil {
				return cli.Codef(cli.ExitRevoked, "%s: %w: CMD ended", file, revokedErr)
			}
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
					return cli.WithCode(128+int(ws.Signal()), cli.ErrSilent)
				}
				return cli.WithCode(ee.ExitCode(), cli.ErrSilent)
			}
			if err != nil {
				return err
			}
			return nil
		}
	}
}

// errLockLost tells why a held lock was lost under CMD.
var errLockLost = errors.New("lock revoked: this node lost its lease (cut off from a majority of the voters, or its daemon starved)")

// watchRevoked reads f at offset 0 every revokePoll until done has a value
// or a read fails: EIO (the peer revoked the hold) or the daemon gone
// (ENOTCONN, ECONNABORTED: the others grant the lock once they evict this
// node). It reports that on the returned channel. A read stuck in a
// paused daemon delays the next one: the hold is noticed lost when the
// daemon runs again (fencing tokens cover the pause itself).
func watchRevoked(f *os.File, stop <-chan struct{}) <-chan error {
	lost := make(chan error, 1)
	go func() {
		t := time.NewTicker(revokePoll)
		defer t.Stop()
		buf := make([]byte, 64)
		for {
			select {
			case <-t.C:
			case <-stop:
				return
			}
			if _, err := f.ReadAt(buf, 0); err != nil && !errors.Is(err, io.EOF) {
				switch {
				case errors.Is(err, syscall.EIO):
					lost <- errLockLost
				case errors.Is(err, syscall.ENOTCONN), errors.Is(err, syscall.ECONNABORTED):
					lost <- fmt.Errorf("the dlockfs daemon went away, and with it the lock (%w)", err)
				default:
					lost <- fmt.Errorf("reading the held lock file: %w", err)
				}
				return
			}
		}
	}()
	return lost
}

// openLock opens the lock file: blocking until granted; with try, failing
// with exit code 12 if it is busy; with timeout > 0, failing with exit code
// 13 after timeout. The abandoned blocking open is withdrawn when the
// process exits (the kernel interrupts it; the daemon drops the request).
func openLock(ctx context.Context, file string, try bool, timeout time.Duration) (*os.File, error) {
	// O_CREAT: a lock name nobody has used yet is made by creating it.
	flags := os.O_RDONLY | os.O_CREATE
	if try {
		flags |= syscall.O_NONBLOCK
	}
	type result struct {
		f   *os.File
		err error
	}
	ch := make(chan result, 1)
	go func() {
		f, err := os.OpenFile(file, flags, 0o644) // retries EINTR itself
		ch <- result{f, err}
	}()
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	var r result
	select {
	case r = <-ch:
	case <-expired:
		return nil, cli.Codef(cli.ExitTimeout, "%s: not granted within %v: CMD not run", file, timeout)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	switch {
	case r.err == nil:
		return r.f, nil
	case try && (errors.Is(r.err, syscall.EAGAIN) || errors.Is(r.err, syscall.EBUSY)):
		return nil, cli.Codef(cli.ExitBusy, "%s is busy: CMD not run", file)
	case errors.Is(r.err, syscall.ENOTCONN), errors.Is(r.err, syscall.ECONNABORTED):
		return nil, cli.Codef(cli.ExitNotMounted, "%s: the dlockfs daemon went away: CMD not run (%w)", file, r.err)
	}
	return nil, fmt.Errorf("%s: CMD not run: %w", file, r.err)
}

// readToken reads the fencing token, the first line of a held lock file, at
// offset 0 without moving the descriptor's offset.
func readToken(f *os.File) (uint64, error) {
	buf := make([]byte, 512)
	n, err := f.ReadAt(buf, 0)
	if n == 0 && err != nil {
		return 0, fmt.Errorf("reading token: %w", err)
	}
	line, _, _ := strings.Cut(string(buf[:n]), "\n")
	tok, err := strconv.ParseUint(strings.TrimSpace(line), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("first line %q is not a token", line)
	}
	return tok, nil
}

// withoutDlockfsEnv drops inherited DLOCKFS_* variables (a nested lock must
// not see the outer one's token as its own).
func withoutDlockfsEnv(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, "DLOCKFS_") {
			out = append(out, kv)
		}
	}
	return out
}
