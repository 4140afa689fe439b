package node

import (
	"flag"
	"net"
	"strings"
	"time"

	"github.com/dlockfs/dlockfs/cmd/dlockfs/internal/cli"
	"github.com/dlockfs/dlockfs/mutex"
)

// Defaults of the mount command.
const (
	defaultBind        = "0.0.0.0:7946"
	defaultSerfPort    = "7946"
	defaultGossip      = "lan"
	defaultJoinTimeout = time.Minute
	// defaultDrainTimeout bounds the wait for local holders at SIGTERM.
	defaultDrainTimeout = 30 * time.Second
	// defaultFastPath: see the --fast-path help text for why it is off.
	defaultFastPath = false
	// defaultLockName is the lock a bare MOUNTPOINT means in lock.
	defaultLockName = "lock"
	// defaultQuorum: majority mode, safe under partitions and pauses.
	defaultQuorum = "majority"
	// defaultStateDirBase holds each node's --state-dir by default:
	// defaultStateDirBase/NODENAME.
	defaultStateDirBase = "/var/lib/dlockfs"
)

// config is a parsed command line. cmd names the command; the field of that
// command holds its options, the other fields stay zero.
type config struct {
	cmd    string
	mount  mountConfig
	status statusConfig
	lock   lockConfig
	check  checkConfig
	keys   keysConfig
	forget forgetConfig
	brk    breakConfig
}

// mountConfig holds the options of "dlockfs mount".
type mountConfig struct {
	mountpoint    string
	name          string // "" = hostname, resolved when mounting
	bind          string
	advertise     string
	lockBind      string // "" = bind IP, Serf port + 1 (the peer's default)
	lockAdvertise string
	join          []string
	joinTimeout   time.Duration // 0 = one attempt (jointimeout.go)
	gossip        string
	keyFile       string
	control       string // control socket; "" = MOUNTPOINT.sock, "none" = no socket
	allowOther    bool
	debug         bool
	fastPath      bool
	drainTimeout  time.Duration // 0 = leave at SIGTERM without waiting for holders
	metrics       string        // Prometheus listen address; "" = off
	quorum        string        // "majority" (default) or "none"
	stateDir      string        // "" = defaultStateDirBase/NAME, resolved when mounting
	answerTimeout time.Duration // 0 = the --gossip profile's; negative = off
	maxHold       time.Duration // 0 = no bound
}

// statusConfig holds the options of "dlockfs status".
type statusConfig struct {
	mountpoint string
	json       bool
	watch      bool
	interval   time.Duration // between snapshots with --watch
	count      int           // snapshots with --watch; 0 = until interrupted
	cluster    bool          // ask every member (clusterstatus.go)
	timeout    time.Duration // with --cluster: the members' bound
	control    string        // with --cluster: control socket; "" = MOUNTPOINT.sock
}

// defaultWatchInterval is status --watch's refresh interval.
const defaultWatchInterval = 2 * time.Second

// lockConfig holds the options of "dlockfs lock".
type lockConfig struct {
	path    string // MOUNTPOINT or MOUNTPOINT/NAME, as given
	try     bool
	shared  bool          // a shared (reader) hold, through MOUNT/flock/NAME
	timeout time.Duration // 0 = wait forever; an explicit --timeout 0 sets try instead
	// revokeGrace: SIGTERM to SIGKILL of CMD after a revocation.
	revokeGrace time.Duration
	argv        []string // CMD [ARGS...]
}

// checkConfig holds the options of "dlockfs check".
type checkConfig struct {
	mountpoint string
	quiet      bool
}

// parseMount parses "mount [flags] MOUNTPOINT".
func parseMount(cfg *config, args []string) error {
	m := &cfg.mount
	fs := cli.NewFlagSet("mount")
	fs.StringVar(&m.name, "name", "", "")
	fs.StringVar(&m.bind, "bind", defaultBind, "")
	fs.StringVar(&m.advertise, "advertise", "", "")
	fs.StringVar(&m.lockBind, "lock-bind", "", "")
	fs.StringVar(&m.lockAdvertise, "lock-advertise", "", "")
	fs.Var((*cli.ListFlag)(&m.join), "join", "")
	fs.DurationVar(&m.joinTimeout, "join-timeout", defaultJoinTimeout, "")
	fs.StringVar(&m.gossip, "gossip", defaultGossip, "")
	fs.StringVar(&m.keyFile, "key-file", "", "")
	fs.StringVar(&m.control, "control", "", "")
	fs.BoolVar(&m.allowOther, "allow-other", false, "")
	fs.BoolVar(&m.debug, "debug", false, "")
	fs.BoolVar(&m.fastPath, "fast-path", defaultFastPath, "")
	fs.DurationVar(&m.drainTimeout, "drain-timeout", defaultDrainTimeout, "")
	fs.StringVar(&m.metrics, "metrics", "", "")
	fs.StringVar(&m.quorum, "quorum", defaultQuorum, "")
	fs.StringVar(&m.stateDir, "state-dir", "", "")
	fs.DurationVar(&m.answerTimeout, "answer-timeout", 0, "")
	fs.DurationVar(&m.maxHold, "max-hold", 0, "")
	var err error
	if m.mountpoint, err = cli.ParseOne(fs, args, "MOUNTPOINT"); err != nil {
		return err
	}
	if m.name != "" && mutex.ValidNodeName(m.name) != nil {
		return cli.Usagef("--name: %v", mutex.ValidNodeName(m.name))
	}
	for _, f := range []struct{ flag, val string }{
		{"bind", m.bind}, {"advertise", m.advertise},
		{"lock-bind", m.lockBind}, {"lock-advertise", m.lockAdvertise}, {"metrics", m.metrics},
	} {
		if f.val == "" && f.flag != "bind" {
			continue
		}
		if err := cli.CheckHostPort(f.val); err != nil {
			return cli.Usagef("--%s %q: %w", f.flag, f.val, err)
		}
	}
	for i, j := range m.join {
		if _, _, err := net.SplitHostPort(j); err != nil {
			// A bare host or IP means the default Serf port.
			j = net.JoinHostPort(strings.Trim(j, "[]"), defaultSerfPort)
			m.join[i] = j
		}
		if err := cli.CheckHostPort(j); err != nil {
			return cli.Usagef("--join %q: %w", j, err)
		}
	}
	switch m.gossip {
	case "lan", "wan", "fast":
	default:
		return cli.Usagef("--gossip %q: want lan, wan or fast", m.gossip)
	}
	switch m.quorum {
	case "majority", "none":
	default:
		return cli.Usagef("--quorum %q: want majority or none", m.quorum)
	}
	if m.fastPath && m.quorum != "none" {
		return cli.Usagef("--fast-path needs --quorum none: in majority mode the fast path is not yet " +
			"proven to keep fencing tokens rising (the simulation found them falling)")
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["state-dir"] && m.stateDir == "" {
		return cli.Usagef("--state-dir: empty directory name")
	}
	if m.drainTimeout < 0 {
		return cli.Usagef("--drain-timeout %v: must not be negative (0 = do not wait for holders)", m.drainTimeout)
	}
	if m.joinTimeout < 0 {
		return cli.Usagef("--join-timeout %v: must not be negative (0 = one attempt)", m.joinTimeout)
	}
	if set["answer-timeout"] && m.answerTimeout == 0 {
		m.answerTimeout = -1 // 0 on the command line: off
	} else if m.answerTimeout < 0 {
		return cli.Usagef("--answer-timeout %v: must not be negative (0 = off)", m.answerTimeout)
	}
	if m.maxHold < 0 {
		return cli.Usagef("--max-hold %v: must not be negative (0 = no bound)", m.maxHold)
	}
	return nil
}

// parseStatus parses "status [--json | --watch [--interval D] [--count N]]
// MOUNTPOINT".
func parseStatus(cfg *config, args []string) error {
	s := &cfg.status
	fs := cli.NewFlagSet("status")
	fs.BoolVar(&s.json, "json", false, "")
	fs.BoolVar(&s.watch, "watch", false, "")
	fs.DurationVar(&s.interval, "interval", defaultWatchInterval, "")
	fs.IntVar(&s.count, "count", 0, "")
	clusterFlags(fs, s)
	var err error
	if s.mountpoint, err = cli.ParseOne(fs, args, "MOUNTPOINT"); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	switch {
	case s.json && s.watch:
		return cli.Usagef("--json and --watch do not go together (for a JSON stream, loop over 'status --json')")
	case !s.watch && (set["interval"] || set["count"]):
		return cli.Usagef("--interval and --count go with --watch")
	case s.interval <= 0:
		return cli.Usagef("--interval %v: must be positive", s.interval)
	case s.count < 0:
		return cli.Usagef("--count %d: must not be negative (0 = until interrupted)", s.count)
	}
	return checkClusterFlags(s, set)
}

// parseKeygen parses "keygen" (no arguments).
func parseKeygen(cfg *config, args []string) error {
	pos, _, err := cli.ParseInterspersed(cli.NewFlagSet("keygen"), args, -1)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return cli.Usagef("keygen takes no arguments, got %q", pos)
	}
	return nil
}

// parseLock parses "lock [--shared] [--try] [--timeout DUR] MOUNTPOINT[/NAME] [--] CMD
// [ARGS...]". Flags may come before or after the path; the first word after
// the path (or everything after "--") is CMD, and its arguments are never
// parsed as dlockfs flags.
func parseLock(cfg *config, args []string) error {
	l := &cfg.lock
	fs := cli.NewFlagSet("lock")
	fs.BoolVar(&l.try, "try", false, "")
	fs.BoolVar(&l.try, "n", false, "")
	fs.BoolVar(&l.shared, "shared", false, "")
	fs.BoolVar(&l.shared, "s", false, "")
	fs.DurationVar(&l.timeout, "timeout", 0, "")
	fs.DurationVar(&l.timeout, "w", 0, "")
	fs.DurationVar(&l.revokeGrace, "revoke-grace", defaultRevokeGrace, "")
	pos, tail, err := cli.ParseInterspersed(fs, args, 1)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return cli.Usagef("missing MOUNTPOINT[/NAME] and CMD")
	}
	l.path = pos[0]
	l.argv = tail
	if len(l.argv) == 0 {
		return cli.Usagef("missing CMD to run under the lock (e.g. dlockfs lock %s -- make deploy)", l.path)
	}
	if l.timeout < 0 {
		return cli.Usagef("--timeout %v: must not be negative", l.timeout)
	}
	if l.revokeGrace < 0 {
		return cli.Usagef("--revoke-grace %v: must not be negative (0 = SIGKILL at once)", l.revokeGrace)
	}
	if l.try && l.timeout > 0 {
		return cli.Usagef("--try and --timeout exclude each other")
	}
	// --timeout 0 means "do not wait", as flock -w 0 does: a try.
	fs.Visit(func(f *flag.Flag) {
		if (f.Name == "timeout" || f.Name == "w") && l.timeout == 0 {
			l.try = true
		}
	})
	return nil
}

// parseCheck parses "check [-q] MOUNTPOINT".
func parseCheck(cfg *config, args []string) error {
	fs := cli.NewFlagSet("check")
	fs.BoolVar(&cfg.check.quiet, "quiet", false, "")
	fs.BoolVar(&cfg.check.quiet, "q", false, "")
	var err error
	if cfg.check.mountpoint, err = cli.ParseOne(fs, args, "MOUNTPOINT"); err != nil {
		return err
	}
	return nil
}
