package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/dlockfs/dlockfs/fs"
	"github.com/dlockfs/dlockfs/mutex/peer"
)

// Bounds of the local cluster's start and stop.
const (
	clusterJoinTimeout = 15 * time.Second // a peer joins the first one
	clusterFormTimeout = 10 * time.Second // every peer sees every other, lock channels connected
	clusterPoll        = 10 * time.Millisecond
	clusterSeenLeft    = 2 * time.Second // the others see a peer leave
	clusterUnmountTime = 5 * time.Second // one unmount before detaching lazily
	maxLocalPeers      = 26              // peers are named a..z
)

// localCluster is N peers and their mounts running inside this process on
// 127.0.0.1 (free ports, the fast gossip profile): what demo and bench run
// on. Only child processes may touch the mounts: a FUSE request from the
// serving process can deadlock it, and Go's runtime signals interrupt its
// own blocking opens.
type localCluster struct {
	dir     string // temporary directory holding the mountpoints and scratch files
	names   []string
	mounts  []string // mounts[i] is where peers[i] is mounted
	peers   []*peer.Peer
	servers []*fuse.Server
	log     *slog.Logger
	signals <-chan os.Signal
	stderr  io.Writer

	closeOnce sync.Once
	closeErr  error
}

// clusterOptions configure startLocalCluster.
type clusterOptions struct {
	peers    int
	fastPath bool   // the peers keep permissions (Roucairol–Carvalho)
	quorum   string // peer.QuorumMajority (also for "") or peer.QuorumNone
	key      []byte // nil: plaintext
	prefix   string // of the temporary directory's name
	log      *slog.Logger
	// signals, if not nil, delivers the signals that come after the
	// first (withSignals): one arriving while Close runs detaches every
	// mount and exits the process at once.
	signals <-chan os.Signal
	stderr  io.Writer
}

// newClusterKey returns a fresh random 32-byte cluster key.
func newClusterKey() ([]byte, error) {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("cluster key: %w", err)
	}
	return k, nil
}

// peerName is the name of the i-th local peer: a, b, c...
func peerName(i int) string { return string(rune('a' + i)) }

// startLocalCluster starts opt.peers peers, joins them into one cluster,
// waits until each sees every other alive with its lock channel connected,
// and mounts each on a directory of a new temporary directory. On error
// everything started is stopped again.
func startLocalCluster(ctx context.Context, opt clusterOptions) (_ *localCluster, err error) {
	if opt.peers < 1 || opt.peers > maxLocalPeers {
		return nil, fmt.Errorf("want 1 to %d peers, got %d", maxLocalPeers, opt.peers)
	}
	if err := fs.CheckFUSE(false); err != nil {
		return nil, mountError(err)
	}
	dir, err := os.MkdirTemp("", opt.prefix)
	if err != nil {
		return nil, fmt.Errorf("temporary directory: %w", err)
	}
	c := &localCluster{dir: dir, log: opt.log, signals: opt.signals, stderr: opt.stderr}
	defer func() {
		if err != nil {
			if cerr := c.Close(); cerr != nil {
				err = errors.Join(err, cerr)
			}
		}
	}()

	var first string // the first peer's gossip address, which the others join
	for i := range opt.peers {
		name := peerName(i)
		pc := peer.DefaultConfig()
		pc.Name = name
		pc.BindAddr = "127.0.0.1:0"
		pc.Profile = peer.ProfileFast
		pc.Key = opt.key
		pc.KeepPermissions = opt.fastPath
		pc.Quorum = opt.quorum
		if opt.fastPath {
			pc.Quorum = peer.QuorumNone // the fast path is plain mode only
		}
		// Majority mode's state, removed with the cluster's directory.
		pc.StateDir = filepath.Join(dir, "state-"+name)
		pc.Logger = opt.log.With("component", "peer")
		if first != "" {
			pc.Join = []string{first}
		}
		jctx, cancel := context.WithTimeout(ctx, clusterJoinTimeout)
		p, err := peer.Start(jctx, pc)
		cancel()
		if err != nil {
			return nil, codef(exitJoin, "starting peer %s: %w", name, err)
		}
		c.names = append(c.names, name)
		c.peers = append(c.peers, p)
		if first == "" {
			first = selfAddr(p)
			if first == "" {
				return nil, fmt.Errorf("peer %s: its gossip address is not in its own member list", name)
			}
		}
	}
	if err := c.waitFormed(ctx); err != nil {
		return nil, err
	}
	for i, p := range c.peers {
		mnt := filepath.Join(dir, c.names[i])
		if err := os.Mkdir(mnt, 0o755); err != nil {
			return nil, fmt.Errorf("mountpoint: %w", err)
		}
		srv, err := fs.Mount(mnt, fs.Options{Locker: p, Logger: opt.log.With("component", "fs", "node", c.names[i])})
		if err != nil {
			return nil, mountError(err)
		}
		c.mounts = append(c.mounts, mnt)
		c.servers = append(c.servers, srv)
	}
	return c, nil
}

// selfAddr is p's gossip address as its own member list shows it.
func selfAddr(p *peer.Peer) string {
	for _, m := range p.Status().Members {
		if m.Name == p.Node() {
			return m.Addr
		}
	}
	return ""
}

// waitFormed waits until every peer sees all peers alive and has an
// outgoing lock-channel connection to each of the others.
func (c *localCluster) waitFormed(ctx context.Context) error {
	deadline := time.Now().Add(clusterFormTimeout)
	n := len(c.peers)
	for {
		formed := true
		var missing string
		for i, p := range c.peers {
			st := p.Status()
			alive := 0
			for _, m := range st.Members {
				if m.Status == "alive" {
					alive++
				}
			}
			if alive != n || st.Transport.OutboundConns != n-1 {
				formed = false
				missing = fmt.Sprintf("peer %s sees %d of %d members alive, %d of %d lock connections",
					c.names[i], alive, n, st.Transport.OutboundConns, n-1)
				break
			}
		}
		if formed {
			return nil
		}
		if time.Now().After(deadline) {
			return codef(exitJoin, "the local cluster did not form within %v: %s", clusterFormTimeout, missing)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(clusterPoll):
		}
	}
}

// counters sums the peers' message and grant counters.
func (c *localCluster) counters() (sent, grants uint64) {
	for _, p := range c.peers {
		cs := p.Status().Counters
		sent += cs.Sent
		grants += cs.Grants
	}
	return sent, grants
}

// Close unmounts every mount (lazily if busy), makes every peer leave
// gracefully, and removes the temporary directory, skipping anything still
// mounted. Child processes using the mounts should be gone first. Later
// calls return the first call's result.
func (c *localCluster) Close() error {
	c.closeOnce.Do(func() {
		done := make(chan struct{})
		if c.signals != nil {
			go c.exitOnSignal(done)
		}
		c.closeErr = c.close()
		close(done)
	})
	return c.closeErr
}

// exitOnSignal detaches every mount and exits if a signal comes before
// done is closed: a second Ctrl-C cuts the graceful shutdown short. The
// children die with this process (PR_SET_PDEATHSIG).
func (c *localCluster) exitOnSignal(done <-chan struct{}) {
	select {
	case s := <-c.signals:
		for _, m := range c.mounts {
			_ = fs.Detach(m)
		}
		if c.stderr != nil {
			fmt.Fprintf(c.stderr, "dlockfs: %v again: mounts detached, exiting now (%s may be left behind)\n", s, c.dir)
		}
		os.Exit(exitError)
	case <-done:
	}
}

func (c *localCluster) close() error {
	var errs []error
	for i, srv := range c.servers {
		if err := unmountBounded(srv, c.mounts[i]); err != nil {
			errs = append(errs, err)
		}
	}
	// One at a time, each after the others saw the previous one leave:
	// a Serf leave waits until its broadcast went out to a live member,
	// so peers leaving together wait for each other (up to Serf's
	// BroadcastTimeout, 5 s, twice).
	for i, p := range c.peers {
		ctx, cancel := context.WithTimeout(context.Background(), leaveTimeout)
		err := p.Leave(ctx)
		cancel()
		if err != nil {
			// The peers are gone either way; a slow or lossy leave is
			// no reason to fail the command.
			c.log.Debug("leave", "node", c.names[i], "err", err)
		}
		c.waitSeenLeft(i)
	}
	if err := c.removeDir(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// waitSeenLeft waits (bounded) until every peer after peers[i] sees it as
// left.
func (c *localCluster) waitSeenLeft(i int) {
	deadline := time.Now().Add(clusterSeenLeft)
	for _, p := range c.peers[i+1:] {
		for time.Now().Before(deadline) {
			seen := false
			for _, m := range p.Status().Members {
				if m.Name == c.names[i] && m.Status != "alive" {
					seen = true
				}
			}
			if seen {
				break
			}
			time.Sleep(clusterPoll)
		}
	}
}

// unmountBounded unmounts srv from dir; if that fails or hangs, it detaches
// the mount instead (umount -l), which ends once nothing uses it.
func unmountBounded(srv *fuse.Server, dir string) error {
	done := make(chan error, 1)
	go func() { done <- srv.Unmount() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(clusterUnmountTime):
		err = fmt.Errorf("unmount %s: no answer in %v", dir, clusterUnmountTime)
	}
	if err == nil {
		return nil
	}
	if lerr := fs.Detach(dir); lerr != nil {
		return fmt.Errorf("unmount %s: %w; detaching: %w (run 'umount -l %s')", dir, err, lerr, dir)
	}
	return nil
}

// removeDir removes the temporary directory unless something is still
// mounted under it (walking into a mount this process serves could hang).
func (c *localCluster) removeDir() error {
	if c.dir == "" {
		return nil
	}
	under, err := fs.MountsUnder(c.dir)
	if err != nil {
		return err
	}
	if len(under) > 0 {
		return fmt.Errorf("not removing %s: still mounted: %s", c.dir, strings.Join(under, ", "))
	}
	if err := os.RemoveAll(c.dir); err != nil {
		return fmt.Errorf("removing %s: %w", c.dir, err)
	}
	return nil
}

// child is a process this command started in a process group of its own,
// so that it and anything it forks can be killed together by its id.
type child struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when Wait returned
	err  error         // Wait's result, once done is closed
}

// startChild starts cmd as a child in its own process group; it is killed
// if this process dies first (PR_SET_PDEATHSIG).
func startChild(cmd *exec.Cmd) (*child, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", cmd.Path, err)
	}
	ch := &child{cmd: cmd, done: make(chan struct{})}
	go func() {
		ch.err = cmd.Wait()
		close(ch.done)
	}()
	return ch, nil
}

// kill ends the child's process group with SIGKILL and waits for the child.
func (ch *child) kill() {
	select {
	case <-ch.done:
		return
	default:
	}
	_ = syscall.Kill(-ch.cmd.Process.Pid, syscall.SIGKILL)
	<-ch.done
}

// wait waits for the child until ctx ends, then kills it.
func (ch *child) wait(ctx context.Context) error {
	select {
	case <-ch.done:
		return ch.err
	case <-ctx.Done():
		ch.kill()
		return fmt.Errorf("%s: %w", ch.cmd.Path, ctx.Err())
	}
}

// withSignals returns a context cancelled by the first SIGINT or SIGTERM,
// a stop function that ends the notification, and the channel on which
// later signals arrive (see clusterOptions.signals).
func withSignals(ctx context.Context) (context.Context, func(), <-chan os.Signal) {
	ctx, cancel := context.WithCancel(ctx)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	first := make(chan struct{})
	go func() {
		defer close(first)
		select {
		case <-sigs:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, func() {
		cancel()
		<-first
		signal.Stop(sigs)
	}, sigs
}

// selfExe is the path of the running binary, for re-executing it.
func selfExe() string {
	if p, err := os.Executable(); err == nil {
		return p
	}
	return "/proc/self/exe"
}
