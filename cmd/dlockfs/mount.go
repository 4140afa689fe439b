package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dlockfs/dlockfs/fs"
	"github.com/dlockfs/dlockfs/mutex/peer"
)

// Shutdown bounds.
const (
	// leaveTimeout bounds the graceful leave (flush of the lock channel,
	// Serf's leave broadcast; the wan profile's takes a few seconds).
	leaveTimeout = 15 * time.Second
	// forceAfter: a signal at least this long after the first one ends a
	// slow shutdown at once.
	forceAfter = time.Second
)

// newLogger returns the command's logger: warnings and errors on stderr, or
// everything with --debug. Without --debug the time is left out (it is
// noise on a terminal, and journald adds its own).
func newLogger(e *env, debug bool) *slog.Logger {
	opts := &slog.HandlerOptions{Level: slog.LevelWarn}
	if debug {
		opts.Level = slog.LevelDebug
	} else {
		opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}
	}
	return slog.New(slog.NewTextHandler(e.stderr, opts))
}

// peerConfig turns the mount flags into a peer configuration.
func peerConfig(m mountConfig, key []byte, log *slog.Logger) peer.Config {
	pc := peer.DefaultConfig()
	if m.name != "" {
		pc.Name = m.name
	}
	pc.BindAddr = m.bind
	pc.AdvertiseAddr = m.advertise
	pc.LockAddr = m.lockBind
	pc.LockAdvertise = m.lockAdvertise
	pc.Join = m.join
	pc.Profile = m.gossip
	pc.Key = key
	pc.KeepPermissions = m.fastPath
	pc.Quorum = m.quorum
	if pc.Quorum == "" {
		pc.Quorum = defaultQuorum
	}
	pc.AnswerTimeout = m.answerTimeout
	pc.MaxHold = m.maxHold
	pc.StateDir = m.stateDir
	if pc.StateDir == "" {
		pc.StateDir = filepath.Join(defaultStateDirBase, pc.Name)
	}
	pc.Logger = log.With("component", "peer")
	return pc
}

// runMount is "dlockfs mount": check, join, mount, serve until a signal,
// leave, unmount. The cluster is joined before the mount appears, so a node
// that is not yet a member never grants a lock on its own.
func runMount(ctx context.Context, e *env, cfg config) error {
	m := cfg.mount
	log := newLogger(e, m.debug)

	// Cheap checks first, each with its own exit code, before any
	// network activity.
	var key []byte
	if m.keyFile != "" {
		k, err := readKeyFile(m.keyFile, log)
		if err != nil {
			return err
		}
		key = k
	}
	// The mountpoint is checked before joining, so that a typo fails at
	// once; fs.Mount checks it again after the join.
	dir, err := fs.CheckMountpoint(m.mountpoint)
	if err != nil {
		return mountError(err)
	}
	if err := fs.CheckFUSE(m.allowOther); err != nil {
		return mountError(err)
	}
	pc := peerConfig(m, key, log)
	if err := pc.Validate(); err != nil {
		return &usageError{err: err}
	}
	if pc.Quorum == peer.QuorumMajority {
		if err := checkStateDir(pc.StateDir); err != nil {
			return err
		}
	}

	// Signals: the first starts a graceful shutdown; another one, a
	// second or more later, cuts it short. (Repeats within forceAfter are
	// the same request: timeout(1) and group kills deliver SIGTERM twice.)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	stopCtx, stop := context.WithCancel(ctx)
	defer stop()
	var firstSignal atomic.Int64 // UnixNano of the first signal, 0 = none yet
	var whichSignal atomic.Value // the first signal, an os.Signal
	go func() {
		select {
		case s := <-sigs:
			log.Debug("signal: shutting down", "signal", s)
			whichSignal.Store(s)
			firstSignal.Store(time.Now().UnixNano())
			stop()
		case <-stopCtx.Done():
		}
	}()

	// Join.
	joinCtx, cancelJoin := stopCtx, context.CancelFunc(func() {})
	if m.joinTimeout > 0 && len(m.join) > 0 {
		joinCtx, cancelJoin = context.WithTimeout(stopCtx, m.joinTimeout)
	}
	p, err := peer.Start(joinCtx, pc)
	joinTimedOut := joinCtx.Err() != nil && stopCtx.Err() == nil
	cancelJoin()
	switch {
	case err != nil && stopCtx.Err() != nil:
		fmt.Fprintf(e.stderr, "dlockfs mount: stopped by signal before joining the cluster\n")
		return nil
	case err != nil && joinTimedOut:
		return codef(exitJoin, "no member answered at %s within --join-timeout %v: %w",
			strings.Join(m.join, ", "), m.joinTimeout, err)
	case errors.Is(err, peer.ErrNotGossipPort):
		return codef(exitJoin, "%w", err)
	case errors.Is(err, peer.ErrKeyMismatch):
		return codef(exitJoin, "%w (every member needs the same --key-file)", err)
	case err != nil:
		return codef(exitJoin, "starting the peer: %w", err)
	}
	leave := func() {
		lctx, cancel := context.WithTimeout(context.Background(), leaveTimeout)
		defer cancel()
		warnHeld(log, p.Status())
		if err := p.Leave(lctx); err != nil && (p.Err() == nil || !errors.Is(err, p.Err())) {
			log.Warn("leave", "err", err)
		}
	}

	// The control socket for 'dlockfs keys'.
	ctl, err := startControl(m, dir, p, log.With("component", "control"))
	if err != nil {
		leave()
		return err
	}
	if ctl != nil {
		defer ctl.close()
	}
	// Metrics, before the mount: a taken port fails the start.
	dl := newDrainLocker(p)
	if m.metrics != "" {
		dl.metrics = newLockMetrics()
		closeMetrics, err := serveMetrics(m.metrics, dl, dl.metrics, log)
		if err != nil {
			leave()
			return err
		}
		defer closeMetrics()
	}

	// Mount.
	server, err := fs.Mount(dir, fs.Options{Locker: dl, AllowOther: m.allowOther, Debug: m.debug,
		Logger: log.With("component", "fs")})
	if err != nil {
		leave()
		return mountError(err)
	}
	served := make(chan struct{})
	go func() {
		server.Wait()
		close(served)
	}()

	st := p.Status()
	alive := 0
	for _, mem := range st.Members {
		if mem.Status == "alive" {
			alive++
		}
	}
	enc := "not encrypted"
	if st.Encrypted {
		enc = "encrypted"
	}
	fmt.Fprintf(e.stdout, "dlockfs: node %s mounted at %s, cluster of %d, %s gossip, %s\n",
		p.Node(), dir, alive, st.Profile, enc)
	// Joined and mounted: ready for systemd's Type=notify.
	if err := sdNotify(fmt.Sprintf("READY=1\nSTATUS=node %s mounted at %s, cluster of %d", p.Node(), dir, alive)); err != nil {
		log.Warn("telling systemd we are ready (NOTIFY_SOCKET)", "err", err)
	}

	// Serve.
	var result error
	select {
	case <-stopCtx.Done():
		_ = sdNotify("STOPPING=1")
		if s, _ := whichSignal.Load().(os.Signal); s == syscall.SIGTERM && m.drainTimeout > 0 {
			drainStop(log, dl, m.drainTimeout, sigs, &firstSignal, served)
		}
	case <-served:
		log.Warn("unmounted from outside; leaving the cluster", "dir", dir)
		leave()
		return nil
	case <-p.Done():
		result = p.Err()
		if errors.Is(result, peer.ErrNameConflict) {
			result = codef(exitJoin, "%w: choose another --name", result)
		} else {
			result = fmt.Errorf("the peer stopped: %w", result)
		}
	}

	// Shut down: leave first (waiting openers are withdrawn, holds are
	// released, peers stop waiting for us), then unmount.
	go func() {
		for {
			select {
			case s := <-sigs:
				if first := firstSignal.Load(); first == 0 || time.Since(time.Unix(0, first)) < forceAfter {
					firstSignal.CompareAndSwap(0, time.Now().UnixNano())
					continue
				}
				log.Warn("second signal: detaching the mount and exiting now", "signal", s)
				_ = fs.Detach(dir)
				os.Exit(exitError)
			case <-served:
				return
			}
		}
	}()
	leave()
	if err := server.Unmount(); err != nil {
		log.Debug("unmount busy; detaching instead (open lock files keep it until closed)", "err", err)
		if err := fs.Detach(dir); err != nil {
			log.Warn("unmount failed: run 'umount -l "+dir+"'", "err", err)
		}
	}
	return result
}

// drainReminder is how often a drain logs whom it still waits for.
const drainReminder = 10 * time.Second

// drainStop is the draining stop at SIGTERM: no new local opens, the
// local waiters withdrawn, the peer still answering the others, until
// every local holder released, timeout passed, a second signal came (a
// second or more after the first), or the mount or the peer ended.
func drainStop(log *slog.Logger, d *drainLocker, timeout time.Duration, sigs <-chan os.Signal,
	firstSignal *atomic.Int64, served <-chan struct{}) {
	holds, idle := d.drain()
	if len(holds) == 0 {
		return
	}
	start := time.Now()
	log.Warn("SIGTERM: draining: no new local opens; waiting for the local holders to release before leaving (another SIGTERM leaves now)",
		"timeout", timeout, "holding", describeHolds(holds))
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	remind := time.NewTicker(drainReminder)
	defer remind.Stop()
	for {
		select {
		case <-idle:
			log.Warn("drained: every local holder released; leaving", "after", time.Since(start).Round(time.Millisecond))
			return
		case <-deadline.C:
			log.Warn("--drain-timeout passed: leaving; the locks still held are taken from their holders",
				"timeout", timeout, "holding", describeHolds(d.held()))
			return
		case <-remind.C:
			log.Warn("draining: still waiting", "holding", describeHolds(d.held()),
				"left", (timeout - time.Since(start)).Round(time.Second))
		case s := <-sigs:
			if time.Since(time.Unix(0, firstSignal.Load())) < forceAfter {
				continue // the same request, delivered twice
			}
			firstSignal.Store(time.Now().UnixNano()) // a third signal forces the exit
			log.Warn("second signal: leaving now; the locks still held are taken from their holders",
				"signal", s, "holding", describeHolds(d.held()))
			return
		case <-served:
			return
		case <-d.Done():
			return
		}
	}
}

// warnHeld warns about locks that local processes still hold at shutdown:
// the cluster stops counting on them as this node leaves.
func warnHeld(log *slog.Logger, st peer.Status) {
	for _, l := range st.Locks {
		if l.State == "holding" || l.Waiting > 0 {
			log.Warn("shutting down while a local process holds or awaits the lock: it is released for the cluster",
				"lock", l.Name, "state", l.State, "token", l.Token, "waiting", l.Waiting)
		}
	}
}

// checkStateDir makes the --state-dir if need be and checks that the peer
// can write its state there, before anything is joined: a majority-mode
// peer that cannot keep its voter set and token floor must not start.
func checkStateDir(dir string) error {
	hint := "(choose another with --state-dir DIR, or run as a user who may write it)"
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("--state-dir %s: cannot create it: %w %s", dir, err, hint)
	}
	f, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		return fmt.Errorf("--state-dir %s: not writable: %w %s", dir, err, hint)
	}
	name := f.Name()
	f.Close()
	os.Remove(name)
	return nil
}

// mountError gives an error of fs.CheckMountpoint, fs.CheckFUSE or
// fs.Mount its exit code: exitMountpoint for the mountpoint, exitFUSE when
// FUSE is unavailable or the mount failed otherwise.
func mountError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, fs.ErrMountpoint):
		return withCode(exitMountpoint, err)
	default: // fs.ErrNoFUSE, or the mount itself failed
		return withCode(exitFUSE, err)
	}
}
