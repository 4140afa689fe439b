package fs_test

import (
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	dlockfs "github.com/dlockfs/dlockfs/fs"
)

// ExampleMount serves a Locker (in production a *peer.Peer) at /run/dlock
// until SIGINT or SIGTERM. While a lock file is open or an open is blocked
// a plain unmount fails with EBUSY; a lazy unmount (MNT_DETACH) detaches the
// mount and lets it serve until the last descriptor closes.
func ExampleMount() {
	var locker dlockfs.Locker // e.g. peer.Start(ctx, cfg)
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))

	server, err := dlockfs.Mount("/run/dlock", dlockfs.Options{Locker: locker, Logger: logger})
	if err != nil {
		logger.Error("mount", "err", err)
		os.Exit(1)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		if err := server.Unmount(); err != nil {
			logger.Warn("unmount busy; detaching", "err", err)
			_ = syscall.Unmount("/run/dlock", syscall.MNT_DETACH)
		}
	}()
	server.Wait()
}
