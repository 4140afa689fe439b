package localcluster

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/dlockfs/dlockfs/cmd/dlockfs/internal/cli"
	"github.com/dlockfs/dlockfs/fs"
	"github.com/dlockfs/dlockfs/mutex/peer"
)

// Bounds of the local cluster's start and stop.
const (
	clusterJoinTimeout = 15 * time.Second // a peer joins the first one
	FormTimeout        = 10 * time.Second // every peer sees every other, lock channels connected
	Poll               = 10 * time.Millisecond
	clusterSeenLeft    = 2 * time.Second // the others see a peer leave
	clusterUnmountTime = 5 * time.Second // one unmount before detaching lazily
	MaxPeers           = 26              // peers are named a..z
)

// LockName is the lock the demo's workers and the bench's clients take.
const LockName = "lock"

// Cluster is N peers and their mounts running inside this process on
// 127.0.0.1 (free ports, the fast gossip profile): what demo and bench run
// on. Only child processes may touch the mounts: a FUSE request from the
// serving process can deadlock it, and Go's runtime signals interrupt its
// own blocking opens.
type Cluster struct {
	Dir     string       // temporary directory holding the mountpoints and scratch files
	Names   []string     // the peers' names, a, b, c...
	Mounts  []string     // Mounts[i] is where Peers[i] is mounted
	Peers   []*peer.Peer // the peers
	servers []*fuse.Server
	log     *slog.Logger
	signals *cli.Signals

	closeOnce sync.Once
	closeErr  error
}

// Options configure Start.
type Options struct {
	Peers    int
	FastPath bool   // the peers keep permissions (Roucairol–Carvalho)
	Quorum   string // peer.QuorumMajority (also for "") or peer.QuorumNone
	Key      []byte // nil: plaintext
	Prefix   string // of the temporary directory's name
	Log      *slog.Logger
	// Signals, if not nil, is the command's shutdown policy: a later
	// signal (Signals.Again) while Close runs detaches every mount and
	// ends Close at once.
	Signals *cli.Signals
}

// NewKey returns a fresh random 32-byte cluster key.
func NewKey() ([]byte, error) {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("cluster key: %w", err)
	}
	return k, nil
}

// peerName is the name of the i-th local peer: a, b, c...
func peerName(i int) string { return string(rune('a' + i)) }

// Start starts opt.Peers peers, joins them into one cluster,
// waits until each sees every other alive with its lock channel connected,
// and mounts each on a directory of a new temporary directory. On error
// everything started is stopped again. The caller checks FUSE first
// (fs.CheckFUSE), once, before anything else it does.
func Start(ctx context.Context, opt Options) (_ *Cluster, err error) {
	if opt.Peers < 1 || opt.Peers > MaxPeers {
		return nil, fmt.Errorf("want 1 to %d peers, got %d", MaxPeers, opt.Peers)
	}
	dir, err := os.MkdirTemp("", opt.Prefix)
	if err != nil {
		return nil, fmt.Errorf("temporary directory: %w", err)
	}
	c := &Cluster{Dir: dir, log: opt.Log, signals: opt.Signals}
	defer func() {
		if err != nil {
			if cerr := c.Close(); cerr != nil {
				err = errors.Join(err, cerr)
			}
		}
	}()

	var first string // the first peer's gossip address, which the others join
	for i := range opt.Peers {
		name := peerName(i)
		pc := peer.DefaultConfig()
		pc.Name = name
		pc.BindAddr = "127.0.0.1:0"
		pc.Profile = peer.ProfileFast
		pc.Key = opt.Key
		pc.KeepPermissions = opt.FastPath
		pc.Quorum = opt.Quorum
		if opt.FastPath {
			pc.Quorum = peer.QuorumNone // the fast path is plain mode only
		}
		// Majority mode's state, removed with the cluster's directory.
		pc.StateDir = filepath.Join(dir, "state-"+name)
		pc.Logger = opt.Log.With("component", "peer")
		if first != "" {
			pc.Join = []string{first}
		}
		jctx, cancel := context.WithTimeout(ctx, clusterJoinTimeout)
		p, err := peer.Start(jctx, pc)
		cancel()
		if err != nil {
			return nil, cli.JoinError(fmt.Errorf("local peer %s: %w", name, err))
		}
		c.Names = append(c.Names, name)
		c.Peers = append(c.Peers, p)
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
	for i, p := range c.Peers {
		mnt := filepath.Join(dir, c.Names[i])
		if err := os.Mkdir(mnt, 0o755); err != nil {
			return nil, fmt.Errorf("mountpoint: %w", err)
		}
		srv, err := fs.Mount(mnt, fs.Options{Locker: p, Logger: opt.Log.With("component", "fs", "node", c.Names[i])})
		if err != nil {
			return nil, cli.MountError(err)
		}
		c.Mounts = append(c.Mounts, mnt)
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
func (c *Cluster) waitFormed(ctx context.Context) error {
	deadline := time.Now().Add(FormTimeout)
	n := len(c.Peers)
	for {
		formed := true
		var missing string
		for i, p := range c.Peers {
			st := p.Status()
			alive := 0
			for _, m := range st.Members {
				if m.Status == peer.MemberAlive {
					alive++
				}
			}
			if alive != n || st.Transport.OutboundConns != n-1 {
				formed = false
				missing = fmt.Sprintf("peer %s sees %d of %d members alive, %d of %d lock connections",
					c.Names[i], alive, n, st.Transport.OutboundConns, n-1)
				break
			}
		}
		if formed {
			return nil
		}
		if time.Now().After(deadline) {
			return cli.Codef(cli.ExitJoin, "the local cluster did not form within %v: %s", FormTimeout, missing)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(Poll):
		}
	}
}

// Counters sums the peers' message and grant counters.
func (c *Cluster) Counters() (sent, grants uint64) {
	for _, p := range c.Peers {
		cs := p.Status().Counters
		sent += cs.Sent
		grants += cs.Grants
	}
	return sent, grants
}

// Close unmounts every mount (lazily if busy), makes every peer leave
// gracefully, and removes the temporary directory, skipping anything still
// mounted. Child processes using the mounts should be gone first. A later
// signal (Options.Signals) cuts it short: the mounts are detached and Close
// returns at once, with an error that says what may be left behind. Later
// calls return the first call's result.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() {
		done := make(chan error, 1)
		go func() { done <- c.close() }()
		var again <-chan os.Signal
		if c.signals != nil {
			again = c.signals.Again()
		}
		select {
		case c.closeErr = <-done:
		case s := <-again:
			for _, m := range c.Mounts {
				_ = fs.Detach(m)
			}
			c.closeErr = fmt.Errorf("%v again: mounts detached, not waiting for the peers to leave (%s may be left behind)", s, c.Dir)
		}
	})
	return c.closeErr
}

func (c *Cluster) close() error {
	var errs []error
	for i, srv := range c.servers {
		if err := unmountBounded(srv, c.Mounts[i]); err != nil {
			errs = append(errs, err)
		}
	}
	// One at a time, each after the others saw the previous one leave:
	// a Serf leave waits until its broadcast went out to a live member,
	// so peers leaving together wait for each other (up to Serf's
	// BroadcastTimeout, 5 s, twice).
	for i, p := range c.Peers {
		ctx, cancel := context.WithTimeout(context.Background(), cli.LeaveTimeout)
		err := p.Leave(ctx)
		cancel()
		if err != nil {
			// The peers are gone either way; a slow or lossy leave is
			// no reason to fail the command.
			c.log.Debug("leave", "node", c.Names[i], "err", err)
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
func (c *Cluster) waitSeenLeft(i int) {
	deadline := time.Now().Add(clusterSeenLeft)
	for _, p := range c.Peers[i+1:] {
		for time.Now().Before(deadline) {
			seen := false
			for _, m := range p.Status().Members {
				if m.Name == c.Names[i] && m.Status != peer.MemberAlive {
					seen = true
				}
			}
			if seen {
				break
			}
			time.Sleep(Poll)
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
func (c *Cluster) removeDir() error {
	if c.Dir == "" {
		return nil
	}
	under, err := fs.MountsUnder(c.Dir)
	if err != nil {
		return err
	}
	if len(under) > 0 {
		return fmt.Errorf("not removing %s: still mounted: %s", c.Dir, strings.Join(under, ", "))
	}
	if err := os.RemoveAll(c.Dir); err != nil {
		return fmt.Errorf("removing %s: %w", c.Dir, err)
	}
	return nil
}

// Child is a process this command started in a process group of its own,
// so that it and anything it forks can be killed together by its id.
type Child struct {
	cmd *exec.Cmd
	// Done is closed when the process was waited for.
	Done chan struct{}
	// Err is the process's result (exec.Cmd.Wait), once Done is closed.
	Err error
}

// StartChild starts cmd as a child in its own process group; it is killed
// if this process dies first (PR_SET_PDEATHSIG).
func StartChild(cmd *exec.Cmd) (*Child, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", cmd.Path, err)
	}
	ch := &Child{cmd: cmd, Done: make(chan struct{})}
	go func() {
		ch.Err = cmd.Wait()
		close(ch.Done)
	}()
	return ch, nil
}

// Kill ends the child's process group with SIGKILL and waits for it.
func (ch *Child) Kill() {
	select {
	case <-ch.Done:
		return
	default:
	}
	_ = syscall.Kill(-ch.cmd.Process.Pid, syscall.SIGKILL)
	<-ch.Done
}

// Wait waits for the child until ctx ends, then kills it.
func (ch *Child) Wait(ctx context.Context) error {
	select {
	case <-ch.Done:
		return ch.Err
	case <-ctx.Done():
		ch.Kill()
		return fmt.Errorf("%s: %w", ch.cmd.Path, ctx.Err())
	}
}

// SelfExe is the path of the running binary, for re-executing it.
func SelfExe() string {
	if p, err := os.Executable(); err == nil {
		return p
	}
	return "/proc/self/exe"
}

// TmpfsDir is /dev/shm if it is a directory, else "" (the default
// temporary directory).
func TmpfsDir() string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		return "/dev/shm"
	}
	return ""
}
