package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// runCheck exits 0 iff the path is the root of a live dlockfs mount.
func runCheck(ctx context.Context, e *env, cfg config) error {
	live, err := checkLive(ctx, cfg.check.mountpoint)
	if err != nil {
		if cfg.check.quiet {
			return withCode(exitNotMounted, errSilent)
		}
		return err
	}
	if !cfg.check.quiet {
		var st struct {
			Node string `json:"node"`
		}
		_ = json.Unmarshal(live.status, &st) // checkLive parsed it already
		fmt.Fprintf(e.stdout, "%s is a live dlockfs mount (node %s)\n", live.root, st.Node)
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
			return liveMount{}, "", codef(exitNotMounted,
				"%s does not exist, and %s is not a live dlockfs mount to take lock %q in: %w", path, root, name, err)
		}
		return liveMount{}, "", err
	}
	if strings.HasPrefix(name, ".") {
		return liveMount{}, "", usagef("%s: lock names starting with '.' are reserved (%s is the status file)", path, statusFile)
	}
	return live, filepath.Join(live.root, name), nil
}

// runLock takes the lock and replaces this process with CMD, which inherits
// the descriptor that holds it.
func runLock(ctx context.Context, _ *env, cfg config) error {
	l := cfg.lock
	// Find CMD first: a typo must not take (and drop) the lock.
	bin, err := exec.LookPath(l.argv[0])
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return codef(exitCannotExec, "%s: %w", l.argv[0], err)
		}
		return codef(exitNotFound, "%s: command not found", l.argv[0])
	}
	_, file, err := lockTarget(ctx, l.path)
	if err != nil {
		return err
	}
	f, err := openLock(ctx, file, l.try, l.timeout)
	if err != nil {
		return err
	}
	// The mount may have gone between the check and the open: then the
	// open made a plain file in the bare directory. Never run CMD on it.
	var sfs syscall.Statfs_t
	if err := syscall.Fstatfs(int(f.Fd()), &sfs); err != nil || sfs.Type != fuseSuperMagic {
		f.Close()
		return codef(exitNotMounted, "%s is no longer on a dlockfs mount (unmounted meanwhile?): CMD not run", file)
	}
	token, err := readToken(f)
	if err != nil {
		f.Close()
		return codef(exitError, "%s is not a dlockfs lock file (%w): CMD not run", file, err)
	}
	fd := int(f.Fd()) // also puts the descriptor back in blocking mode
	if err := inheritable(fd); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", file, err)
	}
	env := append(withoutDlockfsEnv(os.Environ()),
		"DLOCKFS_TOKEN="+strconv.FormatUint(token, 10),
		"DLOCKFS_FD="+strconv.Itoa(fd),
		"DLOCKFS_LOCK="+file,
	)
	err = syscall.Exec(bin, l.argv, env)
	// Only on failure are we still here.
	f.Close()
	if errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.ENOEXEC) || errors.Is(err, syscall.EISDIR) {
		return codef(exitCannotExec, "%s: %w", l.argv[0], err)
	}
	return codef(exitNotFound, "%s: %w", l.argv[0], err)
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
		return nil, codef(exitTimeout, "%s: not granted within %v: CMD not run", file, timeout)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	switch {
	case r.err == nil:
		return r.f, nil
	case try && (errors.Is(r.err, syscall.EAGAIN) || errors.Is(r.err, syscall.EBUSY)):
		return nil, codef(exitBusy, "%s is busy: CMD not run", file)
	case errors.Is(r.err, syscall.ENOTCONN), errors.Is(r.err, syscall.ECONNABORTED):
		return nil, codef(exitNotMounted, "%s: the dlockfs daemon went away: CMD not run (%w)", file, r.err)
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

// inheritable clears close-on-exec and O_NONBLOCK on fd, so that CMD gets
// it as an ordinary blocking descriptor.
func inheritable(fd int) error {
	if _, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_SETFD, 0); errno != 0 {
		return fmt.Errorf("clearing close-on-exec: %w", errno)
	}
	if err := syscall.SetNonblock(fd, false); err != nil {
		return fmt.Errorf("clearing O_NONBLOCK: %w", err)
	}
	return nil
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
