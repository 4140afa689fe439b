package cli

import (
	"fmt"
	"strings"
)

// Overview is the text of "dlockfs help": commands, the idea, exit codes.
func Overview(cmds []Command) string {
	var b strings.Builder
	b.WriteString(`dlockfs - a peer-to-peer distributed lock you open like a file

Every node runs "dlockfs mount". Together they form a cluster (membership and
failure detection by Serf gossip; lock messages by Ricart-Agrawala over a
direct TCP channel). Every file in a mount is a named lock: opening it blocks
until every live member has granted it, the last close releases it. There is
no server and no leader. MOUNT/flock/NAME is the same lock taken by flock(2),
fcntl(2) or lockf(3) instead of by open: flock -n, -w and -s work there.

Usage:
  dlockfs COMMAND [flags] [arguments]

Commands:
`)
	for _, c := range cmds {
		fmt.Fprintf(&b, "  %-10s %s\n", c.Name, c.Summary)
	}
	b.WriteString(`
Run 'dlockfs COMMAND --help' for a command's flags and examples.

Quick start (three hosts; on each, with its own name and address):
  (umask 077; dlockfs keygen > cluster.key)   # once; copy to every host
  mkdir -p /run/dlockfs
  dlockfs mount --name a --key-file cluster.key --join 10.0.0.2,10.0.0.3 /run/dlockfs &
  dlockfs lock /run/dlockfs/deploy -- ./deploy.sh   # one host at a time
  dlockfs status /run/dlockfs

`)
	b.WriteString(exitCodesText())
	return b.String()
}

// exitCodesText renders the EXIT CODES section.
func exitCodesText() string {
	var b strings.Builder
	b.WriteString("Exit codes:\n")
	for _, r := range ExitCodeTable() {
		fmt.Fprintf(&b, "  %3d  %s\n", r.Code, r.Text())
	}
	b.WriteString("  " + plainText(exitCodesNote) + "\n")
	return b.String()
}
