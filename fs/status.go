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

// Getattr reports a read-only file of size 0 (reads are direct).
func (n *statusNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.fs.setAttr(&out.Attr, statusMode)
	return 0
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
}

// Read serves the status: a read at offset 0 (or a first read at any
// offset) renders a fresh snapshot, and later offsets continue the one
// being read, so a status larger than one read is never torn.
func (h *statusHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
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
	return b, nil
}
