package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dlockfs/dlockfs/cmd/dlockfs/internal/cli"
	"github.com/dlockfs/dlockfs/mutex"
	"github.com/dlockfs/dlockfs/mutex/peer"
)

// opBreak is the control socket's operation of "dlockfs break".
const opBreak peer.KeyOp = "break"

// breakTimeout bounds the control socket's wait for a break: the holder
// answers within a round trip, or the core gives up after the
// answer-timeout (at most --answer-timeout: a minute).
const breakTimeout = 2 * time.Minute

// breakConfig holds the options of "dlockfs break".
type breakConfig struct {
	control string
	lock    string
}

const helpBreak = `Usage: dlockfs break [--control PATH] NAME

Break the current hold of lock NAME, on an operator's word: the majority of
the voters evicts the holder at once, instead of waiting for --max-hold (or
for ever, without one). The command talks to one running 'dlockfs mount'
through its control socket (as 'dlockfs forget' does: by default
/run/dlockfs.sock, the socket of a mount at /run/dlockfs). That node asks
the voters who holds NAME and tells every voter to suspect the holder
without waiting for evidence of its own; every node logs the break and the
node that asked. Majority mode (the default --quorum) only, on a voter.

Writes: one line on stdout. The command writes no file; every node writes
the break to its log.

The break does not hand the lock over at once: as after any eviction, no
voter grants the holder a lease for the lock-delay, so its lease lapses and
its hold is revoked (its 'dlockfs lock' exits 17) before anyone else is
granted NAME. The command returns once the voters are told, not once the
holder is evicted. A hold of NAME on the node that serves the socket is
not broken: release it there.

Flags:
  --control PATH  the mount's control socket (default /run/dlockfs.sock)

Examples:
  dlockfs break backup                           # someone hogs "backup"
  dlockfs break --control /tmp/c.sock nightly   # the mount at /tmp/c

Exit codes: 0 the voters were told to evict the holder, 2 usage, 16 no mount
serves the control socket, 1 other (nobody holds NAME, it is held on this
node, not a voter, not majority mode).
`

// Break is "dlockfs break".
func Break() cli.Command {
	return command("break", "evict the holder of a lock at once, on an operator's word (majority mode)",
		helpBreak, parseBreak, runBreak)
}

// parseBreak parses "break [--control PATH] NAME".
func parseBreak(cfg *config, args []string) error {
	b := &cfg.brk
	fs := cli.NewFlagSet("break")
	fs.StringVar(&b.control, "control", defaultControl, "")
	var err error
	if b.lock, err = cli.ParseOne(fs, args, "NAME"); err != nil {
		return err
	}
	if b.control == "" {
		return cli.Usagef("--control: empty path")
	}
	if err := mutex.ValidLockName(b.lock); err != nil {
		return cli.Usagef("NAME %q: %v", b.lock, err)
	}
	return nil
}

// runBreak sends the break to the mount's control socket.
func runBreak(ctx context.Context, e *cli.Env, cfg config) error {
	b := cfg.brk
	reply, err := callControlTimeout(ctx, b.control, controlRequest{Op: opBreak, Node: b.lock}, breakTimeout+controlTimeout)
	if err != nil {
		return err
	}
	if err := reply.err(); err != nil {
		return err
	}
	fmt.Fprintf(e.Stdout, "broke %s: the voters evict its holder (its hold is revoked within the lock-delay)\n", b.lock)
	return nil
}

// serveBreak answers a break request on the control socket.
func (s *controlServer) serveBreak(req controlRequest) controlReply {
	if err := mutex.ValidLockName(req.Node); err != nil {
		return controlReply{Error: fmt.Sprintf("break %q: %v", req.Node, err), Kind: "usage"}
	}
	ctx, cancel := context.WithTimeout(context.Background(), breakTimeout)
	defer cancel()
	s.log.Warn("break: an operator asks to evict the holder of a lock", "lock", req.Node)
	err := s.p.Break(ctx, req.Node)
	if err == nil {
		return controlReply{}
	}
	r := controlReply{Kind: "other", Error: cli.OneLine(err.Error())}
	if errors.Is(err, mutex.ErrNotHeld) {
		r.Error = fmt.Sprintf("break %s: nobody holds it: nothing done", req.Node)
	}
	if errors.Is(err, mutex.ErrHeldHere) {
		r.Error = fmt.Sprintf("break %s: held on this node (the one serving the socket): release it there; nothing done", req.Node)
	}
	s.log.Warn("break: failed", "lock", req.Node, "err", r.Error)
	return r
}
