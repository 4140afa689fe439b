package fs

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
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
)

// lockFS is the state shared by every node of one mount.
type lockFS struct {
	locker Locker
	log    *slog.Logger
	uid    uint32
	gid    uint32
	mtime  time.Time // reported as every file's times

	mu sync.Mutex
	// use counts, per lock name, the openers waiting for or holding it
	// through this mount (entries at zero are deleted).
	use map[string]int
	// open holds every handle whose grant is not yet given back.
	open map[*lockHandle]struct{}
}

// validName reports why name cannot be a lock name, or nil.
func validName(name string) error {
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
	f.mu.Lock()
	f.use[name]++
	f.mu.Unlock()

	// go-fuse recycles the request (and its cancel channel) once the
	// request returns: give the Locker a context of its own.
	ctx, cancel := context.WithCancel(fctx)
	var g mutex.Grant
	var err error
	if flags&syscall.O_NONBLOCK != 0 {
		g, err = f.locker.TryLock(ctx, name)
	} else {
		g, err = f.locker.Lock(ctx, name)
	}
	cancel()
	if err == nil && fctx.Err() != nil {
		// The grant raced an interrupt. Keep it: the open succeeds. If
		// the signal kills the opener, the kernel releases the new
		// descriptor at once (every successful OPEN gets its RELEASE);
		// if the opener handles the signal, it holds the lock it waited
		// for. (Failing with EINTR would instead send a Go program,
		// whose runtime signals interrupt opens spuriously, to the back
		// of the queue.)
		f.log.Debug("grant raced an interrupt; kept", "lock", name, "token", g.Token)
	}

	var h *lockHandle
	if err == nil {
		h = &lockHandle{fs: f, name: name, grant: g,
			content: fmt.Appendf(nil, "%d\nholder %s\nlock %s\n", g.Token, f.locker.Node(), name)}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		f.unuse(name)
		switch errno(err) {
		case syscall.EINTR:
			f.log.Debug("wait interrupted", "lock", name)
		case syscall.EAGAIN:
			f.log.Debug("try-lock: busy", "lock", name)
		default:
			f.log.Warn("lock failed", "lock", name, "err", err)
		}
		return nil, err
	}
	f.open[h] = struct{}{}
	f.log.Debug("lock granted", "lock", name, "token", g.Token)
	return h, nil
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
	f.unuse(h.name)
	f.mu.Unlock()
	if err := f.locker.Unlock(h.grant); err != nil {
		f.log.Warn("unlock", "lock", h.name, "token", h.grant.Token, "err", err)
		return
	}
	f.log.Debug("lock released", "lock", h.name, "token", h.grant.Token)
}

// unuse drops one use of name; f.mu must be held.
func (f *lockFS) unuse(name string) {
	if f.use[name]--; f.use[name] <= 0 {
		delete(f.use, name)
	}
}

// rootNode is the mount's root directory.
type rootNode struct {
	gofs.Inode
	fs *lockFS

	mu     sync.Mutex
	names  map[string]*gofs.Inode // lock names with an inode here
	made   map[string]bool        // of those, the names made here (and lock)
	hidden map[string]bool        // names unlinked here (until created again)
	status *gofs.Inode
}

func newRoot(locker Locker, log *slog.Logger) *rootNode {
	return &rootNode{
		fs: &lockFS{
			locker: locker,
			log:    log,
			uid:    uint32(os.Getuid()),
			gid:    uint32(os.Getgid()),
			mtime:  time.Now(),
			use:    make(map[string]int),
			open:   make(map[*lockHandle]struct{}),
		},
		names:  make(map[string]*gofs.Inode),
		made:   make(map[string]bool),
		hidden: make(map[string]bool),
	}
}

// OnAdd makes the fixed files.
func (r *rootNode) OnAdd(ctx context.Context) {
	r.status = r.NewPersistentInode(ctx, &statusNode{fs: r.fs}, gofs.StableAttr{Mode: syscall.S_IFREG, Ino: statusIno})
	r.AddChild(StatusFile, r.status, true)
	lock := r.NewPersistentInode(ctx, &lockNode{fs: r.fs, name: LockFile}, gofs.StableAttr{Mode: syscall.S_IFREG, Ino: lockIno})
	r.AddChild(LockFile, lock, true)
	r.names[LockFile] = lock
	r.made[LockFile] = true
}

// OnForget runs when the mount ends: grants whose RELEASE never came (the
// connection was aborted) are given back.
func (r *rootNode) OnForget() {
	r.fs.mu.Lock()
	hs := make([]*lockHandle, 0, len(r.fs.open))
	for h := range r.fs.open {
		hs = append(hs, h)
	}
	r.fs.mu.Unlock()
	for _, h := range hs {
		r.fs.release(h)
	}
}

// node returns the inode of lock name, making it if needed. create (a
// name made here) undoes an earlier unlink; otherwise an unlinked name
// stays hidden and node returns nil.
func (r *rootNode) node(ctx context.Context, name string, create bool) *gofs.Inode {
	r.mu.Lock()
	defer r.mu.Unlock()
	if create {
		delete(r.hidden, name)
		r.made[name] = true
	} else if r.hidden[name] {
		return nil
	}
	if ch := r.names[name]; ch != nil {
		return ch
	}
	ch := r.NewPersistentInode(ctx, &lockNode{fs: r.fs, name: name}, gofs.StableAttr{Mode: syscall.S_IFREG})
	r.names[name] = ch
	return ch
}

// known returns the inode of name if it is a known lock name.
func (r *rootNode) known(ctx context.Context, name string) *gofs.Inode {
	r.mu.Lock()
	ch := r.names[name]
	r.mu.Unlock()
	if ch != nil {
		return ch
	}
	if validName(name) != nil {
		return nil
	}
	names := r.fs.locker.Names()
	if !slices.Contains(names, name) {
		return nil
	}
	r.prune(names)
	return r.node(ctx, name, false)
}

// prune forgets the inodes of names not made here that the Locker no longer
// knows (the core forgets idle locks) and that nobody here waits for or
// holds: the listing shows the names in use, and the map stays bounded.
func (r *rootNode) prune(locker []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fs.mu.Lock()
	defer r.fs.mu.Unlock()
	for name, ch := range r.names {
		if r.made[name] || r.fs.use[name] > 0 || slices.Contains(locker, name) {
			continue
		}
		delete(r.names, name)
		ch.ForgetPersistent()
	}
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

// Lookup finds the fixed files, names made here and names the Locker knows.
func (r *rootNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if name == StatusFile {
		r.fs.setAttr(&out.Attr, statusMode)
		return r.status, 0
	}
	ch := r.known(ctx, name)
	if ch == nil {
		return nil, errno(errNoEntry)
	}
	r.fs.setAttr(&out.Attr, lockMode)
	return ch, 0
}

// Readdir lists .status, the names made here and the names the Locker knows.
func (r *rootNode) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	names := r.fs.locker.Names()
	r.prune(names)
	for _, name := range names {
		if validName(name) == nil {
			r.node(ctx, name, false)
		}
	}
	r.mu.Lock()
	entries := make([]fuse.DirEntry, 0, len(r.names)+1)
	entries = append(entries, fuse.DirEntry{Name: StatusFile, Mode: syscall.S_IFREG, Ino: statusIno})
	for name, ch := range r.names {
		entries = append(entries, fuse.DirEntry{Name: name, Mode: syscall.S_IFREG, Ino: ch.StableAttr().Ino})
	}
	r.mu.Unlock()
	slices.SortFunc(entries[1:], func(a, b fuse.DirEntry) int { return strings.Compare(a.Name, b.Name) })
	return gofs.NewListDirStream(entries), 0
}

// Create makes lock name (if new) and opens it: like Open, it waits for the
// lock (or tries it, with O_NONBLOCK).
func (r *rootNode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	if name == StatusFile {
		return nil, nil, 0, errno(errExists)
	}
	if err := validName(name); err != nil {
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
	if err := validName(name); err != nil {
		return nil, errno(err)
	}
	if name == StatusFile || r.known(ctx, name) != nil {
		return nil, errno(errExists)
	}
	ch := r.node(ctx, name, true)
	r.fs.setAttr(&out.Attr, lockMode)
	return ch, 0
}

// Unlink forgets an idle lock name: it disappears from this mount (even if
// the Locker still knows it) until it is created here again. The fixed
// files cannot be removed, and a name held or awaited through this mount
// is busy.
func (r *rootNode) Unlink(ctx context.Context, name string) syscall.Errno {
	if name == LockFile || name == StatusFile {
		return errno(errNotPermitted)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	ch := r.names[name]
	if ch == nil {
		return errno(errNoEntry)
	}
	r.fs.mu.Lock()
	busy := r.fs.use[name] > 0
	r.fs.mu.Unlock()
	if busy {
		return errno(errBusy)
	}
	delete(r.names, name)
	delete(r.made, name)
	r.hidden[name] = true
	ch.ForgetPersistent()
	return 0
}

// Rmdir: there are no directories.
func (r *rootNode) Rmdir(ctx context.Context, name string) syscall.Errno {
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
