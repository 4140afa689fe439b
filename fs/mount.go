package fs

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Kernel cache timeouts. A lock file's attributes never change (size 0,
// fixed mode, times of the mount), and positive entries only disappear
// through a local unlink, which the kernel sees, so caching them is safe;
// one second is libfuse's default and saves a LOOKUP and a GETATTR per open
// (11 us instead of 15-24 us p50 per open+close, and far better p99).
// Negative entries are not cached: a name can appear at any time when a
// peer starts using it.
const (
	entryTimeout = time.Second
	attrTimeout  = time.Second
)

// Mount mounts the lock file system on dir and serves it until
// Server.Unmount (or an external umount). It first runs [CheckMountpoint]
// and [CheckFUSE], and returns their errors unchanged (so they match
// [ErrMountpoint] and [ErrNoFUSE]). As root it mounts with mount(2)
// directly; otherwise it needs /dev/fuse and the setuid helper fusermount3.
func Mount(dir string, opts Options) (*fuse.Server, error) {
	server, _, err := mount(dir, opts)
	return server, err
}

// mount is Mount, also returning the root (tests inspect its state).
func mount(dir string, opts Options) (*fuse.Server, *rootNode, error) {
	if opts.Locker == nil {
		return nil, nil, errors.New("fs: mount: Options.Locker is nil")
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	// The CLI has run these checks before joining the cluster; they run
	// again here because a join can take long, and the kernel would
	// silently stack this mount on one that appeared meanwhile.
	abs, err := CheckMountpoint(dir)
	if err != nil {
		return nil, nil, err
	}
	if err := CheckFUSE(opts.AllowOther); err != nil {
		return nil, nil, err
	}
	root := os.Geteuid() == 0

	level := slog.LevelWarn
	if opts.Debug {
		level = slog.LevelDebug
	}
	fuseLog := slog.NewLogLogger(logger.With("component", "go-fuse").Handler(), level)
	entry, attr := entryTimeout, attrTimeout
	fsOpts := &gofs.Options{
		MountOptions: fuse.MountOptions{
			AllowOther:        opts.AllowOther,
			Debug:             opts.Debug,
			Logger:            fuseLog,
			FsName:            "dlockfs",
			Name:              "dlockfs",
			DirectMountStrict: root,
			// No xattrs: the kernel stops asking after the first ENOSYS
			// (saves a GETXATTR on every `exec 9>lock`).
			DisableXAttrs: true,
			// O_TRUNC arrives in OPEN instead of a separate SETATTR.
			ExtraCapabilities: fuse.CAP_ATOMIC_O_TRUNC,
			// flock(2) and fcntl(2) locks come to the daemon (the flock
			// view takes the cluster lock for them).
			EnableLocks: true,
			// Never SingleThreaded, and MaxInflightRequestBytes unset:
			// blocked opens must not hold up other requests.
		},
		EntryTimeout: &entry,
		AttrTimeout:  &attr,
		Logger:       fuseLog,
	}
	if entries, err := os.ReadDir(abs); err == nil && len(entries) > 0 {
		logger.Warn("mount point is not empty: its files are hidden while mounted, and scripts that run while it is not mounted use them unlocked",
			"dir", abs, "first", entries[0].Name(), "entries", len(entries))
	}
	rootNode := newRoot(opts.Locker, abs, logger)
	// gofs.Mount, with the raw file system wrapped (see rawFS).
	raw := &rawFS{RawFileSystem: gofs.NewNodeFS(rootNode, fsOpts), fs: rootNode.fs}
	server, err := fuse.NewServer(raw, abs, &fsOpts.MountOptions)
	if err != nil {
		return nil, nil, fmt.Errorf("fs: mount %s: %w", abs, err)
	}
	go server.Serve()
	if err := server.WaitMount(); err != nil {
		server.Unmount()
		return nil, nil, fmt.Errorf("fs: mount %s: %w", abs, err)
	}
	logger.Debug("mounted", "dir", abs, "allow_other", opts.AllowOther)
	return server, rootNode, nil
}
