package fs

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/dlockfs/dlockfs/mutex"
)

// offsetMax is the kernel's OFFSET_MAX: the end of a lock "to EOF".
const offsetMax = math.MaxInt64

// holdKey identifies one file-lock holder of one lock, as the kernel keys
// them: flock(2) and OFD locks by open file description, POSIX locks by
// process (the kernel's lock owner in both cases).
type holdKey struct {
	name  string
	flock bool // a flock(2) lock (else fcntl/lockf: POSIX or OFD)
	owner uint64
}

// hold is a cluster lock taken by a file-lock call in the flock view.
type hold struct {
	grant  mutex.Grant
	shared bool
	pid    uint32       // the caller that took it (a thread id)
	h      *flockHandle // the open file it was taken through
}

// flockDirNode is MOUNT/flock: the same locks as the root, but open never
// blocks; file-lock calls take the lock.
type flockDirNode struct {
	gofs.Inode
	root *rootNode
}

// Getattr describes the directory.
func (d *flockDirNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	return d.root.Getattr(ctx, f, out)
}

// Lookup finds any valid lock name: every name exists.
func (d *flockDirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if err := ValidName(name); err != nil {
		return nil, lookupErrno(err)
	}
	d.root.fs.setAttr(&out.Attr, lockMode)
	return d.node(ctx, name), 0
}

// lookupErrno is the answer to a lookup of an invalid name: ENOENT, or
// ENAMETOOLONG for a name that is too long.
func lookupErrno(err error) syscall.Errno {
	if errors.Is(err, errNameTooLong) {
		return errno(err)
	}
	return errno(errNoEntry)
}

// node returns the flock view's inode of name.
func (d *flockDirNode) node(ctx context.Context, name string) *gofs.Inode {
	if ch := d.GetChild(name); ch != nil {
		return ch
	}
	return d.NewInode(ctx, &flockNode{fs: d.root.fs, name: name}, gofs.StableAttr{Mode: syscall.S_IFREG})
}

// Readdir lists the same names as the root (without .status and flock/).
func (d *flockDirNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	names := d.root.listNames(ctx)
	entries := make([]fuse.DirEntry, 0, len(names)+2)
	entries = append(entries,
		fuse.DirEntry{Name: ".", Mode: syscall.S_IFDIR, Ino: flockIno},
		fuse.DirEntry{Name: "..", Mode: syscall.S_IFDIR, Ino: 1})
	for _, n := range names {
		entries = append(entries, fuse.DirEntry{Name: n.name, Mode: syscall.S_IFREG})
	}
	return gofs.NewListDirStream(entries), 0
}

// Create makes lock name (if new) and opens it without taking it.
func (d *flockDirNode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	if err := ValidName(name); err != nil {
		return nil, nil, 0, errno(err)
	}
	d.root.node(ctx, name, true)
	d.root.fs.setAttr(&out.Attr, lockMode)
	return d.node(ctx, name), &flockHandle{fs: d.root.fs, name: name}, fuse.FOPEN_DIRECT_IO, 0
}

// Unlink is the root's: the name leaves the listing (EBUSY if in use here).
func (d *flockDirNode) Unlink(ctx context.Context, name string) syscall.Errno {
	return d.root.Unlink(ctx, name)
}

// Getlk, Setlk and Setlkw on the directory are refused (EISDIR).
func (d *flockDirNode) Getlk(ctx context.Context, f gofs.FileHandle, owner uint64, lk *fuse.FileLock, flags uint32, out *fuse.FileLock) syscall.Errno {
	return errno(errIsDir)
}

func (d *flockDirNode) Setlk(ctx context.Context, f gofs.FileHandle, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return errno(errIsDir)
}

func (d *flockDirNode) Setlkw(ctx context.Context, f gofs.FileHandle, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return errno(errIsDir)
}

// flockNode is MOUNT/flock/NAME.
type flockNode struct {
	gofs.Inode
	fs   *lockFS
	name string
}

// Open never blocks and takes nothing.
func (n *flockNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	n.fs.root.used(n.name)
	return &flockHandle{fs: n.fs, name: n.name}, fuse.FOPEN_DIRECT_IO, 0
}

// Getattr reports a regular file of size 0.
func (n *flockNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.fs.setAttr(&out.Attr, lockMode)
	return 0
}

// Setattr is the lock file's.
func (n *flockNode) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if in.Valid&(fuse.FATTR_MODE|fuse.FATTR_UID|fuse.FATTR_GID) != 0 {
		return errno(errNotPermitted)
	}
	n.fs.setAttr(&out.Attr, lockMode)
	return 0
}

// Getlk reports whether the lock could be taken now.
func (n *flockNode) Getlk(ctx context.Context, f gofs.FileHandle, owner uint64, lk *fuse.FileLock, flags uint32, out *fuse.FileLock) syscall.Errno {
	return errno(n.fs.getlk(ctx, n.name, owner, lk, flags, out))
}

// Setlk takes (try-lock: EAGAIN when busy) or releases the lock.
func (n *flockNode) Setlk(ctx context.Context, f gofs.FileHandle, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return errno(n.fs.setlk(ctx, f, n.name, owner, lk, flags, false))
}

// Setlkw waits for the lock; an interrupt withdraws the request (EINTR).
func (n *flockNode) Setlkw(ctx context.Context, f gofs.FileHandle, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return errno(n.fs.setlk(ctx, f, n.name, owner, lk, flags, true))
}

// flockHandle is one open file description in the flock view.
type flockHandle struct {
	fs   *lockFS
	name string
}

// Read gives the description of the lock held through this open file
// (flock or OFD lock, or a POSIX lock set through it), else nothing.
func (h *flockHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.fs.mu.Lock()
	var content []byte
	revoked := false
	for k, hd := range h.fs.holds {
		if hd.h == h && k.name == h.name {
			if h.fs.locker.Revoked(hd.grant) {
				revoked = true
				break
			}
			content = h.fs.describe(hd.grant)
			break
		}
	}
	h.fs.mu.Unlock()
	if revoked {
		return nil, syscall.EIO
	}
	return readAt(content, dest, off), 0
}

// revoked reports whether a hold through h was revoked.
func (h *flockHandle) revoked() bool {
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	for k, hd := range h.fs.holds {
		if hd.h == h && k.name == h.name && h.fs.locker.Revoked(hd.grant) {
			return true
		}
	}
	return false
}

// Write accepts and discards data (EIO once a hold through h was revoked).
func (h *flockHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if h.revoked() {
		return 0, syscall.EIO
	}
	return uint32(len(data)), 0
}

// Fsync has nothing to do, but answers a probe (see lockFS.probe).
func (h *flockHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if c, ok := fuse.FromContext(ctx); ok {
		if v, ok := h.fs.probes.Load(c.Pid); ok {
			select {
			case v.(chan *flockHandle) <- h:
			default:
			}
		}
	}
	return 0
}

// Flush drops the POSIX locks of the closing process on this lock: POSIX
// locks end when their process closes any descriptor of the file.
func (h *flockHandle) Flush(ctx context.Context) syscall.Errno {
	if owner, ok := h.fs.flushOwner(ctx); ok {
		h.fs.dropHold(holdKey{name: h.name, owner: owner})
	}
	return 0
}

// Release drops every lock taken through this open file description
// (flock and OFD locks end here; POSIX locks have normally ended at FLUSH).
func (h *flockHandle) Release(ctx context.Context) syscall.Errno {
	h.fs.mu.Lock()
	var keys []holdKey
	for k, hd := range h.fs.holds {
		if hd.h == h {
			keys = append(keys, k)
		}
	}
	h.fs.mu.Unlock()
	for _, k := range keys {
		h.fs.dropHold(k)
	}
	return 0
}

// flushOwner returns the lock owner of the FLUSH request ctx belongs to
// (recorded by flushRecorder, as go-fuse does not pass it on).
func (f *lockFS) flushOwner(ctx context.Context) (uint64, bool) {
	c, ok := ctx.(*fuse.Context)
	if !ok {
		return 0, false
	}
	v, ok := f.flushing.Load(c.Cancel)
	if !ok {
		return 0, false
	}
	return v.(uint64), true
}

// rawFS wraps go-fuse's raw file system where the node API does not
// reach: it records the lock owner of each FLUSH, keyed by the request's
// cancel channel (unique among requests in flight), for
// flockHandle.Flush, and refuses opens of a directory without O_DIRECTORY.
type rawFS struct {
	fuse.RawFileSystem
	fs *lockFS
}

// OpenDir refuses util-linux flock(1)'s open of a directory (EISDIR).
// FUSE does not forward a directory's file locks: the kernel would keep
// the lock local to this machine and flock(1) would run its command
// without the cluster lock. The open cannot be told from other plain
// opens of a directory (Go's os.Open passes no O_DIRECTORY either), so
// this looks at the opener's command name, and only when the open lacks
// O_DIRECTORY (opendir(3), as in ls and find, passes it).
func (r *rawFS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if in.Flags&syscall.O_DIRECTORY == 0 && isFlockCmd(in.Pid) {
		return fuse.Status(errno(errIsDir))
	}
	return r.RawFileSystem.OpenDir(cancel, in, out)
}

// isFlockCmd reports whether thread tid runs util-linux flock(1).
func isFlockCmd(tid uint32) bool {
	b, err := os.ReadFile("/proc/" + strconv.FormatUint(uint64(tid), 10) + "/comm")
	return err == nil && string(b) == "flock\n"
}

func (r *rawFS) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	r.fs.flushing.Store(cancel, in.LockOwner)
	defer r.fs.flushing.Delete(cancel)
	return r.RawFileSystem.Flush(cancel, in)
}

// wholeFile reports whether lk covers the whole file (start 0, to EOF).
func wholeFile(lk *fuse.FileLock) bool {
	return lk.Start == 0 && lk.End >= offsetMax
}

// setlk serves SETLK (wait false) and SETLKW for lock name.
func (f *lockFS) setlk(ctx context.Context, fh gofs.FileHandle, name string, owner uint64, lk *fuse.FileLock, flags uint32, wait bool) error {
	isFlock := flags&fuse.FUSE_LK_FLOCK != 0
	if !isFlock && !wholeFile(lk) {
		return errRange
	}
	key := holdKey{name: name, flock: isFlock, owner: owner}
	switch lk.Typ {
	case syscall.F_UNLCK:
		f.dropHold(key)
		return nil
	case syscall.F_RDLCK, syscall.F_WRLCK:
	default:
		return syscall.EINVAL
	}
	h, _ := fh.(*flockHandle)
	shared := lk.Typ == syscall.F_RDLCK && f.shared != nil
	f.mu.Lock()
	old := f.holds[key]
	f.mu.Unlock()
	if old != nil {
		if old.shared == shared {
			return nil
		}
		// A conversion releases the lock, then asks for the new mode,
		// as flock(2) does (it is not atomic).
		f.dropHold(key)
	}
	g, err := f.grab(ctx, name, shared, !wait)
	if err != nil {
		return err
	}
	var pid uint32
	if c, ok := fuse.FromContext(ctx); ok {
		pid = c.Pid
	}
	f.mu.Lock()
	if prev := f.holds[key]; prev != nil {
		// A concurrent request of the same owner won: keep one.
		f.mu.Unlock()
		f.ungrab(name, g)
		return nil
	}
	f.holds[key] = &hold{grant: g, shared: shared, pid: pid, h: h}
	f.holders[name]++
	f.mu.Unlock()
	return nil
}

// dropHold releases the hold of key, if any.
func (f *lockFS) dropHold(key holdKey) {
	f.mu.Lock()
	hd := f.holds[key]
	if hd == nil {
		f.mu.Unlock()
		return
	}
	delete(f.holds, key)
	f.unhold(key.name)
	f.mu.Unlock()
	f.ungrab(key.name, hd.grant)
}

// getlk serves GETLK: F_UNLCK if the caller could take the lock now, else
// a whole-file lock of the (first) conflicting holder, with its pid if it
// is local (0 if it is on another peer). Whether another peer holds it is
// found out with a try-lock that is given back at once.
func (f *lockFS) getlk(ctx context.Context, name string, owner uint64, lk *fuse.FileLock, flags uint32, out *fuse.FileLock) error {
	isFlock := flags&fuse.FUSE_LK_FLOCK != 0
	if !isFlock && !wholeFile(lk) {
		return errRange
	}
	*out = fuse.FileLock{Typ: syscall.F_UNLCK}
	if lk.Typ == syscall.F_UNLCK {
		return nil
	}
	key := holdKey{name: name, flock: isFlock, owner: owner}
	shared := lk.Typ == syscall.F_RDLCK && f.shared != nil
	conflict := func(typ, pid uint32) {
		*out = fuse.FileLock{Start: 0, End: offsetMax, Typ: typ, Pid: pid}
	}
	f.mu.Lock()
	mine := f.holds[key]
	for k, hd := range f.holds {
		if k.name == name && k != key && !(shared && hd.shared) {
			typ := uint32(syscall.F_WRLCK)
			if hd.shared {
				typ = syscall.F_RDLCK
			}
			conflict(typ, hd.pid)
			f.mu.Unlock()
			return nil
		}
	}
	for h := range f.open {
		if h.name == name {
			conflict(syscall.F_WRLCK, h.pid)
			f.mu.Unlock()
			return nil
		}
	}
	f.mu.Unlock()
	if mine != nil && (mine.shared || !shared) {
		// The caller's own lock is not a conflict.
		return nil
	}
	g, err := f.grab(ctx, name, shared, true)
	switch {
	case errors.Is(err, mutex.ErrLocked):
		conflict(syscall.F_WRLCK, 0)
		return nil
	case err != nil:
		return err
	}
	f.ungrab(name, g)
	return nil
}

// selfHeld reports whether the process of thread pid already holds lock
// name here: it has a descriptor of the lock file in the root view (every
// such open file holds its lock), or of an open file of the flock view
// through which the lock is held, or it holds a POSIX lock on it in the
// flock view. It reads /proc, so it runs only when a wait would begin.
func (f *lockFS) selfHeld(pid uint32, name string) bool {
	if pid == 0 {
		return false
	}
	path, flockPath := f.dir+"/"+name, f.dir+"/"+FlockDir+"/"+name
	fdDir := "/proc/" + strconv.FormatUint(uint64(pid), 10) + "/fd"
	var flockFDs []int
	if ents, err := os.ReadDir(fdDir); err == nil {
		for _, e := range ents {
			target, err := os.Readlink(fdDir + "/" + e.Name())
			switch {
			case err != nil:
			case target == path:
				return true
			case target == flockPath:
				if fd, err := strconv.Atoi(e.Name()); err == nil {
					flockFDs = append(flockFDs, fd)
				}
			}
		}
	}
	for _, fd := range flockFDs {
		h := f.probe(pid, fd)
		if h == nil {
			continue
		}
		f.mu.Lock()
		held := false
		for k, hd := range f.holds {
			if k.name == name && hd.h == h {
				held = true
			}
		}
		f.mu.Unlock()
		if held {
			return true
		}
	}
	f.mu.Lock()
	var pids []uint32
	for k, hd := range f.holds {
		if k.name == name && !k.flock {
			pids = append(pids, hd.pid)
		}
	}
	f.mu.Unlock()
	if len(pids) == 0 {
		return false
	}
	me := tgid(pid)
	return me != 0 && slices.ContainsFunc(pids, func(p uint32) bool { return tgid(p) == me })
}

// probe finds the flock-view open file behind descriptor fd of thread
// tid's process: it takes a copy of the descriptor (pidfd_getfd) and
// fsyncs it from a thread of its own, whose FSYNC request names the
// handle. It returns nil if that fails (no permission, the descriptor is
// gone). Closing the copy sends a FLUSH with this process as the owner,
// which drops nothing, and the RELEASE if the copy was the last reference.
func (f *lockFS) probe(tid uint32, fd int) *flockHandle {
	pidfd, err := unix.PidfdOpen(tgid(tid), 0)
	if err != nil {
		return nil
	}
	defer unix.Close(pidfd)
	dup, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return nil
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	me := uint32(unix.Gettid())
	ch := make(chan *flockHandle, 1)
	f.probes.Store(me, ch)
	defer f.probes.Delete(me)
	unix.Fsync(dup)
	unix.Close(dup)
	select {
	case h := <-ch:
		return h
	default:
		return nil
	}
}

// tgid returns the process id of thread tid, or 0.
func tgid(tid uint32) int {
	b, err := os.ReadFile("/proc/" + strconv.FormatUint(uint64(tid), 10) + "/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "Tgid:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// describe is the content of a held lock file.
func (f *lockFS) describe(g mutex.Grant) []byte {
	return fmt.Appendf(nil, "%d\nholder %s\nlock %s\n", g.Token, f.locker.Node(), g.Lock)
}
