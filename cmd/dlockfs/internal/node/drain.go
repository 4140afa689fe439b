package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/dlockfs/dlockfs/fs"
	"github.com/dlockfs/dlockfs/mutex"
	"github.com/dlockfs/dlockfs/mutex/peer"
)

// errDrainingCause cancels the requests of local openers that were waiting
// when the drain began.
var errDrainingCause = errors.New("draining")

// drainLocker is the Locker the mount serves: the peer, plus what a
// draining stop needs. It knows the local holds (lock, token, opener's
// PID) and the local requests under way; once draining, it grants no new
// local open (they fail with ESHUTDOWN) and withdraws the waiting ones,
// while the peer goes on answering the other peers. It lives in cmd, not
// in mutex/peer, so the peer's API is unchanged.
type drainLocker struct {
	*peer.Peer

	mu       sync.Mutex
	draining bool
	waiting  map[*waitingOpen]struct{}
	holds    map[mutex.OpenerID]holdInfo
	idle     chan struct{} // closed once draining with no hold left

	metrics *lockMetrics // nil without --metrics
}

var _ fs.Locker = (*drainLocker)(nil)

// waitingOpen is a local Lock or TryLock under way.
type waitingOpen struct {
	cancel context.CancelCauseFunc
}

// holdInfo is one local hold, for the drain's log.
type holdInfo struct {
	lock  string
	token uint64
	pid   uint32 // the opener, 0 if unknown
	since time.Time
}

func newDrainLocker(p *peer.Peer) *drainLocker {
	return &drainLocker{Peer: p, waiting: map[*waitingOpen]struct{}{}, holds: map[mutex.OpenerID]holdInfo{}}
}

// Lock is peer.Lock, refused while draining.
func (d *drainLocker) Lock(ctx context.Context, name string) (mutex.Grant, error) {
	return d.acquire(ctx, name, false)
}

// TryLock is peer.TryLock, refused while draining.
func (d *drainLocker) TryLock(ctx context.Context, name string) (mutex.Grant, error) {
	return d.acquire(ctx, name, true)
}

func (d *drainLocker) acquire(fctx context.Context, name string, try bool) (mutex.Grant, error) {
	start := time.Now()
	g, err := d.acquire1(fctx, name, try)
	if d.metrics != nil {
		outcome := openFailed
		switch {
		case err == nil:
			outcome = openGranted
		case errors.Is(err, syscall.ESHUTDOWN):
			outcome = openDraining
		case errors.Is(err, mutex.ErrLocked):
			outcome = openBusy
		case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
			outcome = openInterrupted
		}
		d.metrics.opened(name, time.Since(start), outcome)
	}
	return g, err
}

func (d *drainLocker) acquire1(fctx context.Context, name string, try bool) (mutex.Grant, error) {
	var pid uint32
	if c, ok := fuse.FromContext(fctx); ok {
		pid = c.Pid // copied now: go-fuse recycles the request
	}
	d.mu.Lock()
	if d.draining {
		d.mu.Unlock()
		return mutex.Grant{}, drainingError(name)
	}
	ctx, cancel := context.WithCancelCause(fctx)
	defer cancel(nil)
	w := &waitingOpen{cancel: cancel}
	d.waiting[w] = struct{}{}
	d.mu.Unlock()

	var g mutex.Grant
	var err error
	if try {
		g, err = d.Peer.TryLock(ctx, name)
	} else {
		g, err = d.Peer.Lock(ctx, name)
	}

	d.mu.Lock()
	delete(d.waiting, w)
	draining := d.draining
	if err == nil && !draining {
		d.holds[g.Opener] = holdInfo{lock: name, token: g.Token, pid: pid, since: time.Now()}
	}
	d.mu.Unlock()
	switch {
	case err == nil && draining:
		// Granted as the drain began: not a new hold to wait for.
		_ = d.Peer.Unlock(g)
		return mutex.Grant{}, drainingError(name)
	case err != nil && errors.Is(context.Cause(ctx), errDrainingCause) && fctx.Err() == nil:
		return mutex.Grant{}, drainingError(name)
	}
	return g, err
}

// drainingError is what an open gets while the peer drains: ESHUTDOWN
// ("Cannot send after transport endpoint shutdown").
func drainingError(name string) error {
	return fmt.Errorf("lock %q: this peer is stopping (draining): %w", name, syscall.ESHUTDOWN)
}

// Unlock is peer.Unlock; the last hold released while draining ends the
// drain.
func (d *drainLocker) Unlock(g mutex.Grant) error {
	d.mu.Lock()
	delete(d.holds, g.Opener)
	if d.draining && len(d.holds) == 0 && d.idle != nil {
		close(d.idle)
		d.idle = nil
	}
	d.mu.Unlock()
	return d.Peer.Unlock(g)
}

// drain stops granting local opens, withdraws the local waiters, and
// returns the holds left and a channel closed once they are all released.
func (d *drainLocker) drain() ([]holdInfo, <-chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.draining = true
	for w := range d.waiting {
		w.cancel(errDrainingCause)
	}
	idle := make(chan struct{})
	if len(d.holds) == 0 {
		close(idle)
		return nil, idle
	}
	d.idle = idle
	return d.heldLocked(), idle
}

// held returns the local holds, by lock name and token.
func (d *drainLocker) held() []holdInfo {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.heldLocked()
}

func (d *drainLocker) heldLocked() []holdInfo {
	hs := make([]holdInfo, 0, len(d.holds))
	for _, h := range d.holds {
		hs = append(hs, h)
	}
	slices.SortFunc(hs, func(a, b holdInfo) int {
		if c := strings.Compare(a.lock, b.lock); c != 0 {
			return c
		}
		return int(a.token) - int(b.token)
	})
	return hs
}

// describeHolds renders holds for a log line: "deploy (token 42, PID 1234
// bash, held 3s)".
func describeHolds(hs []holdInfo) string {
	parts := make([]string, 0, len(hs))
	for _, h := range hs {
		who := "PID unknown"
		if h.pid != 0 {
			who = "PID " + strconv.Itoa(int(h.pid))
			if comm, err := os.ReadFile("/proc/" + strconv.Itoa(int(h.pid)) + "/comm"); err == nil {
				who += " " + strings.TrimSpace(string(comm))
			}
		}
		parts = append(parts, fmt.Sprintf("%s (token %d, %s, held %v)", h.lock, h.token, who,
			time.Since(h.since).Round(time.Second)))
	}
	return strings.Join(parts, ", ")
}

// isDraining reports whether the drain has begun.
func (d *drainLocker) isDraining() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.draining
}

// Revoked passes the peer's answer through: a hold that a lapse of the
// lease revoked stays in holds until its opener closes (a drain waits for
// it like any other), but its reads fail with EIO.
func (d *drainLocker) Revoked(g mutex.Grant) bool { return d.Peer.Revoked(g) }

// StatusJSON is the peer's status with "draining", as indented JSON.
func (d *drainLocker) StatusJSON() ([]byte, error) {
	st := d.Peer.Status()
	st.Draining = d.isDraining()
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	return append(b, '\n'), nil
}
