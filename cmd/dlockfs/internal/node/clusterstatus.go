package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dlockfs/dlockfs/cmd/dlockfs/internal/cli"
	"github.com/dlockfs/dlockfs/mutex/peer"
)

// "dlockfs status --cluster": the mount asks every live member over the
// lock channel for its view of the locks (peer.ClusterStatus) and the
// command prints the merged answer. The request goes over the mount's
// control socket (op "cluster-status", timeout_ms the bound).

// opClusterStatus is the control socket's operation of status --cluster.
const opClusterStatus peer.KeyOp = "cluster-status"

// defaultClusterTimeout bounds how long the members are given to answer.
const defaultClusterTimeout = 2 * time.Second

// clusterFlags adds status's --cluster flags to fs (see parseStatus).
func clusterFlags(fs interface {
	BoolVar(*bool, string, bool, string)
	DurationVar(*time.Duration, string, time.Duration, string)
	StringVar(*string, string, string, string)
}, s *statusConfig) {
	fs.BoolVar(&s.cluster, "cluster", false, "")
	fs.DurationVar(&s.timeout, "timeout", 0, "") // 0: defaultClusterTimeout
	fs.StringVar(&s.control, "control", "", "")
}

// checkClusterFlags is parseStatus's check of the --cluster flags; set
// holds the flags given. It fills in the default --timeout.
func checkClusterFlags(s *statusConfig, set map[string]bool) error {
	if s.cluster && !set["timeout"] {
		s.timeout = defaultClusterTimeout
	}
	switch {
	case !s.cluster && (set["timeout"] || set["control"]):
		return cli.Usagef("--timeout and --control go with --cluster")
	case s.cluster && s.watch:
		return cli.Usagef("--cluster and --watch do not go together (loop over 'status --cluster' instead)")
	case s.cluster && s.timeout <= 0:
		return cli.Usagef("--timeout %v: a cluster status waits for the members' answers: give a positive bound (default %v)",
			s.timeout, defaultClusterTimeout)
	case set["control"] && s.control == "":
		return cli.Usagef("--control: empty path")
	}
	return nil
}

// runClusterStatus is "status --cluster".
func runClusterStatus(ctx context.Context, e *cli.Env, s statusConfig) error {
	control := s.control
	if control == "" {
		live, err := checkLive(ctx, s.mountpoint)
		if err != nil {
			return err
		}
		control = defaultControlPath(live.root)
	}
	req := controlRequest{Op: opClusterStatus, TimeoutMS: s.timeout.Milliseconds()}
	reply, err := callControlTimeout(ctx, control, req, s.timeout+controlTimeout)
	if err != nil {
		return err
	}
	if reply.Error != "" {
		return errors.New(reply.Error)
	}
	if reply.Cluster == nil {
		return fmt.Errorf("control socket %s: no cluster status in the reply (a mount older than status --cluster?)", control)
	}
	if s.json {
		b, err := json.MarshalIndent(reply.Cluster, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(e.Stdout, "%s\n", b)
		return err
	}
	return printClusterStatus(e.Stdout, *reply.Cluster)
}

// serveClusterStatus answers opClusterStatus on the control socket.
func (s *controlServer) serveClusterStatus(req controlRequest) controlReply {
	bound := time.Duration(req.TimeoutMS) * time.Millisecond
	if bound <= 0 || bound > time.Minute {
		return controlReply{Error: fmt.Sprintf("cluster-status: timeout %v out of range (0, 1m]", bound), Kind: "usage"}
	}
	cs := s.p.ClusterStatus(context.Background(), bound)
	return controlReply{Cluster: &cs}
}

// printClusterStatus renders a cluster status for people.
func printClusterStatus(w io.Writer, cs peer.ClusterStatus) error {
	answered, alive := 0, 0
	var silent []string
	for _, p := range cs.Peers {
		if p.Status == "alive" {
			alive++
		}
		if p.Answered {
			answered++
		} else if p.Status == "alive" {
			silent = append(silent, p.Name)
		}
	}
	bound := time.Duration(cs.BoundMS) * time.Millisecond
	fmt.Fprintf(w, "cluster status asked from %s: %d of %d alive members answered within %v\n", cs.Node, answered, alive, bound)
	if len(silent) > 0 {
		fmt.Fprintf(w, "NOT ANSWERING: %s (their holds and requests are missing below)\n", strings.Join(silent, ", "))
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tSTATUS\tANSWER\tLAMPORT")
	for _, p := range cs.Peers {
		name := p.Name
		if name == cs.Node {
			name += " (self)"
		}
		ans := fmt.Sprintf("ok, %d ms", p.ElapsedMS)
		if !p.Answered {
			ans = "NO ANSWER: " + cli.OneLine(p.Error)
		} else if p.Truncated {
			ans += " (some locks left out)"
		}
		lamport := "-"
		if p.Answered {
			lamport = fmt.Sprint(p.Lamport)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", name, p.Status, ans, lamport)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	if len(cs.Locks) == 0 {
		fmt.Fprintln(w, "no locks in use on any member that answered")
		return nil
	}
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "LOCK\tHOLDER\tTOKEN\tQUEUE (in request order)")
	for _, l := range cs.Locks {
		holder := orDash(l.Holder)
		switch {
		case l.Mode == "shared":
			holder = strings.Join(l.Holders, ",") + " (shared)"
		case len(l.Holders) > 1:
			holder = "SEVERAL: " + strings.Join(l.Holders, ",")
		}
		token := "-"
		if l.Holder != "" {
			token = fmt.Sprint(l.Token)
		}
		q := make([]string, 0, len(l.Queue))
		for _, e := range l.Queue {
			s := fmt.Sprintf("%s@%d", e.Node, e.ReqTime)
			if e.Try {
				s += "(try)"
			}
			if e.Shared {
				s += "(shared)"
			}
			q = append(q, s)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", l.Name, holder, token, orDash(strings.Join(q, ", ")))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "each member's view (state, token, request time; local openers waiting; deferring; awaiting):")
	for _, l := range cs.Locks {
		for _, v := range l.Views {
			state := v.State
			if v.Mode == "shared" {
				state += " (shared)"
			}
			fmt.Fprintf(w, "  %s on %s: %s token %d at %d, %d waiting, deferring %s, awaiting %s\n", l.Name, v.Node,
				state, v.Token, v.ReqTime, v.Waiting, list(v.Queued), list(v.Awaiting))
		}
	}
	return nil
}
