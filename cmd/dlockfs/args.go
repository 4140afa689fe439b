package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"
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
	demo   demoOptions
	bench  benchOptions
	// install holds the options of install and uninstall.
	install installConfig
	// topic is the command whose help "dlockfs help TOPIC" asks for.
	topic string
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
	joinTimeout   time.Duration // 0 = retry forever
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
}

// defaultWatchInterval is status --watch's refresh interval.
const defaultWatchInterval = 2 * time.Second

// lockConfig holds the options of "dlockfs lock".
type lockConfig struct {
	path    string // MOUNTPOINT or MOUNTPOINT/NAME, as given
	try     bool
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

// parseArgs parses the command line after the program name. A usage error
// is a *usageError; --help anywhere gives errHelp with cfg.cmd set.
func parseArgs(args []string) (config, error) {
	var cfg config
	if len(args) == 0 {
		return cfg, usagef("no command given")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "-h", "-help", "--help":
		cmd = "help"
	}
	cfg.cmd = cmd
	c, ok := lookupCommand(cmd)
	if !ok {
		return config{}, usagef("unknown command %q", cmd)
	}
	if c.parse == nil {
		return cfg, usagef("command %q is not available in this build", cmd)
	}
	err := c.parse(&cfg, rest)
	return cfg, err
}

// parseMount parses "mount [flags] MOUNTPOINT".
func parseMount(cfg *config, args []string) error {
	m := &cfg.mount
	fs := newFlagSet("mount")
	fs.StringVar(&m.name, "name", "", "")
	fs.StringVar(&m.bind, "bind", defaultBind, "")
	fs.StringVar(&m.advertise, "advertise", "", "")
	fs.StringVar(&m.lockBind, "lock-bind", "", "")
	fs.StringVar(&m.lockAdvertise, "lock-advertise", "", "")
	fs.Var((*listFlag)(&m.join), "join", "")
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
	pos, _, err := parseInterspersed(fs, args, -1)
	if err != nil {
		return err
	}
	if err := onePositional(pos, "MOUNTPOINT"); err != nil {
		return err
	}
	m.mountpoint = pos[0]
	if m.name != "" && strings.ContainsAny(m.name, "\x00/ \t\n") {
		return usagef("--name %q: a node name cannot hold '/', spaces or NUL", m.name)
	}
	for _, f := range []struct{ flag, val string }{
		{"bind", m.bind}, {"advertise", m.advertise},
		{"lock-bind", m.lockBind}, {"lock-advertise", m.lockAdvertise}, {"metrics", m.metrics},
	} {
		if f.val == "" && f.flag != "bind" {
			continue
		}
		if err := checkHostPort(f.val); err != nil {
			return usagef("--%s %q: %w", f.flag, f.val, err)
		}
	}
	for i, j := range m.join {
		if _, _, err := net.SplitHostPort(j); err != nil {
			// A bare host or IP means the default Serf port.
			j = net.JoinHostPort(strings.Trim(j, "[]"), defaultSerfPort)
			m.join[i] = j
		}
		if err := checkHostPort(j); err != nil {
			return usagef("--join %q: %w", j, err)
		}
	}
	switch m.gossip {
	case "lan", "wan", "fast":
	default:
		return usagef("--gossip %q: want lan, wan or fast", m.gossip)
	}
	switch m.quorum {
	case "majority", "none":
	default:
		return usagef("--quorum %q: want majority or none", m.quorum)
	}
	if m.fastPath && m.quorum != "none" {
		return usagef("--fast-path needs --quorum none: in majority mode the fast path is not yet " +
			"proven to keep fencing tokens rising (the simulation found them falling)")
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["state-dir"] && m.stateDir == "" {
		return usagef("--state-dir: empty directory name")
	}
	if m.drainTimeout < 0 {
		return usagef("--drain-timeout %v: must not be negative (0 = do not wait for holders)", m.drainTimeout)
	}
	if m.joinTimeout < 0 {
		return usagef("--join-timeout %v: must not be negative (0 = retry forever)", m.joinTimeout)
	}
	if set["answer-timeout"] && m.answerTimeout == 0 {
		m.answerTimeout = -1 // 0 on the command line: off
	} else if m.answerTimeout < 0 {
		return usagef("--answer-timeout %v: must not be negative (0 = off)", m.answerTimeout)
	}
	if m.maxHold < 0 {
		return usagef("--max-hold %v: must not be negative (0 = no bound)", m.maxHold)
	}
	return nil
}

// parseStatus parses "status [--json | --watch [--interval D] [--count N]]
// MOUNTPOINT".
func parseStatus(cfg *config, args []string) error {
	s := &cfg.status
	fs := newFlagSet("status")
	fs.BoolVar(&s.json, "json", false, "")
	fs.BoolVar(&s.watch, "watch", false, "")
	fs.DurationVar(&s.interval, "interval", defaultWatchInterval, "")
	fs.IntVar(&s.count, "count", 0, "")
	pos, _, err := parseInterspersed(fs, args, -1)
	if err != nil {
		return err
	}
	if err := onePositional(pos, "MOUNTPOINT"); err != nil {
		return err
	}
	s.mountpoint = pos[0]
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	switch {
	case s.json && s.watch:
		return usagef("--json and --watch do not go together (for a JSON stream, loop over 'status --json')")
	case !s.watch && (set["interval"] || set["count"]):
		return usagef("--interval and --count go with --watch")
	case s.interval <= 0:
		return usagef("--interval %v: must be positive", s.interval)
	case s.count < 0:
		return usagef("--count %d: must not be negative (0 = until interrupted)", s.count)
	}
	return nil
}

// parseKeygen parses "keygen" (no arguments).
func parseKeygen(cfg *config, args []string) error {
	pos, _, err := parseInterspersed(newFlagSet("keygen"), args, -1)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("keygen takes no arguments, got %q", pos)
	}
	return nil
}

// parseLock parses "lock [--try] [--timeout DUR] MOUNTPOINT[/NAME] [--] CMD
// [ARGS...]". Flags may come before or after the path; the first word after
// the path (or everything after "--") is CMD, and its arguments are never
// parsed as dlockfs flags.
func parseLock(cfg *config, args []string) error {
	l := &cfg.lock
	fs := newFlagSet("lock")
	fs.BoolVar(&l.try, "try", false, "")
	fs.BoolVar(&l.try, "n", false, "")
	fs.DurationVar(&l.timeout, "timeout", 0, "")
	fs.DurationVar(&l.timeout, "w", 0, "")
	fs.DurationVar(&l.revokeGrace, "revoke-grace", defaultRevokeGrace, "")
	pos, tail, err := parseInterspersed(fs, args, 1)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("missing MOUNTPOINT[/NAME] and CMD")
	}
	l.path = pos[0]
	l.argv = tail
	if len(l.argv) == 0 {
		return usagef("missing CMD to run under the lock (e.g. dlockfs lock %s -- make deploy)", l.path)
	}
	if l.timeout < 0 {
		return usagef("--timeout %v: must not be negative", l.timeout)
	}
	if l.revokeGrace < 0 {
		return usagef("--revoke-grace %v: must not be negative (0 = SIGKILL at once)", l.revokeGrace)
	}
	if l.try && l.timeout > 0 {
		return usagef("--try and --timeout exclude each other")
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
	fs := newFlagSet("check")
	fs.BoolVar(&cfg.check.quiet, "quiet", false, "")
	fs.BoolVar(&cfg.check.quiet, "q", false, "")
	pos, _, err := parseInterspersed(fs, args, -1)
	if err != nil {
		return err
	}
	if err := onePositional(pos, "MOUNTPOINT"); err != nil {
		return err
	}
	cfg.check.mountpoint = pos[0]
	return nil
}

// parseHelp parses "help [COMMAND]".
func parseHelp(cfg *config, args []string) error {
	pos, _, err := parseInterspersed(newFlagSet("help"), args, -1)
	if err != nil && !errors.Is(err, errHelp) {
		return err
	}
	switch len(pos) {
	case 0:
	case 1:
		if _, ok := lookupCommand(pos[0]); !ok {
			return usagef("no help for unknown command %q", pos[0])
		}
		cfg.topic = pos[0]
	default:
		return usagef("help takes at most one COMMAND, got %q", pos)
	}
	return nil
}

// newFlagSet returns a silent flag set: usage and errors are ours to print.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseInterspersed parses args with fs, allowing flags before, between and
// after the positional arguments (the stdlib flag package stops at the first
// positional). "--" ends the flags. With stop >= 0, the positional after the
// first stop positionals begins the tail: it and everything after it are
// returned unparsed (a command and its own arguments).
func parseInterspersed(fs *flag.FlagSet, args []string, stop int) (pos, tail []string, err error) {
	var flags []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest := args[i+1:]
			for len(rest) > 0 && (stop < 0 || len(pos) < stop) {
				pos, rest = append(pos, rest[0]), rest[1:]
			}
			tail = rest
			break
		}
		if len(a) > 1 && a[0] == '-' {
			flags = append(flags, a)
			name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
			if f := fs.Lookup(name); f != nil && !hasValue && !isBoolFlag(f) && i+1 < len(args) {
				i++
				flags = append(flags, args[i])
			}
			continue
		}
		if stop >= 0 && len(pos) == stop {
			tail = args[i:]
			break
		}
		pos = append(pos, a)
	}
	if err := fs.Parse(flags); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, nil, errHelp
		}
		return nil, nil, &usageError{err: err}
	}
	return pos, tail, nil
}

// isBoolFlag reports whether f takes no value (like -debug).
func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// onePositional checks that exactly one positional argument, what, is given.
func onePositional(pos []string, what string) error {
	switch len(pos) {
	case 0:
		return usagef("missing %s", what)
	case 1:
		if pos[0] == "" {
			return usagef("empty %s", what)
		}
		return nil
	}
	return usagef("want one %s, got %d arguments: %q", what, len(pos), pos)
}

// checkHostPort accepts IP:PORT or HOST:PORT with a numeric port.
func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("want IP:PORT: %w", err)
	}
	if host == "" {
		return errors.New("want IP:PORT: missing IP")
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("want IP:PORT: bad port %q", port)
	}
	return nil
}

// listFlag is a repeatable flag whose values may also be comma-separated.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// absPath makes p absolute and clean, without following symlinks.
func absPath(p string) (string, error) {
	a, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("%s: %w", p, err)
	}
	return a, nil
}
