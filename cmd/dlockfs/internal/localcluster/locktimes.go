package localcluster

import (
	"context"
	"sync"
	"time"

	"github.com/dlockfs/dlockfs/mutex"
	"github.com/dlockfs/dlockfs/mutex/peer"
)

// LockTimes records when the mounts' file systems call Lock (and when it
// returns) and Unlock on their peers: the bench's view of the hot path
// between a FUSE OPEN and the lock round, and of when the kernel's
// asynchronous RELEASE arrives. A cluster records only with
// Options.LockTimes set, and only between Start and Stop: a mount without
// it calls the peer directly.
type LockTimes struct {
	mu      sync.Mutex
	on      bool
	locks   []LockEvent
	unlocks []UnlockEvent
}

// LockEvent is one Lock call by a mount's file system.
type LockEvent struct {
	Peer     int   // index in Cluster.Peers
	Called   int64 // Unix ns: the file system called Lock (the OPEN reached it)
	Returned int64 // Unix ns: Lock returned
	OK       bool  // granted
}

// UnlockEvent is one Unlock call by a mount's file system: the kernel's
// RELEASE of a lock file reached it.
type UnlockEvent struct {
	Peer int
	At   int64 // Unix ns
}

// lockTimesCap bounds what one recording keeps.
const lockTimesCap = 1 << 20

// Start forgets what was recorded and starts recording.
func (t *LockTimes) Start() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.on = true
	t.locks, t.unlocks = t.locks[:0], t.unlocks[:0]
}

// Stop stops recording and returns what was recorded, in call order.
func (t *LockTimes) Stop() ([]LockEvent, []UnlockEvent) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.on = false
	locks := append([]LockEvent(nil), t.locks...)
	unlocks := append([]UnlockEvent(nil), t.unlocks...)
	return locks, unlocks
}

// Unlocks is the number of Unlock calls recorded so far.
func (t *LockTimes) Unlocks() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.unlocks)
}

func (t *LockTimes) addLock(e LockEvent) {
	t.mu.Lock()
	if t.on && len(t.locks) < lockTimesCap {
		t.locks = append(t.locks, e)
	}
	t.mu.Unlock()
}

func (t *LockTimes) addUnlock(e UnlockEvent) {
	t.mu.Lock()
	if t.on && len(t.unlocks) < lockTimesCap {
		t.unlocks = append(t.unlocks, e)
	}
	t.mu.Unlock()
}

// timedLocker is a peer whose Lock and Unlock are recorded in a LockTimes;
// everything else (TryLock, LockShared, Revoked, status...) is the peer's.
type timedLocker struct {
	*peer.Peer
	idx   int
	times *LockTimes
}

// Lock is Peer.Lock, recorded.
func (l *timedLocker) Lock(ctx context.Context, name string) (mutex.Grant, error) {
	called := time.Now().UnixNano()
	g, err := l.Peer.Lock(ctx, name)
	l.times.addLock(LockEvent{Peer: l.idx, Called: called, Returned: time.Now().UnixNano(), OK: err == nil})
	return g, err
}

// Unlock is Peer.Unlock, recorded at its call.
func (l *timedLocker) Unlock(g mutex.Grant) error {
	l.times.addUnlock(UnlockEvent{Peer: l.idx, At: time.Now().UnixNano()})
	return l.Peer.Unlock(g)
}
