package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/dlockfs/dlockfs/cmd/dlockfs/internal/cli"
)

// flockDir is the mount's flock view, where file-lock calls take the lock.
const flockDir = "flock"

// openShared takes a shared hold of the lock file in the flock view: open
// (which never blocks there), then flock(LOCK_SH), with LOCK_NB for try.
// Like openLock, with a timeout it exits 13, and the abandoned flock is
// withdrawn when the process exits.
func openShared(ctx context.Context, file string, try bool, timeout time.Duration) (*os.File, error) {
	f, err := os.OpenFile(file, os.O_RDONLY|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s: CMD not run: %w", file, err)
	}
	how := syscall.LOCK_SH
	if try {
		how |= syscall.LOCK_NB
	}
	ch := make(chan error, 1)
	go func() {
		for {
			err := syscall.Flock(int(f.Fd()), how)
			if !errors.Is(err, syscall.EINTR) {
				ch <- err
				return
			}
		}
	}()
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	select {
	case err = <-ch:
	case <-expired:
		return nil, cli.Codef(cli.ExitTimeout, "%s: not granted within %v: CMD not run", file, timeout)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	switch {
	case err == nil:
		return f, nil
	case try && errors.Is(err, syscall.EWOULDBLOCK):
		f.Close()
		return nil, cli.Codef(cli.ExitBusy, "%s is busy: CMD not run", file)
	case errors.Is(err, syscall.ENOTCONN), errors.Is(err, syscall.ECONNABORTED):
		f.Close()
		return nil, cli.Codef(cli.ExitNotMounted, "%s: the dlockfs daemon went away: CMD not run (%w)", file, err)
	}
	f.Close()
	return nil, fmt.Errorf("%s: flock(LOCK_SH): CMD not run: %w", file, err)
}
