package fs

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/dlockfs/dlockfs/mutex"
)

// fakeLocker is an in-process SharedLocker: a FIFO readers–writers lock
// per name (a shared request queued behind an exclusive one waits), with
// tokens that rise across all names, honouring ctx.
type fakeLocker struct {
	node string

	mu       sync.Mutex
	locks    map[string]*fakeLock
	extra    []string // names "known from peers"
	lastID   mutex.OpenerID
	token    uint64
	grants   int
	unlocks  int
	badUnlck int
	statuses int // StatusJSON calls
	// raceGrant makes a cancelled Lock wait for its grant and return it
	// anyway: the grant races the interrupt.
	raceGrant   bool
	cancelsSeen int
	// revoked: grants ended by revoke, as a peer's lapsed lease does.
	revoked map[mutex.OpenerID]bool
}

type fakeLock struct {
	holder  mutex.OpenerID            // the exclusive holder; 0: none
	readers map[mutex.OpenerID]uint64 // shared holders and their tokens
	token   uint64
	queue   []*fakeWaiter
}

type fakeWaiter struct {
	id     mutex.OpenerID
	shared bool
	ch     chan mutex.Grant // buffered, 1
}

// busy reports whether l is held (exclusively or shared).
func (l *fakeLock) busy() bool { return l.holder != 0 || len(l.readers) > 0 }

func newFake() *fakeLocker {
	return &fakeLocker{node: "fakenode", locks: make(map[string]*fakeLock)}
}

// get returns the lock name; f.mu must be held.
func (f *fakeLocker) get(name string) *fakeLock {
	l := f.locks[name]
	if l == nil {
		l = &fakeLock{readers: make(map[mutex.OpenerID]uint64)}
		f.locks[name] = l
	}
	return l
}

// dispatch grants the lock to the head of its queue while it can: an
// exclusive request when nobody holds it, shared ones while no exclusive
// holder; f.mu must be held.
func (f *fakeLocker) dispatch(name string, l *fakeLock) {
	for len(l.queue) > 0 {
		w := l.queue[0]
		if l.holder != 0 || (!w.shared && len(l.readers) > 0) {
			return
		}
		l.queue = l.queue[1:]
		f.token++
		f.grants++
		l.token = f.token
		if w.shared {
			l.readers[w.id] = f.token
		} else {
			l.holder = w.id
		}
		w.ch <- mutex.Grant{Opener: w.id, Lock: name, Token: f.token}
	}
}

func (f *fakeLocker) Lock(ctx context.Context, name string) (mutex.Grant, error) {
	return f.lock(ctx, name, false)
}

func (f *fakeLocker) LockShared(ctx context.Context, name string) (mutex.Grant, error) {
	return f.lock(ctx, name, true)
}

func (f *fakeLocker) TryLock(ctx context.Context, name string) (mutex.Grant, error) {
	return f.tryLock(ctx, name, false)
}

func (f *fakeLocker) TryLockShared(ctx context.Context, name string) (mutex.Grant, error) {
	return f.tryLock(ctx, name, true)
}

func (f *fakeLocker) lock(ctx context.Context, name string, shared bool) (mutex.Grant, error) {
	if err := mutex.ValidLockName(name); err != nil {
		return mutex.Grant{}, err
	}
	f.mu.Lock()
	l := f.get(name)
	f.lastID++
	w := &fakeWaiter{id: f.lastID, shared: shared, ch: make(chan mutex.Grant, 1)}
	l.queue = append(l.queue, w)
	f.dispatch(name, l)
	f.mu.Unlock()

	select {
	case g := <-w.ch:
		return g, nil
	case <-ctx.Done():
	}
	f.mu.Lock()
	if f.raceGrant {
		f.cancelsSeen++
		f.mu.Unlock()
		return <-w.ch, nil
	}
	if i := slices.Index(l.queue, w); i >= 0 {
		l.queue = slices.Delete(l.queue, i, i+1)
		f.mu.Unlock()
		return mutex.Grant{}, fmt.Errorf("fake lock %q: %w", name, ctx.Err())
	}
	f.mu.Unlock()
	// Granted while cancelling: give it back.
	if err := f.Unlock(<-w.ch); err != nil {
		return mutex.Grant{}, err
	}
	return mutex.Grant{}, fmt.Errorf("fake lock %q: %w", name, ctx.Err())
}

func (f *fakeLocker) tryLock(ctx context.Context, name string, shared bool) (mutex.Grant, error) {
	if err := mutex.ValidLockName(name); err != nil {
		return mutex.Grant{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	l := f.get(name)
	if l.holder != 0 || len(l.queue) > 0 || (!shared && len(l.readers) > 0) {
		return mutex.Grant{}, fmt.Errorf("fake trylock %q: %w", name, mutex.ErrLocked)
	}
	f.lastID++
	w := &fakeWaiter{id: f.lastID, shared: shared, ch: make(chan mutex.Grant, 1)}
	l.queue = append(l.queue, w)
	f.dispatch(name, l)
	return <-w.ch, nil
}

func (f *fakeLocker) Unlock(g mutex.Grant) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.revoked[g.Opener] {
		delete(f.revoked, g.Opener)
		return nil // as the peer: the hold ended already
	}
	l := f.locks[g.Lock]
	switch {
	case l != nil && l.readers[g.Opener] == g.Token && g.Token != 0:
		delete(l.readers, g.Opener)
	case l == nil || l.holder != g.Opener || l.token != g.Token:
		f.badUnlck++
		return fmt.Errorf("fake unlock %q: opener %d does not hold it", g.Lock, g.Opener)
	default:
		l.holder = 0
	}
	f.unlocks++
	f.dispatch(g.Lock, l)
	return nil
}

func (f *fakeLocker) Node() string { return f.node }

// Revoked reports whether revoke ended g.
func (f *fakeLocker) Revoked(g mutex.Grant) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.revoked[g.Opener]
}

// revoke ends the exclusive hold of name without an Unlock, as a lapse of
// the peer's lease does, and grants the lock to the next waiter. It
// returns the revoked opener (0: the lock was not held).
func (f *fakeLocker) revoke(name string) mutex.OpenerID {
	f.mu.Lock()
	defer f.mu.Unlock()
	l := f.locks[name]
	if l == nil || l.holder == 0 {
		return 0
	}
	if f.revoked == nil {
		f.revoked = map[mutex.OpenerID]bool{}
	}
	op := l.holder
	f.revoked[op] = true
	l.holder = 0
	f.dispatch(name, l)
	return op
}

// Names reports the locks held or awaited, and the extra names, as the
// core reports only the locks in use (it forgets idle ones).
func (f *fakeLocker) Names() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	names := slices.Clone(f.extra)
	for name, l := range f.locks {
		if l.busy() || len(l.queue) > 0 {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

type fakeLockStatus struct {
	Name    string `json:"name"`
	Holding bool   `json:"holding"`
	Token   uint64 `json:"token"`
	Waiting int    `json:"waiting"`
}

func (f *fakeLocker) StatusJSON() ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.statuses++
	st := struct {
		Node  string           `json:"node"`
		Locks []fakeLockStatus `json:"locks"`
	}{Node: f.node, Locks: []fakeLockStatus{}}
	for _, name := range slices.Sorted(maps.Keys(f.locks)) {
		l := f.locks[name]
		st.Locks = append(st.Locks, fakeLockStatus{name, l.busy(), l.token, len(l.queue)})
	}
	return json.Marshal(st)
}

// state reports whether name is held, its token and how many wait for it.
func (f *fakeLocker) state(name string) (held bool, token uint64, waiting int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l := f.locks[name]
	if l == nil {
		return false, 0, 0
	}
	return l.busy(), l.token, len(l.queue)
}

// readers reports how many shared holders name has.
func (f *fakeLocker) readers(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l := f.locks[name]; l != nil {
		return len(l.readers)
	}
	return 0
}

// counts reports grants, unlocks, bad unlocks and cancels seen in race mode.
func (f *fakeLocker) counts() (grants, unlocks, bad, cancels int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.grants, f.unlocks, f.badUnlck, f.cancelsSeen
}

// statusCalls returns how many times StatusJSON was called.
func (f *fakeLocker) statusCalls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.statuses
}

func (f *fakeLocker) setRaceGrant(on bool) {
	f.mu.Lock()
	f.raceGrant = on
	f.mu.Unlock()
}

func (f *fakeLocker) addExtra(names ...string) {
	f.mu.Lock()
	f.extra = append(f.extra, names...)
	f.mu.Unlock()
}

// dropExtra forgets names "known from peers", as the core forgets an idle
// lock.
func (f *fakeLocker) dropExtra(names ...string) {
	f.mu.Lock()
	f.extra = slices.DeleteFunc(f.extra, func(n string) bool { return slices.Contains(names, n) })
	f.mu.Unlock()
}
