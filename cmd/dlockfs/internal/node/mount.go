package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/dlockfs/dlockfs/cmd/dlockfs/internal/cli"
	"github.com/dlockfs/dlockfs/fs"
	"github.com/dlockfs/dlockfs/mutex/peer"
)

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
	pc.JoinAttempts = joinAttempts(m)
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
	if len(key) > 0 {
		// The keyring survives restarts (a rotation is not undone by
		// the --key-file at the next start).
		pc.KeyringFile = filepath.Join(pc.StateDir, keyringFileName)
	}
	pc.Logger = log.With("component", "peer")
	return pc
}

// runMount is "dlockfs mount": the steps of a mount. The cluster is joined
// before the mount appears, so a node that is not yet a member never grants
// a lock on its own.
func runMount(ctx context.Context, e *cli.Env, cfg config) error {
	m := cfg.mount
	log := cli.NewLogger(e, m.debug)
	pc, dir, err := checkMount(m, log)
	if err != nil {
		return err
	}
	sigs := cli.NotifySignals(ctx)
	defer sigs.Stop()
	p, err := join(sigs.Context(), m, pc)
	if errors.Is(err, errStoppedBeforeJoin) {
		fmt.Fprintf(e.Stderr, "dlockfs mount: %v\n", err)
		return nil
	}
	if err != nil {
		return err
	}
	mt, err := startServing(m, dir, p, log)
	if err != nil {
		leave(log, p)
		return err
	}
	announce(e, log, mt)
	result := serve(log, m, mt, sigs)
	if err := shutdown(log, mt, sigs); err != nil {
		return err
	}
	return result
}

// checkMount makes the cheap checks, each with its own exit code, before
// any network activity: the key file, the mountpoint (checked again by
// fs.Mount after the join, but a typo fails at once), FUSE, the peer's
// configuration and the state directory. It returns the peer's
// configuration and the mountpoint's absolute path.
func checkMount(m mountConfig, log *slog.Logger) (peer.Config, string, error) {
	var key []byte
	if m.keyFile != "" {
		k, err := readKeyFile(m.keyFile, log)
		if err != nil {
			return peer.Config{}, "", err
		}
		key = k
	}
	dir, err := fs.CheckMountpoint(m.mountpoint)
	if err != nil {
		return peer.Config{}, "", cli.MountError(err)
	}
	if err := fs.CheckFUSE(m.allowOther); err != nil {
		return peer.Config{}, "", cli.MountError(err)
	}
	pc := peerConfig(m, key, log)
	if err := pc.Validate(); err != nil {
		return peer.Config{}, "", cli.Usage(err)
	}
	if pc.Quorum == peer.QuorumMajority || pc.KeyringFile != "" {
		if err := checkStateDir(pc.StateDir); err != nil {
			return peer.Config{}, "", err
		}
	}
	return pc, dir, nil
}

// errStoppedBeforeJoin: a signal came while joining; mount exits 0.
var errStoppedBeforeJoin = errors.New("stopped by signal before joining the cluster")

// join starts the peer and joins the cluster, giving up after
// --join-timeout (if there is anything to join; 0: one attempt, see jointimeout.go) or when ctx ends (then
// errStoppedBeforeJoin). Its other errors exit with code 11.
func join(ctx context.Context, m mountConfig, pc peer.Config) (*peer.Peer, error) {
	jctx, cancel, bound := joinContext(ctx, m)
	defer cancel()
	p, err := peer.Start(jctx, pc)
	switch {
	case err == nil:
		return p, nil
	case ctx.Err() != nil:
		return nil, errStoppedBeforeJoin
	case jctx.Err() != nil:
		return nil, cli.Codef(cli.ExitJoin, "no member answered at %s %s: %w",
			strings.Join(m.join, ", "), bound, err)
	case errors.Is(err, peer.ErrNoJoin):
		return nil, cli.Codef(cli.ExitJoin, "%w (--join-timeout 0 tries each address once; give a duration to retry)", err)
	}
	return nil, cli.JoinError(err)
}

// leave makes the peer leave the cluster gracefully, bounded by
// cli.LeaveTimeout, after warning about the locks still held here.
func leave(log *slog.Logger, p *peer.Peer) {
	lctx, cancel := context.WithTimeout(context.Background(), cli.LeaveTimeout)
	defer cancel()
	warnHeld(log, p.Status())
	if err := p.Leave(lctx); err != nil && (p.Err() == nil || !errors.Is(err, p.Err())) {
		log.Warn("leave", "err", err)
	}
}

// mounted is a joined peer being served: its mount, its control socket and
// its metrics.
type mounted struct {
	p            *peer.Peer
	dl           *drainLocker
	dir          string
	server       *fuse.Server
	served       chan struct{} // closed once the mount is gone
	ctl          *controlServer
	closeMetrics func()
}

// startServing serves the joined peer p: the control socket for 'dlockfs
// keys', the metrics (before the mount: a taken port fails the start) and
// the mount itself. On error it closes what it started; the caller makes
// the peer leave.
func startServing(m mountConfig, dir string, p *peer.Peer, log *slog.Logger) (_ *mounted, err error) {
	mt := &mounted{p: p, dl: newDrainLocker(p), dir: dir, served: make(chan struct{}), closeMetrics: func() {}}
	defer func() {
		if err != nil {
			mt.closeServices()
		}
	}()
	if mt.ctl, err = startControl(m, dir, p, log.With("component", "control")); err != nil {
		return nil, err
	}
	if m.metrics != "" {
		mt.dl.metrics = newLockMetrics()
		closeMetrics, err := serveMetrics(m.metrics, mt.dl, mt.dl.metrics, log)
		if err != nil {
			return nil, err
		}
		mt.closeMetrics = closeMetrics
	}
	mt.server, err = fs.Mount(dir, fs.Options{Locker: mt.dl, AllowOther: m.allowOther, Debug: m.debug,
		Logger: log.With("component", "fs")})
	if err != nil {
		return nil, cli.MountError(err)
	}
	go func() {
		mt.server.Wait()
		close(mt.served)
	}()
	return mt, nil
}

// closeServices stops the control socket and the metrics.
func (mt *mounted) closeServices() {
	if mt.ctl != nil {
		mt.ctl.close()
	}
	mt.closeMetrics()
}

// announce prints the mounted line and tells systemd (Type=notify) that
// the node is ready: joined and mounted.
func announce(e *cli.Env, log *slog.Logger, mt *mounted) {
	st := mt.p.Status()
	alive := 0
	for _, mem := range st.Members {
		if mem.Status == peer.MemberAlive {
			alive++
		}
	}
	enc := "not encrypted"
	if st.Encrypted {
		enc = "encrypted"
	}
	fmt.Fprintf(e.Stdout, "dlockfs: node %s mounted at %s, cluster of %d, %s gossip, %s\n",
		mt.p.Node(), mt.dir, alive, st.Profile, enc)
	if err := sdNotify(fmt.Sprintf("READY=1\nSTATUS=node %s mounted at %s, cluster of %d", mt.p.Node(), mt.dir, alive)); err != nil {
		log.Warn("telling systemd we are ready (NOTIFY_SOCKET)", "err", err)
	}
}

// serve waits until the first signal (after a SIGTERM, drained: see
// drainStop), the mount's end (unmounted from outside) or the peer's. It
// returns the command's result: nil, or why the peer stopped.
func serve(log *slog.Logger, m mountConfig, mt *mounted, sigs *cli.Signals) error {
	select {
	case <-sigs.Context().Done():
		_ = sdNotify("STOPPING=1")
		if sigs.First() == syscall.SIGTERM && m.drainTimeout > 0 {
			drainStop(log, mt.dl, m.drainTimeout, sigs.Again(), mt.served)
		}
		return nil
	case <-mt.served:
		log.Warn("unmounted from outside; leaving the cluster", "dir", mt.dir)
		return nil
	case <-mt.p.Done():
		return peerStopped(mt.p.Err())
	}
}

// peerStopped gives the reason the peer stopped on its own its exit code:
// 11 for a name conflict (another member took our name), else 1.
func peerStopped(err error) error {
	if errors.Is(err, peer.ErrNameConflict) {
		return cli.Codef(cli.ExitJoin, "%w: choose another --name", err)
	}
	return fmt.Errorf("the peer stopped: %w", err)
}

// shutdown leaves first (waiting openers are withdrawn, holds are released,
// peers stop waiting for us), then unmounts (unless the mount is gone
// already) and stops the control socket and the metrics. A later signal
// (sigs.Again) cuts it short: the mount is detached and shutdown returns
// at once with exit code 1, leaving the rest to the process's exit.
func shutdown(log *slog.Logger, mt *mounted, sigs *cli.Signals) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		leave(log, mt.p)
		select {
		case <-mt.served:
		default:
			unmount(log, mt.server, mt.dir)
		}
		mt.closeServices()
	}()
	select {
	case <-done:
		return nil
	case s := <-sigs.Again():
		log.Warn("second signal: detaching the mount and exiting now", "signal", s)
		_ = fs.Detach(mt.dir)
		return cli.WithCode(cli.ExitError, cli.ErrSilent)
	}
}

// unmount unmounts dir, or detaches it if it is busy (open lock files keep
// it until closed).
func unmount(log *slog.Logger, server *fuse.Server, dir string) {
	if err := server.Unmount(); err != nil {
		log.Debug("unmount busy; detaching instead (open lock files keep it until closed)", "err", err)
		if err := fs.Detach(dir); err != nil {
			log.Warn("unmount failed: run 'umount -l "+dir+"'", "err", err)
		}
	}
}

// drainReminder is how often a drain logs whom it still waits for.
const drainReminder = 10 * time.Second

// drainStop is the draining stop at SIGTERM: no new local opens, the
// local waiters withdrawn, the peer still answering the others, until
// every local holder released, timeout passed, a later signal came (on
// again), or the mount or the peer ended.
func drainStop(log *slog.Logger, d *drainLocker, timeout time.Duration, again <-chan os.Signal, served <-chan struct{}) {
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
		case s := <-again:
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
		if l.State == peer.LockHolding || l.Waiting > 0 {
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
