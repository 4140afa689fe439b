package fs

import (
	"context"
	"errors"
	"log/slog"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"

	"github.com/dlockfs/dlockfs/mutex"
)

// Locker is the distributed lock the file system serves. *peer.Peer
// implements it.
type Locker interface {
	// Lock blocks until the lock name is granted to this caller or ctx
	// ends; a cancelled request is withdrawn.
	Lock(ctx context.Context, name string) (mutex.Grant, error)
	// TryLock grants the lock name if it is free now, else fails with
	// mutex.ErrLocked.
	TryLock(ctx context.Context, name string) (mutex.Grant, error)
	// Unlock releases a grant. It must not block for long. Unlock of a
	// revoked grant returns nil.
	Unlock(g mutex.Grant) error
	// Revoked reports whether grant g ended without an Unlock because
	// the peer lost its lease (majority mode): others may hold the lock
	// now. Reads, writes and fsyncs of its open file then fail with EIO.
	Revoked(g mutex.Grant) bool
	// Node is this peer's node name.
	Node() string
	// Names lists the lock names this peer knows.
	Names() []string
	// StatusJSON renders the peer's status as JSON. It must not block.
	StatusJSON() ([]byte, error)
}

// SharedLocker is a [Locker] that also grants shared (reader) holds: any
// number of shared holders at once, or one exclusive holder. The flock view
// uses it for flock(LOCK_SH), F_RDLCK and lockf's read locks; with a Locker
// that does not implement it, a shared request is taken as exclusive.
type SharedLocker interface {
	Locker
	// LockShared blocks until a shared hold of name is granted or ctx
	// ends; a cancelled request is withdrawn.
	LockShared(ctx context.Context, name string) (mutex.Grant, error)
	// TryLockShared grants a shared hold of name if no exclusive holder
	// or waiter is in the way now, else fails with mutex.ErrLocked.
	TryLockShared(ctx context.Context, name string) (mutex.Grant, error)
}

// Options configure [Mount].
type Options struct {
	// Locker is the lock the mount serves. Required.
	Locker Locker
	// AllowOther lets users other than the mounting one use the mount
	// (as non-root this needs user_allow_other in /etc/fuse.conf).
	AllowOther bool
	// Debug logs every FUSE request and reply (go-fuse's debug log) to
	// Logger at debug level.
	Debug bool
	// Logger receives the package's and go-fuse's diagnostics; nil
	// discards them.
	Logger *slog.Logger
}

// The file names the root always has.
const (
	// LockFile is the default lock's file and name.
	LockFile = "lock"
	// StatusFile serves Locker.StatusJSON.
	StatusFile = ".status"
	// FlockDir is the directory view of the same locks in which open
	// never blocks and flock(2)/fcntl(2) locks take the cluster lock.
	FlockDir = "flock"
)

// Errors the file system answers with; [errno] maps them.
var (
	errNotPermitted = errors.New("operation not supported by dlockfs")
	errBusy         = errors.New("lock is held or awaited through this mount")
	errExists       = errors.New("lock name exists")
	errNoEntry      = errors.New("no such lock name")
	errReadOnly     = errors.New("file is read-only")
	errReserved     = errors.New("names starting with '.' are reserved")
	errNotDir       = errors.New("not a directory")
	errIsDir        = errors.New("file locks on a directory are refused")
	errNameTooLong  = errors.New("lock name longer than 255 bytes")
	errDeadlock     = errors.New("the caller already holds this lock through an open file")
	errRange        = errors.New("byte-range locks are refused: only whole-file locks (start 0, length 0)")
)

// errno maps an error to the errno the kernel passes to the caller. It is
// the only place the file system chooses an errno for an error.
func errno(err error) syscall.Errno {
	var e syscall.Errno
	switch {
	case err == nil:
		return 0
	case errors.As(err, &e):
		return e
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return syscall.EINTR
	case errors.Is(err, mutex.ErrLocked):
		return syscall.EAGAIN
	case errors.Is(err, mutex.ErrInvalidName), errors.Is(err, errReserved):
		return syscall.EINVAL
	case errors.Is(err, errNotPermitted):
		return syscall.EPERM
	case errors.Is(err, errBusy):
		return syscall.EBUSY
	case errors.Is(err, errExists):
		return syscall.EEXIST
	case errors.Is(err, errNoEntry):
		return syscall.ENOENT
	case errors.Is(err, errReadOnly):
		return syscall.EACCES
	case errors.Is(err, errNotDir):
		return syscall.ENOTDIR
	case errors.Is(err, errIsDir):
		return syscall.EISDIR
	case errors.Is(err, errNameTooLong):
		return syscall.ENAMETOOLONG
	case errors.Is(err, errDeadlock):
		return syscall.EDEADLK
	case errors.Is(err, errRange):
		return syscall.EINVAL
	default:
		return syscall.EIO
	}
}

// Compile-time interface checks, all in one place.
var (
	_ = (gofs.InodeEmbedder)((*rootNode)(nil))
	_ = (gofs.NodeOnAdder)((*rootNode)(nil))
	_ = (gofs.NodeOnForgetter)((*rootNode)(nil))
	_ = (gofs.NodeGetattrer)((*rootNode)(nil))
	_ = (gofs.NodeSetattrer)((*rootNode)(nil))
	_ = (gofs.NodeLookuper)((*rootNode)(nil))
	_ = (gofs.NodeReaddirer)((*rootNode)(nil))
	_ = (gofs.NodeCreater)((*rootNode)(nil))
	_ = (gofs.NodeMknoder)((*rootNode)(nil))
	_ = (gofs.NodeUnlinker)((*rootNode)(nil))
	_ = (gofs.NodeRmdirer)((*rootNode)(nil))
	_ = (gofs.NodeMkdirer)((*rootNode)(nil))
	_ = (gofs.NodeRenamer)((*rootNode)(nil))
	_ = (gofs.NodeLinker)((*rootNode)(nil))
	_ = (gofs.NodeSymlinker)((*rootNode)(nil))
	_ = (gofs.NodeTmpfiler)((*rootNode)(nil))
	_ = (gofs.NodeGetlker)((*rootNode)(nil))
	_ = (gofs.NodeSetlker)((*rootNode)(nil))
	_ = (gofs.NodeSetlkwer)((*rootNode)(nil))

	_ = (gofs.InodeEmbedder)((*flockDirNode)(nil))
	_ = (gofs.NodeGetattrer)((*flockDirNode)(nil))
	_ = (gofs.NodeLookuper)((*flockDirNode)(nil))
	_ = (gofs.NodeReaddirer)((*flockDirNode)(nil))
	_ = (gofs.NodeCreater)((*flockDirNode)(nil))
	_ = (gofs.NodeUnlinker)((*flockDirNode)(nil))
	_ = (gofs.NodeGetlker)((*flockDirNode)(nil))
	_ = (gofs.NodeSetlker)((*flockDirNode)(nil))
	_ = (gofs.NodeSetlkwer)((*flockDirNode)(nil))

	_ = (gofs.InodeEmbedder)((*flockNode)(nil))
	_ = (gofs.NodeOpener)((*flockNode)(nil))
	_ = (gofs.NodeGetattrer)((*flockNode)(nil))
	_ = (gofs.NodeSetattrer)((*flockNode)(nil))
	_ = (gofs.NodeGetlker)((*flockNode)(nil))
	_ = (gofs.NodeSetlker)((*flockNode)(nil))
	_ = (gofs.NodeSetlkwer)((*flockNode)(nil))
	_ = (gofs.FileReader)((*flockHandle)(nil))
	_ = (gofs.FileWriter)((*flockHandle)(nil))
	_ = (gofs.FileFsyncer)((*flockHandle)(nil))
	_ = (gofs.FileFlusher)((*flockHandle)(nil))
	_ = (gofs.FileReleaser)((*flockHandle)(nil))

	_ = (gofs.InodeEmbedder)((*lockNode)(nil))
	_ = (gofs.NodeOpener)((*lockNode)(nil))
	_ = (gofs.NodeGetattrer)((*lockNode)(nil))
	_ = (gofs.NodeSetattrer)((*lockNode)(nil))
	_ = (gofs.NodeGetlker)((*lockNode)(nil))
	_ = (gofs.NodeSetlker)((*lockNode)(nil))
	_ = (gofs.NodeSetlkwer)((*lockNode)(nil))
	_ = (gofs.FileReader)((*lockHandle)(nil))
	_ = (gofs.FileWriter)((*lockHandle)(nil))
	_ = (gofs.FileFsyncer)((*lockHandle)(nil))
	_ = (gofs.FileReleaser)((*lockHandle)(nil))
	_ = (gofs.FileFlusher)((*lockHandle)(nil))

	_ = (gofs.InodeEmbedder)((*statusNode)(nil))
	_ = (gofs.NodeOpener)((*statusNode)(nil))
	_ = (gofs.NodeGetattrer)((*statusNode)(nil))
	_ = (gofs.NodeSetattrer)((*statusNode)(nil))
	_ = (gofs.FileReader)((*statusHandle)(nil))
)
