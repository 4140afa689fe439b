package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/dlockfs/dlockfs/cmd/dlockfs/internal/cli"
)

// fuseSuperMagic is statfs(2)'s f_type of every FUSE filesystem.
const fuseSuperMagic = 0x65735546

// statusFile is the name of the status file at the root of a mount.
const statusFile = ".status"

// liveTimeout bounds reading .status when checking a mount: a hung daemon
// must not hang status, check or lock forever.
const liveTimeout = 10 * time.Second

// liveMount is what checkLive found.
type liveMount struct {
	root   string // the mount's root directory
	status []byte // the raw .status JSON
}

// checkLive verifies that dir is the root of a live dlockfs mount: a FUSE
// filesystem (statfs) whose .status file reads as dlockfs status JSON. Its
// errors exit with code 16 and say what to do.
func checkLive(ctx context.Context, dir string) (liveMount, error) {
	abs, err := cli.AbsPath(dir)
	if err != nil {
		return liveMount{}, cli.WithCode(cli.ExitNotMounted, err)
	}
	var sfs syscall.Statfs_t
	err = syscall.Statfs(abs, &sfs)
	switch {
	case errors.Is(err, syscall.ENOTCONN), errors.Is(err, syscall.ECONNABORTED):
		return liveMount{}, cli.Codef(cli.ExitNotMounted,
			"%s is a dead dlockfs mount (its daemon is gone): run 'umount -l %s' and start 'dlockfs mount' again", abs, abs)
	case errors.Is(err, syscall.ENOENT):
		return liveMount{}, cli.Codef(cli.ExitNotMounted, "%s does not exist", abs)
	case err != nil:
		return liveMount{}, cli.Codef(cli.ExitNotMounted, "%s: %w", abs, err)
	case sfs.Type != fuseSuperMagic:
		return liveMount{}, cli.Codef(cli.ExitNotMounted,
			"%s is not a dlockfs mount (not a FUSE filesystem): is 'dlockfs mount %s' running?", abs, abs)
	}
	st, err := readWithTimeout(ctx, filepath.Join(abs, statusFile), liveTimeout)
	switch {
	case errors.Is(err, syscall.ENOTCONN), errors.Is(err, syscall.ECONNABORTED):
		return liveMount{}, cli.Codef(cli.ExitNotMounted,
			"%s is a dead dlockfs mount (its daemon is gone): run 'umount -l %s' and start 'dlockfs mount' again", abs, abs)
	case errors.Is(err, os.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		return liveMount{}, cli.Codef(cli.ExitNotMounted,
			"%s is a FUSE filesystem but not the root of a dlockfs mount (no %s)", abs, statusFile)
	case err != nil:
		return liveMount{}, cli.Codef(cli.ExitNotMounted, "%s: reading %s: %w", abs, statusFile, err)
	}
	var probe struct {
		Node *string `json:"node"`
	}
	if err := json.Unmarshal(st, &probe); err != nil || probe.Node == nil {
		return liveMount{}, cli.Codef(cli.ExitNotMounted, "%s is not a dlockfs mount (%s is not dlockfs status)", abs, statusFile)
	}
	return liveMount{root: abs, status: st}, nil
}

// readWithTimeout reads a whole file, giving up after d (the read goes on in
// the background: a FUSE read cannot be abandoned, and the process is about
// to exit anyway).
func readWithTimeout(ctx context.Context, path string, d time.Duration) ([]byte, error) {
	type result struct {
		b   []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		b, err := os.ReadFile(path)
		ch <- result{b, err}
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case r := <-ch:
		return r.b, r.err
	case <-t.C:
		return nil, fmt.Errorf("no answer in %v (is the daemon hung?)", d)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
