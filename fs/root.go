package fs

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/dlockfs/dlockfs/mutex"
)

// File modes.
const (
	rootMode   = 0o755
	lockMode   = 0o666
	statusMode = 0o444
)

// Stable inode numbers of the fixed files (named locks get automatic ones).
const (
	lockIno   = 2
	statusIno = 3
	flockIno  = 4
)

// lockFS is the state shared by every node of one mount.
type lockFS struct {
	locker Locker
	shared SharedLocker // locker, if it grants shared holds; else nil
	root   *rootNode
	dir    string // the mount point
	log    *slog.Logger
	uid    uint32
	gid    uint32
	mtime  time.Time // reported as every file's times
	// statusLen is the size of the last .status rendered (status.go),
	// which a lookup of .status reports.
	statusLen atomic.Uint64

	// names decides which lock names are listed, and holds their
	// inodes (see nameTable; its lock is a leaf).
	names nameTable

	// mu guards open, holds and holders. Lock order: mu, then
	// names.mu if at all (a leaf). mu is never held across a Locker
	// call that waits (Lock, TryLock, Unlock; Revoked does not) or a
	// call into go-fuse.
	mu sync.Mutex
	// open holds every handle whose grant is not yet given back.
	open map[*lockHandle]struct{}
	// holds are the locks taken by file-lock calls in the flock view.
	holds map[holdKey]*hold
	// holders counts, per lock name, the grants held here (open handles
	// and holds); entries at zero are deleted.
	holders map[string]int
	// flushing maps a FLUSH request's cancel channel to its lock owner.
	flushing sync.Map
	// probes maps a daemon thread id to the channel on which the FSYNC
	// of its probe names the open file (see probe).
	probes sync.Map
	// flushMode is how the root view's lock files answer FLUSH; tests
	// and benchmarks change it before any open.
	flushMode flushMode
}

// flushMode is how root-view lock files avoid or answer FLUSH.
type flushMode uint8

const (
	noFlush     flushMode = iota // FOPEN_NOFLUSH: the kernel sends none (default)
	flushOK                      // FLUSH is sent and answered 0
	flushENOSYS                  // answered ENOSYS: FLUSH stops for the whole mount (breaks POSIX locks in flock/)
)

// ValidName reports why name cannot be the name of a lock in a mount, or
// nil: mutex.ValidLockName's rules, and neither a name starting with '.'
// (.status) nor FlockDir, which a mount reserves. It is the one check of a
// lock name, for the mount and for the programs that open one.
func ValidName(name string) error {
	if len(name) > mutex.MaxNameLen {
		return fmt.Errorf("%w: %.20q...", errNameTooLong, name)
	}
	if name == FlockDir {
		return fmt.Errorf("%w: %q is the flock view", errReserved, name)
	}
	if err := mutex.ValidLockName(name); err != nil {
		return err
	}
	if strings.HasPrefix(name, ".") {
		return fmt.Errorf("%w: %q", errReserved, name)
	}
	return nil
}

// setAttr fills a regular file's attributes.
func (f *lockFS) setAttr(out *fuse.Attr, mode uint32) {
	out.Mode = syscall.S_IFREG | mode
	out.Size = 0
	out.Nlink = 1
	out.Owner = fuse.Owner{Uid: f.uid, Gid: f.gid}
	out.SetTimes(&f.mtime, &f.mtime, &f.mtime)
}

// acquire waits for (or, with O_NONBLOCK, tries) the lock name for one
// opener and returns the handle that holds it.
func (f *lockFS) acquire(fctx context.Context, name string, flags uint32) (*lockHandle, error) {
	g, err := f.grab(fctx, name, false, flags&syscall.O_NONBLOCK != 0)
	if err != nil {
		return nil, err
	}
	h := &lockHandle{fs: f, name: name, grant: g, content: f.describe(g)}
	if c, ok := fuse.FromContext(fctx); ok {
		h.pid = c.Pid
	}
	f.mu.Lock()
	f.open[h] = struct{}{}
	f.holders[name]++
	f.mu.Unlock()
	return h, nil
}

// grab takes lock name (shared, if asked and the Locker can) for one
// caller: it tries it (try) or waits for it. A wait by a process that
// already holds the lock here fails with EDEADLK instead of waiting for
// itself. The caller records the grant and gives it back with ungrab.
func (f *lockFS) grab(fctx context.Context, name string, shared, try bool) (mutex.Grant, error) {
	f.names.addUse(name)
	f.mu.Lock()
	busy := f.holders[name] > 0
	f.mu.Unlock()
	if busy && !try {
		if c, ok := fuse.FromContext(fctx); ok && f.selfHeld(c.Pid, name) {
			f.names.dropUse(name)
			f.log.Debug("wait refused: the caller already holds the lock", "lock", name, "pid", c.Pid)
			return mutex.Grant{}, fmt.Errorf("lock %q: %w", name, errDeadlock)
		}
	}

	// The Locker waits on the request's own context: context.WithCancel
	// of a go-fuse context (not one of the context package's) would start
	// a goroutine per call to carry its cancellation, a scheduling round
	// on the hot path. go-fuse recycles the request (and its cancel
	// channel) once the request returns, so the Locker must not keep fctx
	// beyond the call (Peer does not).
	var g mutex.Grant
	var err error
	switch {
	case shared && try:
		g, err = f.shared.TryLockShared(fctx, name)
	case shared:
		g, err = f.shared.LockShared(fctx, name)
	case try:
		g, err = f.locker.TryLock(fctx, name)
	default:
		g, err = f.locker.Lock(fctx, name)
	}
	if err == nil && fctx.Err() != nil {
		// The grant raced an interrupt. Keep it: the call succeeds. If
		// the signal kills the caller, the kernel releases its open
		// file at once (every successful OPEN gets its RELEASE); if the
		// caller handles the signal, it holds the lock it waited for.
		// (Failing with EINTR would instead send a Go program, whose
		// runtime signals interrupt opens spuriously, to the back of
		// the queue.)
		f.log.Debug("grant raced an interrupt; kept", "lock", name, "token", g.Token)
	}
	if err != nil {
		f.names.dropUse(name)
		switch errno(err) {
		case syscall.EINTR:
			f.log.Debug("wait interrupted", "lock", name)
		case syscall.EAGAIN:
			f.log.Debug("try-lock: busy", "lock", name)
		default:
			f.log.Warn("lock failed", "lock", name, "err", err)
		}
		return mutex.Grant{}, err
	}
	f.log.Debug("lock granted", "lock", name, "token", g.Token, "shared", shared)
	return g, nil
}

// ungrab gives back a grant of grab.
func (f *lockFS) ungrab(name string, g mutex.Grant) {
	f.names.dropUse(name)
	if err := f.locker.Unlock(g); err != nil {
		f.log.Warn("unlock", "lock", name, "token", g.Token, "err", err)
		return
	}
	f.log.Debug("lock released", "lock", name, "token", g.Token)
}

// release gives back the grant of h, once. Called from RELEASE and, for
// handles the kernel never released, when the mount ends.
func (f *lockFS) release(h *lockHandle) {
	f.mu.Lock()
	if _, ok := f.open[h]; !ok {
		f.mu.Unlock()
		return
	}
	delete(f.open, h)
	f.unhold(h.name)
	f.mu.Unlock()
	f.ungrab(h.name, h.grant)
}

// unhold drops one holder of name; f.mu must be held.
func (f *lockFS) unhold(name string) {
	if f.holders[name]--; f.holders[name] <= 0 {
		delete(f.holders, name)
	}
}

// rootNode is the mount's root directory.
type rootNode struct {
	gofs.Inode
	fs *lockFS

	// Set by OnAdd.
	status *gofs.Inode
	flock  *gofs.Inode // the flock view
}

func newRoot(locker Locker, dir string, log *slog.Logger) *rootNode {
	shared, _ := locker.(SharedLocker)
	r := &rootNode{
		fs: &lockFS{
			locker:  locker,
			shared:  shared,
			dir:     dir,
			log:     log,
			uid:     uint32(os.Getuid()),
			gid:     uint32(os.Getgid()),
			mtime:   time.Now(),
			names:   newNameTable(),
			open:    make(map[*lockHandle]struct{}),
			holds:   make(map[holdKey]*hold),
			holders: make(map[string]int),
		},
	}
	r.fs.root = r
	return r
}

// used marks name as used here: listed until unlinked.
func (r *rootNode) used(name string) { r.fs.names.markMade(name) }

// OnAdd makes the fixed files.
func (r *rootNode) OnAdd(ctx context.Context) {
	r.status = r.NewPersistentInode(ctx, &statusNode{fs: r.fs}, gofs.StableAttr{Mode: syscall.S_IFREG, Ino: statusIno})
	r.AddChild(StatusFile, r.status, true)
	lock := r.NewPersistentInode(ctx, &lockNode{fs: r.fs, name: LockFile}, gofs.StableAttr{Mode: syscall.S_IFREG, Ino: lockIno})
	r.AddChild(LockFile, lock, true)
	r.fs.names.inode(LockFile, true, func() *gofs.Inode { return lock })
	r.flock = r.NewPersistentInode(ctx, &flockDirNode{root: r}, gofs.StableAttr{Mode: syscall.S_IFDIR, Ino: flockIno})
	r.AddChild(FlockDir, r.flock, true)
}

// OnForget runs when the mount ends: grants whose RELEASE never came (the
// connection was aborted) are given back.
func (r *rootNode) OnForget() {
	r.fs.mu.Lock()
	hs := make([]*lockHandle, 0, len(r.fs.open))
	for h := range r.fs.open {
		hs = append(hs, h)
	}
	keys := make([]holdKey, 0, len(r.fs.holds))
	for k := range r.fs.holds {
		keys = append(keys, k)
	}
	r.fs.mu.Unlock()
	for _, h := range hs {
		r.fs.release(h)
	}
	for _, k := range keys {
		r.fs.dropHold(k)
	}
}

// node returns the inode of lock name, making it if needed; create marks
// it as made here (listed until unlinked).
func (r *rootNode) node(ctx context.Context, name string, create bool) *gofs.Inode {
	return r.fs.names.inode(name, create, func() *gofs.Inode {
		return r.NewPersistentInode(ctx, &lockNode{fs: r.fs, name: name}, gofs.StableAttr{Mode: syscall.S_IFREG})
	})
}

// known returns the inode of name if it is a known lock name: one made
// here, in use here, or known to the Locker.
func (r *rootNode) known(ctx context.Context, name string) *gofs.Inode {
	if ch := r.fs.names.get(name); ch != nil {
		return ch
	}
	if ValidName(name) != nil || !slices.Contains(r.fs.locker.Names(), name) {
		return nil
	}
	return r.node(ctx, name, false)
}

// Getattr describes the root directory.
func (r *rootNode) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFDIR | rootMode
	out.Nlink = 2
	out.Owner = fuse.Owner{Uid: r.fs.uid, Gid: r.fs.gid}
	out.SetTimes(&r.fs.mtime, &r.fs.mtime, &r.fs.mtime)
	return 0
}

// Setattr accepts time changes (touch) and refuses the rest.
func (r *rootNode) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if in.Valid&(fuse.FATTR_MODE|fuse.FATTR_UID|fuse.FATTR_GID|fuse.FATTR_SIZE) != 0 {
		return errno(errNotPermitted)
	}
	return r.Getattr(ctx, f, out)
}

// Lookup finds the fixed files and any valid lock name: every name exists
// on every peer, whether or not it was made here.
func (r *rootNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	switch name {
	case StatusFile:
		r.fs.setAttr(&out.Attr, statusMode)
		out.Attr.Size = r.fs.lookupStatusSize()
		return r.status, 0
	case FlockDir:
		out.Mode = syscall.S_IFDIR | rootMode
		out.Nlink = 2
		out.Owner = fuse.Owner{Uid: r.fs.uid, Gid: r.fs.gid}
		out.SetTimes(&r.fs.mtime, &r.fs.mtime, &r.fs.mtime)
		return r.flock, 0
	}
	if err := ValidName(name); err != nil {
		return nil, lookupErrno(err)
	}
	r.fs.setAttr(&out.Attr, lockMode)
	return r.node(ctx, name, false), 0
}

// listNames returns the sorted lock names a listing shows, with their
// inode numbers: lock, the names made here, those in use here and those the
// Locker knows (in use in the cluster). It forgets the inodes of the others.
func (r *rootNode) listNames(ctx context.Context) []listed {
	names := r.fs.locker.Names()
	r.fs.names.prune(names)
	for _, name := range names {
		if ValidName(name) == nil {
			r.node(ctx, name, false)
		}
	}
	return r.fs.names.list()
}

// Readdir lists ., .., .status, flock/ and the lock names (listNames).
func (r *rootNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	names := r.listNames(ctx)
	entries := make([]fuse.DirEntry, 0, len(names)+4)
	entries = append(entries,
		fuse.DirEntry{Name: ".", Mode: syscall.S_IFDIR, Ino: 1},
		fuse.DirEntry{Name: "..", Mode: syscall.S_IFDIR, Ino: 1},
		fuse.DirEntry{Name: StatusFile, Mode: syscall.S_IFREG, Ino: statusIno},
		fuse.DirEntry{Name: FlockDir, Mode: syscall.S_IFDIR, Ino: flockIno})
	for _, n := range names {
		entries = append(entries, fuse.DirEntry{Name: n.name, Mode: syscall.S_IFREG, Ino: n.ino})
	}
	return gofs.NewListDirStream(entries), 0
}

// Getlk, Setlk and Setlkw on the root directory are refused (EISDIR): a
// directory is not a lock; lock MOUNT/lock or MOUNT/flock/NAME.
func (r *rootNode) Getlk(ctx context.Context, f gofs.FileHandle, owner uint64, lk *fuse.FileLock, flags uint32, out *fuse.FileLock) syscall.Errno {
	return errno(errIsDir)
}

func (r *rootNode) Setlk(ctx context.Context, f gofs.FileHandle, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return errno(errIsDir)
}

func (r *rootNode) Setlkw(ctx context.Context, f gofs.FileHandle, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	return errno(errIsDir)
}

// Create makes lock name (if new) and opens it: like Open, it waits for the
// lock (or tries it, with O_NONBLOCK).
func (r *rootNode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	if name == StatusFile || name == FlockDir {
		return nil, nil, 0, errno(errExists)
	}
	if err := ValidName(name); err != nil {
		return nil, nil, 0, errno(err)
	}
	if flags&syscall.O_EXCL != 0 && r.known(ctx, name) != nil {
		return nil, nil, 0, errno(errExists)
	}
	ch := r.node(ctx, name, true)
	h, err := r.fs.acquire(ctx, name, flags)
	if err != nil {
		return nil, nil, 0, errno(err)
	}
	r.fs.setAttr(&out.Attr, lockMode)
	return ch, h, fuse.FOPEN_DIRECT_IO, 0
}

// Mknod makes lock name without opening it (mknod(2) of a regular file);
// other file types are refused.
func (r *rootNode) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if mode&syscall.S_IFMT != syscall.S_IFREG {
		return nil, errno(errNotPermitted)
	}
	if name == StatusFile || name == FlockDir {
		return nil, errno(errExists)
	}
	if err := ValidName(name); err != nil {
		return nil, errno(err)
	}
	if r.known(ctx, name) != nil {
		return nil, errno(errExists)
	}
	ch := r.node(ctx, name, true)
	r.fs.setAttr(&out.Attr, lockMode)
	return ch, 0
}

// Unlink forgets an idle lock name here: it leaves the listing (unless
// the Locker knows it), but like every valid name it can still be opened.
// The fixed files cannot be removed, and a name held or awaited through
// this mount is busy.
func (r *rootNode) Unlink(ctx context.Context, name string) syscall.Errno {
	if name == LockFile || name == StatusFile || name == FlockDir {
		return errno(errNotPermitted)
	}
	return errno(r.fs.names.unlink(name))
}

// Rmdir: flock/ cannot be removed, and there are no other directories.
func (r *rootNode) Rmdir(ctx context.Context, name string) syscall.Errno {
	if name == FlockDir {
		return errno(errNotPermitted)
	}
	return errno(errNotDir)
}

// Mkdir is refused.
func (r *rootNode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, errno(errNotPermitted)
}

// Rename is refused.
func (r *rootNode) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	return errno(errNotPermitted)
}

// Link is refused.
func (r *rootNode) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, errno(errNotPermitted)
}

// Symlink is refused.
func (r *rootNode) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, errno(errNotPermitted)
}

// Tmpfile (O_TMPFILE) is refused.
func (r *rootNode) Tmpfile(ctx context.Context, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, errno(errNotPermitted)
}
