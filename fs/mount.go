package fs

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
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
// Server.Unmount (or an external umount). It refuses a dir that is already
// a mount point, live or dead. As root it mounts with mount(2) directly;
// otherwise it needs /dev/fuse and the setuid helper fusermount3.
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
	abs, err := checkMountpoint(dir)
	if err != nil {
		return nil, nil, err
	}
	root := os.Geteuid() == 0
	if err := checkFuse(root); err != nil {
		return nil, nil, fmt.Errorf("fs: mount %s: %w", abs, err)
	}

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
	rootNode := newRoot(opts.Locker, logger)
	server, err := gofs.Mount(abs, rootNode, fsOpts)
	if err != nil {
		return nil, nil, fmt.Errorf("fs: mount %s: %w", abs, err)
	}
	logger.Debug("mounted", "dir", abs, "allow_other", opts.AllowOther)
	return server, rootNode, nil
}

// checkMountpoint returns dir's absolute, symlink-free path if it is a
// directory that is not a mount point.
func checkMountpoint(dir string) (string, error) {
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, syscall.ENOTCONN):
		return "", fmt.Errorf("fs: mount %s: a dead FUSE mount is on it (its daemon exited); run `umount %s` first: %w", dir, dir, err)
	case err != nil:
		return "", fmt.Errorf("fs: mount: %w", err)
	case !st.IsDir():
		return "", fmt.Errorf("fs: mount %s: not a directory", dir)
	}
	abs, err := filepath.Abs(dir)
	if err == nil {
		abs, err = filepath.EvalSymlinks(abs)
	}
	if err != nil {
		return "", fmt.Errorf("fs: mount %s: %w", dir, err)
	}
	mounted, fstype, err := isMountpoint(abs)
	if err != nil {
		return "", fmt.Errorf("fs: mount %s: %w", dir, err)
	}
	if mounted {
		return "", fmt.Errorf("fs: mount %s: already a mount point (%s); unmount it first", dir, fstype)
	}
	return abs, nil
}

// isMountpoint reports whether path is a mount point in this mount
// namespace, and the type of what is mounted there.
func isMountpoint(path string) (bool, string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, "", fmt.Errorf("reading mount table: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [TAGS...] - FSTYPE SOURCE SUPER
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || unescapeMountinfo(fields[4]) != path {
			continue
		}
		fstype := "unknown"
		for i, f := range fields {
			if f == "-" && i+1 < len(fields) {
				fstype = fields[i+1]
				break
			}
		}
		return true, fstype, nil
	}
	if err := sc.Err(); err != nil {
		return false, "", fmt.Errorf("reading mount table: %w", err)
	}
	return false, "", nil
}

// unescapeMountinfo undoes the octal escapes (\040 for space, ...) of
// /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// checkFuse says exactly what is missing to mount.
func checkFuse(root bool) error {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("/dev/fuse is missing (load the fuse kernel module, or pass --device /dev/fuse to the container): %w", err)
	}
	if root {
		return nil
	}
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("/dev/fuse is not accessible to this user: %w", err)
	}
	f.Close()
	if _, err := exec.LookPath("fusermount3"); err != nil {
		if _, err2 := exec.LookPath("fusermount"); err2 != nil {
			return fmt.Errorf("mounting as a non-root user needs the setuid helper fusermount3 (Debian/Ubuntu package fuse3), not found in PATH: %w", err)
		}
	}
	return nil
}
