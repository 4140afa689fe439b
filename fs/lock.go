package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/dlockfs/dlockfs/mutex"
)

// lockNode is the file of one lock. Opening it takes the lock.
type lockNode struct {
	gofs.Inode
	fs   *lockFS
	name string
}

// Open waits until the Locker grants the lock to this opener (or tries it,
// with O_NONBLOCK). An interrupt (a signal to the opener) withdraws the
// request and fails the open with EINTR.
func (n *lockNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	n.fs.root.used(n.name)
	h, err := n.fs.acquire(ctx, n.name, flags)
	if err != nil {
		return nil, 0, errno(err)
	}
	if n.fs.flushMode != noFlush {
		return h, fuse.FOPEN_DIRECT_IO, 0
	}
	return h, fuse.FOPEN_DIRECT_IO | fuse.FOPEN_NOFLUSH, 0
}

// Getattr reports a regular file of size 0.
func (n *lockNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.fs.setAttr(&out.Attr, lockMode)
	return 0
}

// Setattr accepts truncation (exec 9>lock sends SETATTR size=0) and time
// changes (touch), and refuses mode and ownership changes.
func (n *lockNode) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if in.Valid&(fuse.FATTR_MODE|fuse.FATTR_UID|fuse.FATTR_GID) != 0 {
		return errno(errNotPermitted)
	}
	n.fs.setAttr(&out.Attr, lockMode)
	return 0
}

// lockHandle is one open file description of a lock file: it holds the
// grant until the kernel releases the description.
type lockHandle struct {
	fs      *lockFS
	name    string
	grant   mutex.Grant
	pid     uint32 // the opener (a thread id)
	content []byte // "TOKEN\nholder NODE\nlock NAME\n"
}

// Flush has nothing to do: the lock is released in Release, at the last
// close of the open file description. Open answers FOPEN_NOFLUSH, so the
// kernel does not send the FLUSH that comes with every close(2) for this
// file; ENOSYS must not be answered, as it would stop FLUSH on the whole
// mount and the flock view needs it (POSIX locks end at FLUSH).
func (h *lockHandle) Flush(ctx context.Context) syscall.Errno {
	if h.fs.flushMode == flushENOSYS {
		return syscall.ENOSYS
	}
	return 0
}

// Read returns the grant's description, or EIO once the grant was revoked
// (the peer lost its lease): the holder must stop.
func (h *lockHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if h.fs.locker.Revoked(h.grant) {
		return nil, syscall.EIO
	}
	return readAt(h.content, dest, off), 0
}

// Write accepts and discards data (EIO once the grant was revoked).
func (h *lockHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if h.fs.locker.Revoked(h.grant) {
		return 0, syscall.EIO
	}
	return uint32(len(data)), 0
}

// Fsync has nothing to do (EIO once the grant was revoked).
func (h *lockHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if h.fs.locker.Revoked(h.grant) {
		return syscall.EIO
	}
	return 0
}

// Release gives the lock back: the last descriptor of this open file
// description was closed (or its process died).
func (h *lockHandle) Release(ctx context.Context) syscall.Errno {
	h.fs.release(h)
	return 0
}

// readAt answers a read of content at off.
func readAt(content, dest []byte, off int64) fuse.ReadResult {
	if off >= int64(len(content)) || off < 0 {
		return fuse.ReadResultData(nil)
	}
	end := min(int(off)+len(dest), len(content))
	return fuse.ReadResultData(content[off:end])
}

// Getlk reports no conflict: an open file of the root view holds its lock.
func (n *lockNode) Getlk(ctx context.Context, f gofs.FileHandle, owner uint64, lk *fuse.FileLock, flags uint32, out *fuse.FileLock) syscall.Errno {
	*out = fuse.FileLock{Typ: syscall.F_UNLCK}
	return 0
}

// Setlk succeeds at once: the open already took the cluster lock, so
// `flock MOUNT/NAME cmd` and fcntl locks on a held file are satisfied.
func (n *lockNode) Setlk(ctx context.Context, f gofs.FileHandle, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return 0
}

// Setlkw is Setlk.
func (n *lockNode) Setlkw(ctx context.Context, f gofs.FileHandle, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return 0
}
