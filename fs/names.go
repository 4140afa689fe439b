package fs

import (
	"cmp"
	"slices"
	"sync"

	gofs "github.com/hanwen/go-fuse/v2/fs"
)

// nameTable decides which lock names the mount lists (in the root and in
// flock/) and holds their inodes. A name is listed while it is made here
// (created, mknod'ed or opened through this mount, until unlinked), in use
// here (an opener waits for or holds it through this mount) or known to the
// Locker (in use in the cluster).
//
// It owns every fact that decides this, under its one mutex, so that no
// other lock is needed to decide it. mu is a leaf: no other lock of this
// package is taken while it is held (only go-fuse's own, inside
// NewPersistentInode and ForgetPersistent), so it may be taken under any
// of them (the tests' idle check takes it under lockFS.mu).
type nameTable struct {
	mu sync.Mutex
	// inodes are the root's inodes of lock names: the listed names, and
	// names looked up since the last prune.
	inodes map[string]*gofs.Inode
	// made marks the names made here: listed until unlinked.
	made map[string]bool
	// use counts, per name, the openers waiting for or holding it
	// through this mount (entries at zero are deleted).
	use map[string]int
}

func newNameTable() nameTable {
	return nameTable{inodes: map[string]*gofs.Inode{}, made: map[string]bool{}, use: map[string]int{}}
}

// get returns the inode of name if there is one.
func (t *nameTable) get(name string) *gofs.Inode {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.inodes[name]
}

// inode returns the inode of name, made by mk if there is none; made marks
// the name as made here.
func (t *nameTable) inode(name string, made bool, mk func() *gofs.Inode) *gofs.Inode {
	t.mu.Lock()
	defer t.mu.Unlock()
	if made {
		t.made[name] = true
	}
	if ch := t.inodes[name]; ch != nil {
		return ch
	}
	ch := mk()
	t.inodes[name] = ch
	return ch
}

// markMade marks name as made here.
func (t *nameTable) markMade(name string) {
	t.mu.Lock()
	t.made[name] = true
	t.mu.Unlock()
}

// addUse counts one more opener of name through this mount.
func (t *nameTable) addUse(name string) {
	t.mu.Lock()
	t.use[name]++
	t.mu.Unlock()
}

// dropUse counts one opener of name fewer.
func (t *nameTable) dropUse(name string) {
	t.mu.Lock()
	if t.use[name]--; t.use[name] <= 0 {
		delete(t.use, name)
	}
	t.mu.Unlock()
}

// idle reports whether no opener uses any name through this mount.
func (t *nameTable) idle() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.use) == 0
}

// prune forgets the inodes of the names that are no longer listed: not made
// here, not in use here, and not in locker (the Locker's names; its core
// forgets idle locks), so that the table stays bounded.
func (t *nameTable) prune(locker []string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for name, ch := range t.inodes {
		if t.made[name] || t.use[name] > 0 || slices.Contains(locker, name) {
			continue
		}
		delete(t.inodes, name)
		ch.ForgetPersistent()
	}
}

// unlink forgets name: errNoEntry if it has no inode, errBusy if it is in
// use here.
func (t *nameTable) unlink(name string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	ch := t.inodes[name]
	if ch == nil {
		return errNoEntry
	}
	if t.use[name] > 0 {
		return errBusy
	}
	delete(t.inodes, name)
	delete(t.made, name)
	ch.ForgetPersistent()
	return nil
}

// listed is a name of a listing and its inode number.
type listed struct {
	name string
	ino  uint64
}

// list returns the names with an inode, sorted.
func (t *nameTable) list() []listed {
	t.mu.Lock()
	out := make([]listed, 0, len(t.inodes))
	for name, ch := range t.inodes {
		out = append(out, listed{name, ch.StableAttr().Ino})
	}
	t.mu.Unlock()
	slices.SortFunc(out, func(a, b listed) int { return cmp.Compare(a.name, b.name) })
	return out
}
