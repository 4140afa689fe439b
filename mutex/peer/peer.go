package peer

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"

	"github.com/dlockfs/dlockfs/mutex"
)

// Errors.
var (
	// ErrClosed: the peer has left, failed, or is leaving.
	ErrClosed = errors.New("peer: closed")
	// ErrNotHeld: Unlock of a grant this peer does not hold (already
	// unlocked, or withdrawn by a cancelled context).
	ErrNotHeld = errors.New("peer: lock not held")
	// ErrNameConflict: Start joined a cluster where a live member already
	// has this peer's name; the newcomer gives way.
	ErrNameConflict = errors.New("peer: another live node has this name")
	// ErrSerfDown: Serf shut down on its own.
	ErrSerfDown = errors.New("peer: serf shut down unexpectedly")
	// ErrKeyMismatch: the cluster answered the join, but with another
	// cluster key (or none where we have one, or the other way round).
	ErrKeyMismatch = errors.New("peer: cluster key mismatch")
)

// Peer is one running member of a dlockfs cluster: the Ricart–Agrawala core
// behind a driver goroutine, Serf for membership and a TCP lock channel.
// Its methods are safe for concurrent use.
type Peer struct {
	name      string
	inc       uint64
	profile   string
	encrypted bool
	keyring   *memberlist.Keyring // nil: plaintext; Serf's and the lock channel's
	log       *slog.Logger

	serf       *serf.Serf // nil in driver-only tests
	tr         lockTransport
	events     chan serf.Event  // Serf's events, to the driver
	conflicts  chan serf.Member // alive claims to our name by other lives (see conflictWatch)
	tcpTimeout time.Duration    // memberlist's TCPTimeout: bounds one join exchange

	joinAttempts int // Config.JoinAttempts

	calls  chan call // local calls into the driver
	nextOp atomic.Uint64

	// The lifecycle (lifecycle.go): requests to the lifecycle goroutine,
	// which closes done once the peer has stopped (Serf, driver and lock
	// channel all ended), after it recorded end (under endMu: Err reads
	// the cause at any time).
	life  chan lifeReq
	done  chan struct{}
	endMu sync.Mutex
	end   ending

	// coreMu guards the core and everything below it: held by the driver
	// goroutine for each input, and, while the driver runs (running), by a
	// lock channel reader delivering a message (inbox) or a Lock or
	// Unlock stepping the core itself (direct).
	coreMu  sync.Mutex
	running bool
	inbox   *inbox // the lock channel's Deliver (nil: messages come on Incoming)

	// Owned by the driver goroutine (see coreMu).
	core       *mutex.Core
	quorum     mutex.QuorumMode
	lease      time.Duration
	answerTO   time.Duration // the core's AnswerTimeout (0: off)
	statePath  string        // HardState file ("" keeps none)
	epoch      time.Time     // the core's clock is the monotonic time since
	leftAck    chan<- struct{}
	revoked    sync.Map // mutex.OpenerID -> lock name (string): holds a lapse ended
	waiters    map[mutex.OpenerID]waiter
	held       map[mutex.OpenerID]string
	heldPeak   int // the most entries waiters or held had since made (Go maps keep their peak size)
	members    map[string]memberInfo
	closed     bool // core.Shutdown done: no new openers
	dropWarn   time.Time
	dropsQuiet uint64
	forgedLog  map[string]time.Time      // member -> last forgery logged
	breakWait  map[string][]chan<- error // lock -> Break calls awaiting the holder's name (driver-owned)
}

// Start creates a peer: it opens the lock channel, starts Serf, and joins
// cfg.Join, retried with backoff until one address answers or ctx ends (a
// cluster key mismatch fails at once with [ErrKeyMismatch], a live member
// with our name with [ErrNameConflict]). It returns once the core counts
// every member the join revealed. Empty Name, BindAddr and Profile take
// their [DefaultConfig] values. Stop the peer with [Peer.Leave].
func Start(ctx context.Context, cfg Config) (*Peer, error) {
	return start(ctx, cfg, listenTCP)
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Name == "" {
		c.Name = d.Name
	}
	if c.BindAddr == "" {
		c.BindAddr = d.BindAddr
	}
	if c.Profile == "" {
		c.Profile = d.Profile
	}
	if c.Quorum == "" {
		c.Quorum = QuorumMajority
	}
	return c
}

func start(ctx context.Context, cfg Config, listen func(transportConfig) (lockTransport, error)) (*Peer, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("node", cfg.Name)
	inc, err := nonce()
	if err != nil {
		return nil, err
	}

	bindIP, bindPort, _ := splitHostPort(cfg.BindAddr)
	lockListen := cfg.LockAddr
	if lockListen == "" {
		port := 0
		if bindPort != 0 {
			port = bindPort + 1
		}
		lockListen = net.JoinHostPort(bindIP.String(), strconv.Itoa(port))
	}
	// The lock channel binds first (its address goes in the Serf tags), so
	// a taken gossip port would otherwise be reported as the lock port
	// next to it (another dlockfs holds both). Name the one that is taken.
	if err := probeGossipPort(bindIP, bindPort); err != nil {
		return nil, err
	}
	// One keyring for gossip and the lock channel: Serf's KeyManager
	// changes it on every member, and the lock channel reads it at each
	// handshake (see keys.go).
	keyring, err := loadKeyring(cfg, log) // keyringfile.go
	if err != nil {
		return nil, err
	}
	tc := transportConfig{
		Name:          cfg.Name,
		Incarnation:   inc,
		ListenAddr:    lockListen,
		AdvertiseAddr: cfg.LockAdvertise,
		Logger:        log.With("component", "transport"),
	}
	if keyring != nil {
		tc.Keyring = keyring
	}
	box := &inbox{ready: make(chan struct{})}
	tc.Deliver = box.deliver
	tr, err := listen(tc)
	if err != nil {
		return nil, fmt.Errorf("peer: lock channel port (TCP) %s is not available: %w", lockListen, err)
	}

	p, err := newPeer(cfg, log, inc, tr)
	if err != nil {
		tr.Close()
		return nil, err
	}
	box.p, p.inbox = p, box
	p.encrypted = keyring != nil
	p.joinAttempts = cfg.JoinAttempts
	p.keyring = keyring
	if len(cfg.Join) == 0 {
		p.core.Bootstrap() // a new cluster, or our own voter set from StateDir
	}

	mc, leaveDelay := profile(cfg.Profile)
	mc.BindAddr = bindIP.String()
	mc.BindPort = bindPort
	mc.AdvertisePort = bindPort
	if cfg.AdvertiseAddr != "" {
		ip, port, _ := splitHostPort(cfg.AdvertiseAddr)
		mc.AdvertiseAddr = ip.String()
		mc.AdvertisePort = port
	}
	if keyring != nil {
		mc.Keyring = keyring
	}
	p.tcpTimeout = mc.TCPTimeout
	serfLog := newSerfLogger(log.With("component", "serf"))
	mc.Logger = serfLog

	sc := serf.DefaultConfig()
	sc.NodeName = cfg.Name
	sc.Tags = map[string]string{tagNonce: formatNonce(inc), tagLock: tr.Addr()}
	sc.EventCh = p.events
	sc.LogOutput = nil
	sc.Logger = serfLog
	sc.MemberlistConfig = mc
	if keyring != nil {
		sc.KeyringFile = cfg.KeyringFile // Serf rewrites it at each key operation (keyringfile.go)
	}
	sc.LeavePropagateDelay = leaveDelay
	// Serf's own resolution is a vote that, in a cluster of two, shuts
	// down both nodes (neither gets a majority of zero answers). We keep
	// the node the cluster knows and refuse the newcomer in join instead.
	sc.EnableNameConflictResolution = false
	sc.Merge = conflictWatch{name: cfg.Name, nonce: formatNonce(inc), claims: p.conflicts}
	sc.ReconnectInterval = reconnectInterval(cfg.Profile)
	// A member that left gracefully is forgotten (an EventMemberReap,
	// which the driver treats as gone) after LeftMemberTimeout instead of
	// Serf's 24 h, so status stops listing it. Failed members keep Serf's
	// ReconnectTimeout (24 h): they may come back, and may be voters.
	sc.TombstoneTimeout = LeftMemberTimeout
	if cfg.LeftMemberTimeout > 0 {
		sc.TombstoneTimeout = cfg.LeftMemberTimeout
		// Serf reaps every 15 s: a shorter timeout is checked oftener.
		sc.ReapInterval = min(sc.ReapInterval, max(cfg.LeftMemberTimeout/4, 10*time.Millisecond))
	}
	// Serf's queries (only its KeyManager's: key rotation) time out after
	// GossipInterval × QueryTimeoutMult × log10(N+1): 160 ms with the fast
	// profile's 10 ms gossip, short enough for a loaded host to miss an
	// answer. They end as soon as every member has answered, so a longer
	// bound (1 s) costs nothing while all members are up.
	if cfg.Profile == ProfileFast {
		sc.QueryTimeoutMult = 100
	}
	s, err := serf.Create(sc)
	if err != nil {
		tr.Close()
		return nil, fmt.Errorf("peer: serf on %s: %w", cfg.BindAddr, err)
	}
	p.serf = s
	// An unspecified lock IP is replaced by the IP Serf advertises,
	// before anybody can see our tags.
	if lockAddr, changed := advertisedLockAddr(tr.Addr(), s.LocalMember().Addr); changed {
		sc.Tags[tagLock] = lockAddr
		if err := s.SetTags(sc.Tags); err != nil {
			s.Shutdown()
			tr.Close()
			return nil, fmt.Errorf("peer: publish lock address: %w", err)
		}
	}
	p.begin(s.ShutdownCh())
	p.serveStatusQueries() // cluster.go

	if !p.encrypted {
		log.Warn("no cluster key: gossip and lock messages are plaintext")
	}
	if len(cfg.Join) > 0 {
		if err := p.join(ctx, cfg.Join); err != nil {
			p.kill()
			return nil, err
		}
	}
	if err := p.markJoined(); err != nil {
		p.kill()
		return nil, fmt.Errorf("peer: start: %w", err)
	}
	log.Info("peer started", "gossip", fmt.Sprintf("%s:%d", s.LocalMember().Addr, s.LocalMember().Port),
		"lock", s.LocalMember().Tags[tagLock], "profile", cfg.Profile, "incarnation", formatNonce(inc))
	return p, nil
}

// newPeer makes a peer around a core and a transport, without Serf and
// without starting the driver.
func newPeer(cfg Config, log *slog.Logger, inc uint64, tr lockTransport) (*Peer, error) {
	mc := mutex.Config{Name: cfg.Name, Incarnation: inc, KeepPermissions: cfg.KeepPermissions,
		AnswerTimeout: cfg.AnswerTimeout, MaxHold: cfg.MaxHold}
	switch {
	case cfg.AnswerTimeout == 0:
		mc.AnswerTimeout = answerTimeout(cfg.Profile)
	case cfg.AnswerTimeout < 0:
		mc.AnswerTimeout = 0
	}
	var statePath string
	if cfg.Quorum != QuorumNone {
		mc.Quorum = mutex.QuorumMajority
		mc.Lease, mc.LockDelay = leaseTimes(cfg.Profile)
		if cfg.StateDir != "" {
			statePath = filepath.Join(cfg.StateDir, hardStateFile)
			hs, err := readHardState(statePath)
			if err != nil {
				return nil, err
			}
			mc.HardState = hs
		}
	}
	core, err := mutex.New(mc)
	if err != nil {
		return nil, fmt.Errorf("peer: %w", err)
	}
	return &Peer{
		quorum:    mc.Quorum,
		lease:     mc.Lease,
		answerTO:  mc.AnswerTimeout,
		statePath: statePath,
		epoch:     time.Now(),
		name:      cfg.Name,
		inc:       inc,
		profile:   cfg.Profile,
		log:       log,
		tr:        tr,
		events:    make(chan serf.Event, 1024),
		conflicts: make(chan serf.Member, 16),
		calls:     make(chan call),
		life:      make(chan lifeReq),
		done:      make(chan struct{}),
		core:      core,
		waiters:   make(map[mutex.OpenerID]waiter),
		held:      make(map[mutex.OpenerID]string),
		members:   make(map[string]memberInfo),
	}, nil
}

// advertisedLockAddr replaces an unspecified IP in the lock channel's
// address by the gossip IP.
func advertisedLockAddr(lockAddr string, gossipIP net.IP) (string, bool) {
	host, port, err := net.SplitHostPort(lockAddr)
	if err != nil {
		return lockAddr, false
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsUnspecified() || gossipIP == nil {
		return lockAddr, false
	}
	return net.JoinHostPort(gossipIP.String(), port), true
}

// nonce returns a boot nonce: the boot time in nanoseconds with its low 16
// bits random, so that a restart has a higher incarnation than the life
// before it (majority mode counts on that) and two boots in one instant
// still differ.
func nonce() (uint64, error) {
	var b [2]byte
	if _, err := rand.Read(b[:]); err != nil {
		return 0, fmt.Errorf("peer: boot nonce: %w", err)
	}
	n := uint64(time.Now().UnixNano())&^0xffff | uint64(binary.BigEndian.Uint16(b[:]))
	if n == 0 {
		return 0, errors.New("peer: boot nonce: the clock reads zero")
	}
	return n, nil
}

func formatNonce(n uint64) string { return strconv.FormatUint(n, 10) }

// Node returns this peer's node name.
func (p *Peer) Node() string { return p.name }

// GossipAddr returns the Serf address other peers join, IP:PORT.
func (p *Peer) GossipAddr() string {
	if p.serf == nil {
		return ""
	}
	m := p.serf.LocalMember()
	return net.JoinHostPort(m.Addr.String(), strconv.Itoa(int(m.Port)))
}

// Incarnation returns this peer's boot nonce.
func (p *Peer) Incarnation() uint64 { return p.inc }

// Lock waits until this peer holds lock name. Cancelling ctx withdraws the
// request without a trace and returns ctx's error (wrapped). A stopped
// peer returns [ErrClosed].
func (p *Peer) Lock(ctx context.Context, name string) (mutex.Grant, error) {
	return p.acquire(ctx, name, false, false)
}

// LockShared is Lock for a shared (reader) hold: readers on every peer hold
// together, a writer (Lock) excludes them, and requests are served in
// timestamp order, so a reader that asks after a writer waits behind it.
// The grant is given back with Unlock.
func (p *Peer) LockShared(ctx context.Context, name string) (mutex.Grant, error) {
	return p.acquire(ctx, name, false, true)
}

// TryLockShared is LockShared that does not wait: it fails with
// [mutex.ErrLocked] (wrapped) when a writer holds the lock or asked for it
// first, here or on another peer. Beside readers only, it is granted (at
// once if this peer already holds the lock shared).
func (p *Peer) TryLockShared(ctx context.Context, name string) (mutex.Grant, error) {
	return p.acquire(ctx, name, true, true)
}

// TryLock is Lock that does not wait for a holder: it returns
// [mutex.ErrLocked] (wrapped) when the lock is held or wanted, here or by
// another peer. It still waits for every peer's answer (one round trip).
func (p *Peer) TryLock(ctx context.Context, name string) (mutex.Grant, error) {
	return p.acquire(ctx, name, true, false)
}

func (p *Peer) acquire(ctx context.Context, name string, try, shared bool) (mutex.Grant, error) {
	what := "lock"
	if try {
		what = "trylock"
	}
	if shared {
		what += " shared"
	}
	if err := mutex.ValidLockName(name); err != nil {
		return mutex.Grant{}, fmt.Errorf("peer: %s: %w", what, err)
	}
	op := mutex.OpenerID(p.nextOp.Add(1))
	res := make(chan result, 1)
	c := call{kind: callAcquire, op: op, lock: name, try: try, shared: shared, res: res}
	if err := ctx.Err(); err != nil {
		return mutex.Grant{}, fmt.Errorf("peer: %s %q: %w", what, name, err)
	}
	// On this goroutine while the driver runs: no hand-off to it and back.
	if !p.direct(c) {
		select {
		case p.calls <- c:
		case <-ctx.Done():
			return mutex.Grant{}, fmt.Errorf("peer: %s %q: %w", what, name, ctx.Err())
		case <-p.done:
			return mutex.Grant{}, fmt.Errorf("peer: %s %q: %w", what, name, ErrClosed)
		}
	}
	select {
	case r := <-res:
		if r.err != nil {
			return mutex.Grant{}, fmt.Errorf("peer: %s %q: %w", what, name, r.err)
		}
		return r.grant, nil
	case <-ctx.Done():
		// Withdraw; if the grant came meanwhile, the driver releases it.
		// Directly, as the call was made: through the driver, a next
		// call stepped directly could overtake the withdrawal (a
		// TryLock refused by this dead request).
		if cc := (call{kind: callCancel, op: op}); !p.direct(cc) {
			select {
			case p.calls <- cc:
			case <-p.done:
			}
		}
		return mutex.Grant{}, fmt.Errorf("peer: %s %q: %w", what, name, ctx.Err())
	case <-p.done:
		return mutex.Grant{}, fmt.Errorf("peer: %s %q: %w", what, name, ErrClosed)
	}
}

// Unlock releases a grant returned by Lock or TryLock. It does not wait for
// the network: the replies it owes are queued on the lock channel.
func (p *Peer) Unlock(g mutex.Grant) error {
	errc := make(chan error, 1)
	c := call{kind: callRelease, op: g.Opener, lock: g.Lock, errc: errc}
	if !p.direct(c) {
		select {
		case p.calls <- c:
		case <-p.done:
			return fmt.Errorf("peer: unlock %q: %w", g.Lock, ErrClosed)
		}
	}
	select {
	case err := <-errc:
		if err != nil {
			return fmt.Errorf("peer: unlock %q: %w", g.Lock, err)
		}
		return nil
	case <-p.done:
		return fmt.Errorf("peer: unlock %q: %w", g.Lock, ErrClosed)
	}
}

// Names returns the sorted names of the locks this peer has state for:
// held, wanted or waited for here, or requested by a peer and not yet
// forgotten (the core forgets an idle lock that nothing refers to).
func (p *Peer) Names() []string {
	res := make(chan []string, 1)
	select {
	case p.calls <- call{kind: callNames, names: res}:
	case <-p.done:
		return p.finalNames()
	}
	select {
	case n := <-res:
		return n
	case <-p.done:
		return p.finalNames()
	}
}

// finalNames is Names once the peer has stopped.
func (p *Peer) finalNames() []string {
	final := p.ended().final
	names := make([]string, len(final.Locks))
	for i, l := range final.Locks {
		names[i] = l.Name
	}
	return names
}

// coreStatus asks the driver for the core's status; once the peer has
// stopped, the last one.
func (p *Peer) coreStatus() mutex.Status {
	res := make(chan mutex.Status, 1)
	select {
	case p.calls <- call{kind: callStatus, status: res}:
	case <-p.done:
		return p.ended().final
	}
	select {
	case s := <-res:
		return s
	case <-p.done:
		return p.ended().final
	}
}

// LeftMemberTimeout is how long a member that left stays listed (as left)
// before it is forgotten; Serf checks every 15 s (ReapInterval).
const LeftMemberTimeout = 5 * time.Minute

// probeGossipPort checks that Serf's gossip port (TCP and UDP) can be bound,
// and closes it again; port 0 (any) is not checked.
func probeGossipPort(ip net.IP, port int) error {
	if port == 0 {
		return nil
	}
	addr := net.JoinHostPort(ip.String(), strconv.Itoa(port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("peer: gossip port (Serf, TCP) %s is not available: %w", addr, err)
	}
	l.Close()
	u, err := net.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("peer: gossip port (Serf, UDP) %s is not available: %w", addr, err)
	}
	u.Close()
	return nil
}
