package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dlockfs/dlockfs/mutex/peer"

	"github.com/dlockfs/dlockfs/cmd/dlockfs/internal/cli"
)

// statusDoc is MOUNTPOINT/.status, the peer's Status (unknown fields are
// ignored).
type statusDoc = peer.Status

// quorumDoc is the majority-mode part of .status.
type quorumDoc = peer.QuorumStatus

// forgetHint is the command that unblocks a 2-voter cluster that lost
// node, or "" when there is none to give: with 2 voters, one down, the
// survivor can never have a majority again until the other is forgotten.
func forgetHint(root string, q *quorumDoc) (node, cmd string) {
	if q == nil || q.HasMajority || len(q.Voters) != 2 {
		return "", ""
	}
	for _, v := range q.Voters {
		if v.State != peer.VoterSelf && v.State != peer.VoterAlive {
			node = v.Name
		}
	}
	if node == "" {
		return "", ""
	}
	cmd = "dlockfs forget --force " + node
	if c := defaultControlPath(root); c != defaultControl {
		cmd = "dlockfs forget --control " + c + " --force " + node
	}
	return node, cmd
}

// printQuorum renders the majority-mode lines of status.
func printQuorum(w io.Writer, root string, q *quorumDoc) {
	if q == nil {
		fmt.Fprintln(w, "quorum: none (availability over safety: a failed member counts as having answered)")
		return
	}
	voters := make([]string, 0, len(q.Voters))
	for _, v := range q.Voters {
		voters = append(voters, v.Name+" "+v.State)
	}
	lease := "no lease"
	if q.LeaseValid {
		lease = fmt.Sprintf("lease valid, %v left", (time.Duration(q.LeaseLeftMS) * time.Millisecond).Round(10*time.Millisecond))
	}
	fmt.Fprintf(w, "quorum: majority, voter set v%d, %d voters, majority %d: %s\n", q.Version, len(q.Voters), q.Majority,
		strings.Join(voters, ", "))
	fmt.Fprintf(w, "lease: %s (lease %s, lock-delay %s), %d lapses, %d holds revoked\n", lease, q.Lease, q.LockDelay,
		q.Lapses, q.Revoked)
	if !q.HasMajority || !q.LeaseValid {
		fmt.Fprintln(w, "NO MAJORITY: this node reaches fewer than a majority of the voters: it grants no lock until it does")
		if node, cmd := forgetHint(root, q); node != "" {
			fmt.Fprintf(w, "2 voters and %s is not answering: if %s is gone for good, unblock this node with:\n  %s\n", node, node, cmd)
		}
	}
}

// runStatus prints MOUNTPOINT/.status as tables, or as it is with --json.
func runStatus(ctx context.Context, e *cli.Env, cfg config) error {
	if cfg.status.cluster {
		return runClusterStatus(ctx, e, cfg.status)
	}
	live, err := checkLive(ctx, cfg.status.mountpoint)
	if err != nil {
		return err
	}
	if cfg.status.watch {
		return watchStatus(ctx, e.Stdout, cfg.status, isTerminal(e.Stdout))
	}
	if cfg.status.json {
		_, err := e.Stdout.Write(live.status)
		if err == nil && !strings.HasSuffix(string(live.status), "\n") {
			_, err = io.WriteString(e.Stdout, "\n")
		}
		return err
	}
	var doc statusDoc
	if err := json.Unmarshal(live.status, &doc); err != nil {
		return fmt.Errorf("%s/%s: %w", live.root, statusFile, err)
	}
	return printStatus(e.Stdout, live.root, doc)
}

// Escape sequences of a refreshing screen: cursor home and clear the
// screen (ECMA-48: CUP, ED 2), which every terminal emulator (and the Linux
// console) understands; no terminfo lookup, no external watch(1).
const clearScreen = "\x1b[H\x1b[2J"

// watchStatus is "status --watch": a snapshot of the tables every
// interval until SIGINT/SIGTERM (exit 0) or count snapshots. On a terminal
// each snapshot replaces the last one; otherwise (a pipe, a file, a
// journal) snapshots follow one another as plain text, each under a line
// "--- TIME", with no escape codes. A mount that stops answering is shown
// as an error line, and watching goes on: it may come back.
func watchStatus(ctx context.Context, w io.Writer, s statusConfig, tty bool) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	tick := time.NewTicker(s.interval)
	defer tick.Stop()
	for n := 1; ; n++ {
		var b strings.Builder
		now := time.Now().Format("2006-01-02 15:04:05")
		if tty {
			fmt.Fprintf(&b, "%s%s  every %v  (Ctrl-C to stop)\n\n", clearScreen, now, s.interval)
		} else {
			if n > 1 {
				b.WriteString("\n")
			}
			fmt.Fprintf(&b, "--- %s\n", now)
		}
		if live, err := checkLive(ctx, s.mountpoint); err != nil {
			fmt.Fprintf(&b, "dlockfs status: %s\n", cli.OneLine(err.Error()))
		} else {
			var doc statusDoc
			if err := json.Unmarshal(live.status, &doc); err != nil {
				fmt.Fprintf(&b, "dlockfs status: %s/%s: %v\n", live.root, statusFile, err)
			} else if err := printStatus(&b, live.root, doc); err != nil {
				return err
			}
		}
		// One write per snapshot, so a reader never sees half of one.
		if _, err := io.WriteString(w, b.String()); err != nil {
			return err
		}
		if s.count > 0 && n >= s.count {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// isTerminal reports whether w is a terminal (a TCGETS ioctl succeeds).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// printStatus renders the human tables.
func printStatus(w io.Writer, root string, d statusDoc) error {
	enc := "not encrypted"
	if d.Encrypted {
		enc = "encrypted"
	}
	alive := 0
	for _, m := range d.Members {
		if m.Status == peer.MemberAlive {
			alive++
		}
	}
	inc := ""
	if d.Incarnation != 0 {
		inc = strconv.FormatUint(d.Incarnation, 10)
	}
	if d.Draining {
		enc += ", DRAINING (stopping: no new local opens)"
	}
	fmt.Fprintf(w, "node %s at %s: %d of %d members alive, %s gossip, %s, lamport %d, incarnation %s\n",
		d.Node, root, alive, len(d.Members), orDash(d.Profile), enc, d.Lamport, orDash(inc))
	printQuorum(w, root, d.Quorum)

	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tADDR\tLOCK ADDR\tSTATUS")
	for _, m := range d.Members {
		name := m.Name
		if name == d.Node {
			name += " (self)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", name, orDash(m.Addr), orDash(m.LockAddr), orDash(m.Status))
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(w)
	if len(d.Locks) == 0 {
		fmt.Fprintln(w, "no locks in use")
	} else {
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "LOCK\tSTATE\tHOLDER\tTOKEN\tWAITING\tQUEUED\tAWAITING\tPERMISSIONS")
		for _, l := range d.Locks {
			state := orDash(l.State)
			switch {
			case l.Mode == peer.ModeShared && l.Holders > 0:
				state += fmt.Sprintf(" (shared, %d here)", l.Holders)
			case l.Mode == peer.ModeShared:
				state += " (shared)"
			}
			if l.Revoked > 0 {
				state += fmt.Sprintf(" (%d revoked)", l.Revoked)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", l.Name, state, orDash(l.Holder),
				l.Token, l.Waiting, list(l.Queued), list(l.Awaiting), list(l.Permissions))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	printFaults(w, d)

	// The counters, by their JSON names, so that a counter added to the
	// schema is shown without a change here.
	var counters map[string]json.RawMessage
	if b, err := json.Marshal(d.Counters); err == nil {
		_ = json.Unmarshal(b, &counters)
	}
	if len(counters) > 0 {
		fmt.Fprintln(w)
		// The contract's order first, then anything newer by name.
		keys := []string{"sent", "received", "dropped", "grants", "refusals"}
		var extra []string
		for k := range counters {
			if !slices.Contains(keys, k) {
				extra = append(extra, k)
			}
		}
		sort.Strings(extra)
		keys = append(keys, extra...)
		parts := make([]string, 0, len(keys))
		for _, k := range keys {
			raw, ok := counters[k]
			v := strings.TrimSpace(string(raw))
			if !ok || v == "{}" || v == "null" {
				continue
			}
			parts = append(parts, k+" "+v)
		}
		fmt.Fprintf(w, "counters: %s\n", strings.Join(parts, ", "))
	}
	return nil
}

// printFaults shows the members that owe this node's requests an answer
// for longer than the answer-timeout (a lock's "slow" in .status) and the
// members it suspects ("suspects").
func printFaults(w io.Writer, d statusDoc) {
	for _, l := range d.Locks {
		for _, sp := range l.Slow {
			fmt.Fprintf(w, "slow: %s owes an answer to this node's request %d for %s, for %v\n",
				sp.Name, sp.Request, l.Name, time.Duration(sp.ForMS)*time.Millisecond)
		}
	}
	for _, s := range d.Suspects {
		why := fmt.Sprintf("owes an answer to request %d for %s", s.Request, s.Lock)
		switch {
		case s.Probe && s.Lock != "":
			why = "its hold of " + s.Lock + " was broken by an operator (dlockfs break)"
		case s.Probe:
			why = "left a probe unanswered (another voter reported it)"
		}
		fmt.Fprintf(w, "suspect: %s %s, for %v\n", s.Name, why, time.Duration(s.ForMS)*time.Millisecond)
	}
}

// orDash shows an empty field as "-".
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// list shows a list of names comma-separated, or "-".
func list(s []string) string {
	return orDash(strings.Join(s, ","))
}
