package peer

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/dlockfs/dlockfs/mutex"
	"github.com/dlockfs/dlockfs/mutex/transport"
)

// The membership profiles: Serf timer settings, chosen by [Config.Profile].
// Failure detection is the time from a peer's crash (no Leave) until the
// others drop it from every lock and stop waiting for its replies. A peer
// that leaves gracefully is dropped much sooner (see each profile).
const (
	// ProfileLAN is serf.DefaultConfig with memberlist.DefaultLANConfig:
	// probe every 1 s, probe timeout 500 ms, suspicion multiplier 4,
	// gossip every 200 ms to 3 nodes. Failure detection measured on
	// 127.0.0.1: 5.3 s median, 6.3 s worst at 3 peers, 7.3 s worst at 5.
	// A graceful leave is seen in 0.4-0.8 s. About 0.1% of a core per peer.
	// On the minority side of a partition detection is slower (Serf's
	// suspicion timeout only shrinks as others confirm it): 13-21 s
	// measured for 2 of 5 peers, over 30 s once in CI under the race
	// detector; [DetectionBound] gives 28.5 s. A healed partition merges within about
	// 5 s (reconnectInterval).
	ProfileLAN = "lan"
	// ProfileWAN uses memberlist.DefaultWANConfig: probe every 5 s, probe
	// timeout 3 s, suspicion multiplier 6, gossip every 500 ms to 4
	// nodes. Failure detection is about 35-40 s (computed: up to one
	// probe interval + the probe timeout + a suspicion timeout of
	// 6 × max(1, log10 N) × 5 s; not measured). A graceful leave is seen
	// within a few seconds.
	ProfileWAN = "wan"
	// ProfileFast gossips every 10 ms to every other node (up to
	// [fastGossipNodes] of them), probes every 100 ms with a 50 ms
	// timeout and a suspicion multiplier of 3. Failure detection measured
	// on 127.0.0.1: 0.49 s median, 0.59 s worst at 3 peers; 0.50 s
	// median, 0.78 s worst at 5. A graceful leave is seen in 17-26 ms.
	// About 1% of a core per peer, and a peer starved of CPU for ~0.5 s
	// (GC pause, overloaded host) may be falsely declared failed: meant
	// for tests and small, quiet clusters. On the minority side of a
	// partition: 0.6-1.8 s measured for 2 of 5 peers. A healed partition
	// merges within about 1 s (reconnectInterval).
	ProfileFast = "fast"
)

// DetectionBound is the longest that Serf, with profile's timers in a
// cluster of members peers, takes to declare a crashed or cut-off member
// failed when no other member confirms the suspicion (the minority side of
// a partition, or a cluster of two): the probe round until the member's
// turn comes, the probe timeout, and memberlist's longest suspicion
// timeout (SuspicionMaxTimeoutMult × SuspicionMult × max(1, log10 N) ×
// the probe interval). For the lan profile and 5 peers it is 28.5 s. It
// leaves out the event's way from memberlist to the peer and CPU
// starvation; confirmations from other members only shorten it.
func DetectionBound(profile string, members int) time.Duration {
	mc, _ := profileTimers(profile)
	n := max(members, 1)
	round := time.Duration(n-1) * mc.ProbeInterval
	scale := max(1, math.Log10(float64(n)))
	suspicion := time.Duration(float64(mc.SuspicionMult) * scale * float64(mc.ProbeInterval))
	return round + mc.ProbeTimeout + time.Duration(mc.SuspicionMaxTimeoutMult)*suspicion
}

// reconnectInterval is how often Serf tries to reach a member it believes
// failed. After a partition heals, the two sides merge only when one of
// these attempts succeeds (gossip goes to live members only), and until then
// both sides keep granting locks on their own: so it is short where
// detection is short. Serf's default is 30 s.
func reconnectInterval(profile string) time.Duration {
	switch profile {
	case ProfileFast:
		return time.Second
	case ProfileWAN:
		return 30 * time.Second
	default:
		return 5 * time.Second
	}
}

// The quorum modes.
const (
	QuorumMajority = "majority"
	QuorumNone     = "none"
)

// Leases per profile: a voter renews every Lease/4 and ticks every Lease/8.
// The lock-delay, how long a voter waits after its last grant before it
// declares a silent voter evicted, is 2 × Lease: it covers the lease plus
// clock rates within 10 % of each other and the lapsed peer's last tick.
// After a voter fails, the others grant again within Lease + LockDelay
// (plus Serf's detection, which overlaps it).
func leaseTimes(profile string) (lease, lockDelay time.Duration) {
	switch profile {
	case ProfileFast:
		lease = time.Second
	case ProfileWAN:
		lease = 15 * time.Second
	default:
		lease = 5 * time.Second
	}
	return lease, 2 * lease
}

// answerTimeout is a profile's answer-timeout: how long a member may owe
// an answer to one of our requests before it is suspected of refusing to
// answer (see mutex.Config.AnswerTimeout). It is the profile's lease: the
// lock channel's round trip is well under a millisecond on a LAN and under
// a second on a WAN, and lease renewals travel the same channel every
// Lease/4, so an answer later than a whole lease is no network's doing.
func answerTimeout(profile string) time.Duration {
	lease, _ := leaseTimes(profile)
	return lease
}

// LeaseTimes returns the lease and the lock-delay of a profile.
func LeaseTimes(profile string) (lease, lockDelay time.Duration) { return leaseTimes(profile) }

// fastGossipNodes is the fan-out of a gossip round in [ProfileFast]:
// every other node in any cluster this profile suits.
const fastGossipNodes = 32

// DefaultPort is the default Serf gossip port; the lock channel defaults to
// the next port.
const DefaultPort = 7946

// Config configures a [Peer]. Start from [DefaultConfig].
type Config struct {
	// Name is this node's name, unique in the cluster (default: the
	// hostname). A newcomer whose name a live member already has is
	// refused: its [Start] fails with [ErrNameConflict].
	Name string
	// BindAddr is the Serf gossip address, IP:PORT (TCP and UDP). Port 0
	// picks a free port. Default "0.0.0.0:7946".
	BindAddr string
	// AdvertiseAddr is the gossip address other nodes use to reach this
	// one, IP:PORT (default: BindAddr, or this host's private IP when
	// BindAddr's IP is unspecified).
	AdvertiseAddr string
	// LockAddr is the lock channel's listen address, IP:PORT (TCP).
	// Default: BindAddr's IP and BindAddr's port + 1 (port 0 if BindAddr's
	// port is 0).
	LockAddr string
	// LockAdvertise is the lock address published to the other peers
	// (default: LockAddr, with an unspecified IP replaced by the gossip
	// advertise IP).
	LockAdvertise string
	// Join lists gossip addresses (IP:PORT) of existing members. Start
	// retries them with backoff until one answers or its ctx ends. Empty
	// starts a new cluster.
	Join []string
	// JoinAttempts bounds the attempts to join (each tries every Join
	// address once); when they all fail Start returns [ErrNoJoin]. 0
	// retries until Start's ctx ends.
	JoinAttempts int
	// LeftMemberTimeout is how long a member that left stays listed (as
	// left) before it is forgotten; 0 means [LeftMemberTimeout]. Failed
	// members stay for Serf's reconnect window (24 h).
	LeftMemberTimeout time.Duration
	// Profile selects Serf's timers: [ProfileLAN] (default),
	// [ProfileWAN] or [ProfileFast].
	Profile string
	// Key is the cluster key: nil for plaintext, or 16, 24 or 32 bytes
	// (AES-128/192/256-GCM). It encrypts both Serf's gossip and the lock
	// channel. Every member must use the same key. It is the first key of
	// the peer's keyring, which [Peer.Keys] changes on every member at
	// once (key rotation without a restart); a peer started later needs
	// the key the cluster uses by then.
	Key []byte
	// KeyringFile, if set with a Key, keeps the keyring across restarts:
	// Serf rewrites it at every key operation, and at start it is the
	// keyring when it exists (Key then only creates it). See
	// keyringfile.go.
	KeyringFile string
	// KeepPermissions enables the Roucairol–Carvalho optimisation: a
	// permission received is kept until another peer asks for it, so
	// repeated uncontended locking sends no message.
	KeepPermissions bool
	// Quorum is [QuorumMajority] (the default, also for "") or
	// [QuorumNone]. In majority mode a peer holds a lock only while a
	// majority of the voters grants it a lease, so no partition, pause
	// or false failure report gives two holders; a side without a
	// majority grants nothing. None is plain Ricart–Agrawala: a member
	// Serf reports failed counts as having answered (available, unsafe
	// under partitions and pauses).
	Quorum string
	// StateDir is where a majority-mode peer keeps what must survive a
	// restart (the voter set and a floor for its fencing tokens), in the
	// file hardstate.json. Empty keeps nothing: a restart is then safe
	// for mutual exclusion, but fencing tokens may fall if a majority of
	// the voters restart together, and a cluster whose every peer
	// restarted must be formed anew.
	StateDir string
	// AnswerTimeout is how long a member may owe an answer to one of our
	// requests before it is suspected of refusing to answer: logged,
	// shown in the status, and in majority mode evicted once a majority
	// of the voters suspect it. Zero is the profile's (its lease: 1 s
	// fast, 5 s lan, 15 s wan); negative turns suspicion off.
	AnswerTimeout time.Duration
	// MaxHold bounds a single hold (0: none): a hold that reaches it is
	// revoked (reads of its lock file fail with EIO), and a member that
	// has deferred this peer while holding for longer than MaxHold plus
	// the lock-delay is suspected of refusing to answer. Every member
	// must use the same.
	MaxHold time.Duration
	// Logger receives the peer's logs, Serf's and memberlist's included
	// (their INFO lines at debug level). Nil discards.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults: the hostname as Name, gossip on
// 0.0.0.0:7946, the lock channel on 0.0.0.0:7947, the LAN profile, no key.
func DefaultConfig() Config {
	host, err := os.Hostname()
	if err != nil {
		host = ""
	}
	return Config{
		Name:     host,
		BindAddr: net.JoinHostPort("0.0.0.0", strconv.Itoa(DefaultPort)),
		Profile:  ProfileLAN,
	}
}

// Validate reports every problem with the configuration, joined. Empty
// Name, BindAddr and Profile stand for their defaults, as in [Start].
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if err := mutex.ValidNodeName(c.Name); err != nil {
		errs = append(errs, fmt.Errorf("peer: config: Name: %w", err))
	}
	check := func(field, addr string, required bool) {
		if addr == "" {
			if required {
				errs = append(errs, fmt.Errorf("peer: config: %s is empty", field))
			}
			return
		}
		if _, _, err := splitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("peer: config: %s: %w", field, err))
		}
	}
	check("BindAddr", c.BindAddr, true)
	if _, port, err := splitHostPort(c.BindAddr); err == nil && port == 65535 && c.LockAddr == "" {
		errs = append(errs, errors.New("peer: config: BindAddr port 65535 leaves no port for the lock channel "+
			"(its default is the gossip port + 1): set LockAddr"))
	}
	check("AdvertiseAddr", c.AdvertiseAddr, false)
	check("LockAddr", c.LockAddr, false)
	check("LockAdvertise", c.LockAdvertise, false)
	if c.LeftMemberTimeout < 0 {
		errs = append(errs, errors.New("peer: config: LeftMemberTimeout is negative (0 = the default)"))
	}
	if c.JoinAttempts < 0 {
		errs = append(errs, fmt.Errorf("peer: config: JoinAttempts %d is negative (0 = until ctx ends)", c.JoinAttempts))
	}
	for i, j := range c.Join {
		if j == "" {
			errs = append(errs, fmt.Errorf("peer: config: Join[%d] is empty", i))
		}
	}
	switch c.Profile {
	case ProfileLAN, ProfileWAN, ProfileFast, "":
	default:
		errs = append(errs, fmt.Errorf("peer: config: unknown Profile %q (want %q, %q or %q)",
			c.Profile, ProfileLAN, ProfileWAN, ProfileFast))
	}
	switch c.Quorum {
	case "", QuorumMajority:
		if c.KeepPermissions {
			errs = append(errs, errors.New("peer: config: KeepPermissions (the fast path) needs Quorum none: "+
				"in majority mode it is not yet proven to keep fencing tokens rising"))
		}
	case QuorumNone:
	default:
		errs = append(errs, fmt.Errorf("peer: config: unknown Quorum %q (want %q or %q)", c.Quorum, QuorumMajority, QuorumNone))
	}
	if len(c.Key) != 0 {
		if err := transport.CheckKey(c.Key); err != nil {
			errs = append(errs, fmt.Errorf("peer: config: Key: %w", err))
		}
	}
	return errors.Join(errs...)
}

// splitHostPort parses IP:PORT; the IP must be literal.
func splitHostPort(addr string) (net.IP, int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, 0, err
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return nil, 0, fmt.Errorf("%q is not an IP address", host)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, 0, fmt.Errorf("bad port %q", portStr)
	}
	return ip, int(port), nil
}

// profile returns the memberlist configuration of a profile and Serf's
// LeavePropagateDelay to go with it.
//
// Every profile lets a node that was declared failed come back at once at
// another address under its name (memberlist's DeadNodeReclaimTime; by
// default never, until the dead entry is forgotten, which takes seconds):
// a restarted peer is a new incarnation anyway (a new boot nonce). Until
// its old life is declared failed, a restart at another address is a name
// conflict: the newcomer's Start fails with ErrNameConflict.
func profile(name string) (*memberlist.Config, time.Duration) {
	mc, leave := profileTimers(name)
	mc.DeadNodeReclaimTime = time.Nanosecond // 0 would mean never
	return mc, leave
}

func profileTimers(name string) (*memberlist.Config, time.Duration) {
	switch name {
	case ProfileWAN:
		return memberlist.DefaultWANConfig(), time.Second
	case ProfileFast:
		mc := memberlist.DefaultLANConfig()
		mc.GossipInterval = 10 * time.Millisecond
		mc.GossipNodes = fastGossipNodes
		mc.ProbeInterval = 100 * time.Millisecond
		mc.ProbeTimeout = 50 * time.Millisecond
		mc.SuspicionMult = 3
		mc.PushPullInterval = 5 * time.Second
		mc.GossipToTheDeadTime = 5 * time.Second
		// Stay up long enough to answer a few probes while the leave
		// intent spreads.
		return mc, 200 * time.Millisecond
	default:
		return memberlist.DefaultLANConfig(), time.Second
	}
}
