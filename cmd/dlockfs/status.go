package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
)

// statusDoc is the part of MOUNTPOINT/.status that status prints (the
// contract's field names; unknown fields are ignored).
type statusDoc struct {
	Node        string          `json:"node"`
	Incarnation json.RawMessage `json:"incarnation"`
	Lamport     uint64          `json:"lamport"`
	Encrypted   bool            `json:"encrypted"`
	Profile     string          `json:"profile"`
	Members     []struct {
		Name     string `json:"name"`
		Addr     string `json:"addr"`
		LockAddr string `json:"lock_addr"`
		Status   string `json:"status"`
	} `json:"members"`
	Locks []struct {
		Name        string   `json:"name"`
		State       string   `json:"state"`
		Holder      string   `json:"holder"`
		Token       uint64   `json:"token"`
		Waiting     int      `json:"waiting"`
		Queued      []string `json:"queued"`
		Awaiting    []string `json:"awaiting"`
		Permissions []string `json:"permissions"`
	} `json:"locks"`
	Counters map[string]json.RawMessage `json:"counters"`
}

// runStatus prints MOUNTPOINT/.status as tables, or as it is with --json.
func runStatus(ctx context.Context, e *env, cfg config) error {
	live, err := checkLive(ctx, cfg.status.mountpoint)
	if err != nil {
		return err
	}
	if cfg.status.json {
		_, err := e.stdout.Write(live.status)
		if err == nil && !strings.HasSuffix(string(live.status), "\n") {
			_, err = io.WriteString(e.stdout, "\n")
		}
		return err
	}
	var doc statusDoc
	if err := json.Unmarshal(live.status, &doc); err != nil {
		return fmt.Errorf("%s/%s: %w", live.root, statusFile, err)
	}
	return printStatus(e.stdout, live.root, doc)
}

// printStatus renders the human tables.
func printStatus(w io.Writer, root string, d statusDoc) error {
	enc := "not encrypted"
	if d.Encrypted {
		enc = "encrypted"
	}
	alive := 0
	for _, m := range d.Members {
		if m.Status == "alive" {
			alive++
		}
	}
	inc := strings.Trim(string(d.Incarnation), `"`)
	fmt.Fprintf(w, "node %s at %s: %d of %d members alive, %s gossip, %s, lamport %d, incarnation %s\n",
		d.Node, root, alive, len(d.Members), orDash(d.Profile), enc, d.Lamport, orDash(inc))

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
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", l.Name, orDash(l.State), orDash(l.Holder),
				l.Token, l.Waiting, list(l.Queued), list(l.Awaiting), list(l.Permissions))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}

	if len(d.Counters) > 0 {
		fmt.Fprintln(w)
		// The contract's order first, then anything newer by name.
		keys := []string{"sent", "received", "dropped", "grants", "refusals"}
		var extra []string
		for k := range d.Counters {
			if !slices.Contains(keys, k) {
				extra = append(extra, k)
			}
		}
		sort.Strings(extra)
		keys = append(keys, extra...)
		parts := make([]string, 0, len(keys))
		for _, k := range keys {
			raw, ok := d.Counters[k]
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
