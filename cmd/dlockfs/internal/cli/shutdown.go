package cli

import (
	"context"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// Shutdown bounds.
const (
	// LeaveTimeout bounds the graceful leave (flush of the lock channel,
	// Serf's leave broadcast; the wan profile's takes a few seconds).
	LeaveTimeout = 15 * time.Second
	// ForceAfter: a signal at least this long after the one before ends a
	// slow shutdown at once.
	ForceAfter = time.Second
)

// Signals is the shutdown policy of every command that runs until SIGINT
// or SIGTERM (mount, demo, bench). The first signal asks for a graceful
// stop: Context is cancelled. Each later signal, at least ForceAfter after
// the one before it that counted, cuts the stop short: it arrives on Again.
// Repeats within ForceAfter are the same request (timeout(1) and a kill of
// the process group deliver SIGTERM twice), and are dropped.
//
// One goroutine receives the signals and keeps the times; the command
// decides what "cut short" means where it waits, and returns: nothing
// calls os.Exit behind its back.
type Signals struct {
	ctx    context.Context
	cancel context.CancelFunc
	again  chan os.Signal
	sigs   chan os.Signal
	quit   chan struct{} // closed by Stop
	done   chan struct{} // closed when the goroutine returned
	once   sync.Once

	mu    sync.Mutex
	first os.Signal // nil until the first signal
}

// NotifySignals starts receiving SIGINT and SIGTERM. Stop ends it.
func NotifySignals(parent context.Context) *Signals {
	ctx, cancel := context.WithCancel(parent)
	s := &Signals{ctx: ctx, cancel: cancel, again: make(chan os.Signal, 1),
		sigs: make(chan os.Signal, 4), quit: make(chan struct{}), done: make(chan struct{})}
	signal.Notify(s.sigs, syscall.SIGINT, syscall.SIGTERM)
	go s.receive()
	return s
}

// receive is the goroutine that owns the signal times.
func (s *Signals) receive() {
	defer close(s.done)
	var last time.Time // of the last signal that counted
	for {
		var sig os.Signal
		select {
		case sig = <-s.sigs:
		case <-s.quit:
			return
		}
		switch {
		case last.IsZero():
			s.mu.Lock()
			s.first = sig
			s.mu.Unlock()
			s.cancel()
		case time.Since(last) < ForceAfter:
			continue // the same request, delivered twice
		default:
			select {
			case s.again <- sig:
			default: // the last one is not read yet: it says the same
			}
		}
		last = time.Now()
	}
}

// Context is cancelled by the first signal (or when the parent ends).
func (s *Signals) Context() context.Context { return s.ctx }

// First is the first signal, nil if none came.
func (s *Signals) First() os.Signal {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.first
}

// Again delivers the later signals that cut a graceful stop short.
func (s *Signals) Again() <-chan os.Signal { return s.again }

// Stop ends the notification and waits for the receiving goroutine. The
// parent context's end does not: a later signal must still cut a shutdown
// short. Stop may be called more than once.
func (s *Signals) Stop() {
	s.once.Do(func() {
		signal.Stop(s.sigs)
		close(s.quit)
	})
	<-s.done
	s.cancel()
}
