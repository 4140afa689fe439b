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

// opForget is the control socket's operation of "dlockfs forget".
const opForget peer.KeyOp = "forget"

// defaultForgetTimeout bounds "dlockfs forget": enough for a voter that
// just went silent to be declared evicted (lease + lock-delay: 3 s fast,
// 15 s lan, 45 s wan) and for the change to be agreed.
const defaultForgetTimeout = time.Minute

// forgetConfig holds the options of "dlockfs forget".
type forgetConfig struct {
	control string
	force   bool
	timeout time.Duration
	node    string
}

const helpForget = `Usage: dlockfs forget [--control PATH] [--force] [--timeout DUR] NODE

Remove NODE from the voters of a cluster in majority mode (the default
--quorum). A member that crashed or was switched off without a graceful stop
stays a voter, so that no partition can make a second majority: it counts
towards the majority the others need. Forget it once it is gone for good, so
the majority is counted among the nodes that remain. The command talks to one
running 'dlockfs mount' through its control socket (as 'dlockfs keys' does:
by default /run/dlockfs.sock, the socket of a mount at /run/dlockfs).

Writes: one line on stdout; the new voter set is written by every member to
its --state-dir/hardstate.json. The command writes no file itself.

Without --force the change needs a majority of the voters, and NODE must have
been declared evicted by them: silent for a lease and not granted one for the
lock-delay (lease + lock-delay after it went silent: about 3 s with --gossip
fast, 15 s lan, 45 s wan). Until then forget waits, up to --timeout. It is
always safe: an evicted node cannot hold a lock.

--force removes NODE on this node's word alone, without a majority: the way
out of a cluster that lost its majority for good. It still waits until this
node has not granted NODE a lease for the lock-delay. Use it only when NODE
is gone for good (or cannot reach a majority of the old voters without this
node): with 2 voters that is always so, and a 2-node cluster that lost one
grants nothing until the survivor runs 'dlockfs forget --force NODE'
('dlockfs status' prints the command). With 3 or more voters, force on the
minority side of a partition can make two majorities: prefer forget without
--force on the majority side.

A node that is forgotten and comes back must be started afresh (a new
--state-dir, or its hardstate.json removed) and join again.

Flags:
  --control PATH  the mount's control socket (default /run/dlockfs.sock)
  --force         remove NODE without a majority (see above)
  --timeout DUR   give up after DUR (default 1m; must be positive: there is
                  no try, since a forget waits for the voters' answers)

Examples:
  dlockfs forget c                    # c died; the others agree
  dlockfs forget --control /tmp/a.sock --force b   # 2 nodes, b is gone

Exit codes: 0 removed, 2 usage, 16 no mount serves the control socket,
1 other (not a voter, not evicted in time, no majority, not majority mode).
`

// parseForget parses "forget [--control PATH] [--force] [--timeout DUR]
// NODE".
func parseForget(cfg *config, args []string) error {
	f := &cfg.forget
	fs := cli.NewFlagSet("forget")
	fs.StringVar(&f.control, "control", defaultControl, "")
	fs.BoolVar(&f.force, "force", false, "")
	fs.DurationVar(&f.timeout, "timeout", defaultForgetTimeout, "")
	var err error
	if f.node, err = cli.ParseOne(fs, args, "NODE"); err != nil {
		return err
	}
	if f.control == "" {
		return cli.Usagef("--control: empty path")
	}
	if f.timeout <= 0 {
		return cli.Usagef("--timeout %v: must be positive (there is no try: a forget waits for the voters' answers)", f.timeout)
	}
	return nil
}

// runForget sends the forget to the mount's control socket.
func runForget(ctx context.Context, e *cli.Env, cfg config) error {
	f := cfg.forget
	req := controlRequest{Op: opForget, Node: f.node, Force: f.force, TimeoutMS: f.timeout.Milliseconds()}
	reply, err := callControlTimeout(ctx, f.control, req, f.timeout+controlTimeout)
	if err != nil {
		return err
	}
	if err := reply.err(); err != nil {
		return err
	}
	how := "with the agreement of a majority of the voters"
	if f.force {
		how = "by force, on this node's word alone"
	}
	fmt.Fprintf(e.Stdout, "forgot %s %s; voters now: %v\n", f.node, how, reply.Voters)
	return nil
}

// serveForget answers a forget request on the control socket.
func (s *controlServer) serveForget(req controlRequest) controlReply {
	if req.Node == "" {
		return controlReply{Error: "forget: empty NODE", Kind: "usage"}
	}
	timeout := time.Duration(req.TimeoutMS) * time.Millisecond
	if timeout <= 0 {
		timeout = defaultForgetTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	s.log.Warn("forget: removing a voter", "voter", req.Node, "force", req.Force)
	err := s.p.Forget(ctx, req.Node, req.Force)
	r := controlReply{}
	if q := s.p.Status().Quorum; q != nil {
		for _, v := range q.Voters {
			r.Voters = append(r.Voters, v.Name)
		}
	}
	if err == nil {
		s.log.Warn("forget: voter removed", "voter", req.Node, "force", req.Force, "voters", r.Voters)
		return r
	}
	r.Kind = "other"
	switch {
	case errors.Is(err, mutex.ErrUnknownPeer):
		r.Error = fmt.Sprintf("forget %s: not a voter (voters: %v)", req.Node, r.Voters)
	case errors.Is(err, mutex.ErrNotEvicted) && req.Force:
		r.Error = fmt.Sprintf("forget --force %s: this node still granted it a lease within the lock-delay "+
			"(it may be alive) and --timeout %v passed: wait and try again", req.Node, timeout)
	case errors.Is(err, mutex.ErrNotEvicted):
		r.Error = fmt.Sprintf("forget %s: not evicted yet: a majority has not declared it silent for the lease "+
			"plus the lock-delay within --timeout %v (is it alive?): wait and try again, or if it is gone for good "+
			"and no majority remains, use --force", req.Node, timeout)
	case errors.Is(err, mutex.ErrNoMajority):
		r.Error = fmt.Sprintf("forget %s: no majority of the voters reachable within --timeout %v: "+
			"if %s is gone for good and the others cannot come back, use --force", req.Node, timeout, req.Node)
	case errors.Is(err, peer.ErrVoterBack):
		r.Error = fmt.Sprintf("forget %s: nothing removed: it came back and answers (a new session) before the "+
			"voters made the change, so it stays a voter", req.Node)
	case errors.Is(err, context.DeadlineExceeded):
		r.Error = fmt.Sprintf("forget %s: no majority agreed within --timeout %v", req.Node, timeout)
	default:
		r.Error = cli.OneLine(err.Error())
	}
	s.log.Warn("forget: failed", "voter", req.Node, "err", r.Error)
	return r
}
