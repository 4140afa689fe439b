package fs

import (
	"context"
	"fmt"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// statusNode is .status: the Locker's status as JSON, rendered afresh by
// every read from offset 0.
type statusNode struct {
	gofs.Inode
	fs *lockFS
}

// Open refuses writing. It renders nothing: the status is rendered by the
// read at offset 0 (see statusHandle.Read), so every `cat`, and every
// re-read after lseek(fd, 0, SEEK_SET), sees the status of that moment,
// and a plain open+read+close renders it exactly once.
func (n *statusNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0 {
		return nil, 0, errno(errReadOnly)
	}
	return &statusHandle{fs: n.fs}, fuse.FOPEN_DIRECT_IO | fuse.FOPEN_NOFLUSH, 0
}

// Getattr reports a read-only file whose size is that of the status it
// would read now: on an open handle, a snapshot that the handle's next
// read at offset 0 then serves (so "open, fstat, read" renders once and
// reads exactly the size it was told), else a fresh rendering. Reads are
// direct, so a status that grew since is still read whole to EOF.
func (n *statusNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.fs.setAttr(&out.Attr, statusMode)
	if h, ok := f.(*statusHandle); ok {
		out.Size = h.snapshotSize()
		return 0
	}
	out.Size = n.fs.statusSize()
	return 0
}

// lookupStatusSize is the size a lookup of .status reports: that of the
// last rendering, so that "cat .status" still renders once (its read);
// the first lookup renders to learn it. A stat (Getattr) renders afresh.
func (f *lockFS) lookupStatusSize() uint64 {
	if n := f.statusLen.Load(); n > 0 {
		return n
	}
	return f.statusSize()
}

// statusSize is the size of the status rendered now (0 if it cannot be).
func (f *lockFS) statusSize() uint64 {
	b, err := f.status()
	if err != nil {
		return 0
	}
	return uint64(len(b))
}

// snapshotSize renders the snapshot the next read at offset 0 serves,
// unless one is pending already, and returns its size.
func (h *statusHandle) snapshotSize() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.pending {
		content, err := h.fs.status()
		if err != nil {
			return 0
		}
		h.content, h.pending = content, true
	}
	return uint64(len(h.content))
}

// Setattr accepts time changes only.
func (n *statusNode) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if in.Valid&(fuse.FATTR_MODE|fuse.FATTR_UID|fuse.FATTR_GID|fuse.FATTR_SIZE) != 0 {
		return errno(errNotPermitted)
	}
	n.fs.setAttr(&out.Attr, statusMode)
	return 0
}

// statusHandle is one open of .status.
type statusHandle struct {
	fs      *lockFS
	mu      sync.Mutex
	content []byte // the snapshot being read; nil before the first read
	// pending: content was rendered by Getattr and not read from offset
	// 0 yet; that read serves it instead of rendering again.
	pending bool
}

// Read serves the status: a read at offset 0 (or a first read at any
// offset) renders a fresh snapshot, and later offsets continue the one
// being read, so a status larger than one read is never torn.
func (h *statusHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.pending {
		h.pending = false
		if off == 0 {
			return readAt(h.content, dest, off), 0
		}
	}
	if off == 0 || h.content == nil {
		content, err := h.fs.status()
		if err != nil {
			return nil, errno(err)
		}
		h.content = content
	}
	return readAt(h.content, dest, off), 0
}

// status renders the Locker's status, newline-terminated.
func (f *lockFS) status() ([]byte, error) {
	b, err := f.locker.StatusJSON()
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	if len(b) == 0 || b[len(b)-1] != '\n' {
		b = append(b, '\n')
	}
	f.statusLen.Store(uint64(len(b)))
	return b, nil
}
