package peer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/serf/serf"

	"github.com/dlockfs/dlockfs/mutex"
)

// The Serf tags a peer publishes.
const (
	// tagLock is the lock channel's address, IP:PORT.
	tagLock = "lock"
	// tagNonce is the boot nonce (the core's incarnation), in decimal.
	tagNonce = "nonce"
)

// memberInfo is what the driver knows of a member.
type memberInfo struct {
	inc      uint64
	lockAddr string
}

// parseTags reads a member's lock address and nonce.
func parseTags(tags map[string]string) (memberInfo, error) {
	addr := tags[tagLock]
	if addr == "" {
		return memberInfo{}, errors.New("no lock address tag")
	}
	inc, err := strconv.ParseUint(tags[tagNonce], 10, 64)
	if err != nil || inc == 0 {
		return memberInfo{}, fmt.Errorf("bad nonce tag %q", tags[tagNonce])
	}
	return memberInfo{inc: inc, lockAddr: addr}, nil
}

// memberUp handles a join or an update: a new member, or a known one with a
// new nonce (a restart: a new peer to the core) or a new lock address.
func (p *Peer) memberUp(m serf.Member) {
	info, err := parseTags(m.Tags)
	if err != nil {
		p.log.Warn("ignoring a member that is not a dlockfs peer", "member", m.Name, "err", err)
		return
	}
	if old, ok := p.members[m.Name]; ok && old.inc == info.inc {
		if old.lockAddr == info.lockAddr {
			return
		}
		// Same life, new address: the re-targeted connection is a
		// re-connection (what was in flight on the old one is lost).
	}
	p.log.Debug("member up", "member", m.Name, "incarnation", formatNonce(info.inc), "lock", info.lockAddr)
	p.members[m.Name] = info
	p.tr.AddPeer(m.Name, info.inc, info.lockAddr)
	p.core.AddMember(m.Name, info.inc)
}

// memberDown handles a member that failed, left or was reaped. An event
// about an older incarnation than the one we know is stale and ignored.
func (p *Peer) memberDown(m serf.Member, why serf.EventType) {
	old, ok := p.members[m.Name]
	if !ok {
		return
	}
	if info, err := parseTags(m.Tags); err == nil && info.inc != old.inc {
		return
	}
	p.log.Debug("member down", "member", m.Name, "why", why.String(), "incarnation", formatNonce(old.inc))
	delete(p.members, m.Name)
	p.core.RemoveMember(m.Name)
	p.tr.RemovePeer(m.Name)
}

// Join backoff bounds.
const (
	joinBackoffMin = 50 * time.Millisecond
	joinBackoffMax = 2 * time.Second
)

// join contacts the addresses until one answers or ctx ends. A key
// mismatch is not retried: it will not heal. A name conflict is noticed
// only here (see conflictWatch): the node that already has the name is not
// joining, and carries on.
func (p *Peer) join(ctx context.Context, addrs []string) error {
	backoff := joinBackoffMin
	start := time.Now()
	var lastProgress time.Time // the first failure is reported at once
	for attempt := 1; ; attempt++ {
		res := make(chan error, 1)
		go func() {
			n, err := p.serf.Join(addrs, true)
			if n > 0 {
				err = nil
			} else if err == nil {
				err = errors.New("no address answered")
			}
			res <- err
		}()
		var err error
		select {
		case err = <-res:
		case <-ctx.Done():
			// The caller shuts Serf down next: not under a Join.
			p.awaitJoin(res, len(addrs))
			return fmt.Errorf("peer: join %v: %w", addrs, ctx.Err())
		}
		if err == nil && p.nameTaken() {
			// Members keep the node they knew under our name and
			// ignore us; we are the newcomer, so we are the one to go.
			return fmt.Errorf("peer: join %v: %w %q", addrs, ErrNameConflict, p.name)
		}
		if err == nil {
			p.log.Debug("joined", "addrs", addrs, "attempts", attempt)
			if err := p.syncMembers(ctx); err != nil {
				return err
			}
			return p.awaitVoter(ctx)
		}
		if isKeyError(err) || strings.Contains(err.Error(), "invalid msgType") {
			// The lock port answers TCP with something that is not
			// memberlist's, which reads as a key mismatch; it has no UDP.
			if addr, ok := notGossipPort(addrs); ok {
				return fmt.Errorf("peer: join %s: %w (no UDP listener there, and its TCP answer is not Serf's: a dlockfs lock port? join a peer's gossip port, its --bind)", addr, ErrNotGossipPort)
			}
		}
		if isKeyError(err) {
			return fmt.Errorf("peer: join %v: %w: %w", addrs, ErrKeyMismatch, err)
		}
		if p.joinAttempts > 0 && attempt >= p.joinAttempts {
			return fmt.Errorf("peer: join %v: %w after %d attempt(s): %w", addrs, ErrNoJoin, attempt, err)
		}
		p.log.Debug("join failed; retrying", "addrs", addrs, "attempt", attempt, "in", backoff, "err", err)
		if time.Since(lastProgress) >= joinProgressEvery {
			lastProgress = time.Now()
			p.log.Warn("join: no member answered yet; still trying (check that each address is a running peer's gossip port, its --bind, and that no firewall is in the way)",
				"addrs", addrs, "attempts", attempt, "waited", time.Since(start).Round(time.Second), "last_error", err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("peer: join %v: %w (last error: %v)", addrs, ctx.Err(), err)
		case <-p.done:
			t.Stop()
			return fmt.Errorf("peer: join %v: %w", addrs, p.stoppedErr(p.Err()))
		}
		backoff = min(2*backoff, joinBackoffMax)
	}
}

// joinProgressEvery is how often a join that keeps failing says so.
const joinProgressEvery = 5 * time.Second

// ErrNoJoin: no Join address answered within [Config.JoinAttempts].
var ErrNoJoin = errors.New("no member answered")

// ErrNotGossipPort: a join address answers, but not as a Serf gossip port.
var ErrNotGossipPort = errors.New("not a Serf gossip port")

// notGossipPort returns the first address (IP:PORT) that has no UDP
// listener: Serf always has one on its gossip port. A connected UDP socket
// sees the ICMP port-unreachable as ECONNREFUSED on its next read.
func notGossipPort(addrs []string) (string, bool) {
	for _, a := range addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			continue
		}
		c, err := net.Dial("udp", a)
		if err != nil {
			continue
		}
		c.SetDeadline(time.Now().Add(300 * time.Millisecond))
		_, err = c.Write([]byte{0})
		if err == nil {
			_, err = c.Read(make([]byte, 1))
		}
		c.Close()
		if errors.Is(err, syscall.ECONNREFUSED) {
			return a, true
		}
	}
	return "", false
}

// awaitJoin waits for a serf.Join that ctx abandoned to end, as long as
// memberlist may take: for each address a dial and a push-pull exchange,
// each bounded by its TCPTimeout.
func (p *Peer) awaitJoin(res <-chan error, addrs int) {
	bound := time.Duration(max(addrs, 1)) * 2 * p.tcpTimeout
	t := time.NewTimer(bound)
	defer t.Stop()
	select {
	case <-res:
	case <-t.C:
		p.log.Warn("join attempt still running; stopping Serf anyway", "waited", bound)
	}
}

// conflictWatch is Serf's merge delegate, used only to see name
// conflicts: Serf has no event for one (it logs it, and with
// EnableNameConflictResolution, which we turn off, it votes). Serf hands
// the delegate every alive message memberlist processes, one member at a
// time (memberlist's Alive delegate), and, during a join, the remote's
// member list as a whole (memberlist's Merge delegate), whose alive entries
// then come again one by one. The delegate never refuses (memberlist then
// does what it did without one), and runs under memberlist's node lock: it
// only passes on, without blocking, single-member alive claims to our name
// by another life (another nonce) to claims. join reads them (nameTaken).
// A whole list is passed over: its entries for our name may be an earlier
// life that failed, whose address memberlist lets us reclaim.
type conflictWatch struct {
	name, nonce string
	claims      chan<- serf.Member
}

// NotifyMerge implements serf.MergeDelegate.
func (w conflictWatch) NotifyMerge(ms []*serf.Member) error {
	if len(ms) == 1 && ms[0].Name == w.name && ms[0].Status != serf.StatusLeft && ms[0].Tags[tagNonce] != w.nonce {
		select {
		case w.claims <- *ms[0]:
		default: // full: one claim is enough
		}
	}
	return nil
}

// nameTaken reports whether another node claimed our name alive at another
// address: memberlist then sees our node and that one in conflict, and
// every member keeps the one it knew. An earlier life of ours at our own
// address (a restart on the same port) is not a conflict: memberlist lets
// us refute it. It empties p.conflicts; only join calls it.
func (p *Peer) nameTaken() bool {
	self := p.serf.LocalMember()
	taken := false
	for {
		select {
		case m := <-p.conflicts:
			if !m.Addr.Equal(self.Addr) || m.Port != self.Port {
				taken = true
			}
		default:
			return taken
		}
	}
}

// isKeyError reports whether a memberlist join error comes from a key
// mismatch (memberlist has no sentinel errors for it).
func isKeyError(err error) bool {
	s := err.Error()
	return strings.Contains(s, "no installed keys could decrypt") ||
		strings.Contains(s, "encryption is configured but remote state is not encrypted") ||
		strings.Contains(s, "remote state is encrypted and encryption is not configured")
}

// syncMembers makes the core count every member Serf knows alive before
// Start returns: otherwise a Lock right after Start could be granted by a
// core that does not know its peers yet (their join events are still on
// their way through Serf's event goroutine).
func (p *Peer) syncMembers(ctx context.Context) error {
	ack := make(chan struct{})
	select {
	case p.calls <- call{kind: callMembers, mems: p.serf.Members(), ack: ack}:
	case <-ctx.Done():
		return fmt.Errorf("peer: join: %w", ctx.Err())
	case <-p.done:
		return fmt.Errorf("peer: join: %w", ErrClosed)
	}
	select {
	case <-ack:
		return nil
	case <-p.done:
		return fmt.Errorf("peer: join: %w", ErrClosed)
	}
}

// awaitVoter waits, in majority mode, until the voters have admitted this
// peer (a majority of them agreed), so that a peer that has started counts
// towards the majority and can be granted locks.
func (p *Peer) awaitVoter(ctx context.Context) error {
	if p.quorum != mutex.QuorumMajority {
		return nil
	}
	for {
		if q := p.coreStatus().Quorum; q != nil && q.Voter {
			p.log.Debug("admitted as a voter", "voters", len(q.Voters))
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("peer: join: %w: the voters did not admit this peer (is a majority of them reachable?)", ctx.Err())
		case <-p.done:
			return fmt.Errorf("peer: join: %w", ErrClosed)
		case <-time.After(10 * time.Millisecond):
		}
	}
}
