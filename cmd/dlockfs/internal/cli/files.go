package cli

import (
	"fmt"
	"strings"
)

// FileDoc is one row of the FILES table: a path dlockfs serves, reads or
// writes, and what it is (Markdown: `code` spans only).
type FileDoc struct {
	Path    string
	Meaning string
}

// Text is the meaning without Markdown, for the man page.
func (d FileDoc) Text() string { return plainText(d.Meaning) }

// FilesTable is the one FILES table that the man page (ManPage) and the
// README (FilesMarkdown; TestFilesDocumented compares) show.
func FilesTable() []FileDoc {
	return []FileDoc{
		{"MOUNTPOINT/lock", "the default lock"},
		{"MOUNTPOINT/NAME", "lock NAME; every valid name exists on every peer, and the same name on every peer is the same lock: " +
			"open blocks until granted, the last close releases. A listing shows `.`, `..`, `.status`, `flock/`, `lock`, " +
			"the names used here and those the peer knows to be in use in the cluster (a name another peer holds " +
			"without contention may not be listed: open it anyway)"},
		{"MOUNTPOINT/flock/NAME", "the same lock NAME, taken by `flock(2)`, `fcntl(2)` or `lockf(3)` instead of by open"},
		{"MOUNTPOINT/.status", "JSON status of this peer (read-only, never blocks; `stat` gives the size of the status " +
			"at that moment, and a read always goes to EOF); this peer's view only: `dlockfs status --cluster` asks every member"},
		{"MOUNTPOINT.sock", "the mount's control socket for `dlockfs keys`, `forget`, `break` and `status --cluster` " +
			"(beside the mountpoint, mode 0600; `--control`)"},
		{"/var/lib/dlockfs/NODENAME/hardstate.json", "majority mode's voter set and fencing-token floor, kept across restarts (`--state-dir`)"},
		{"/var/lib/dlockfs/NODENAME/keyring.json", "with a cluster key: the keyring as `dlockfs keys` left it, used over `--key-file` at a restart (`--state-dir`)"},
		{"/etc/dlockfs/cluster.key", "the cluster key, by convention (`--key-file`); mode 600"},
		{"/etc/dlockfs/INSTANCE.env", "`DLOCKFS_OPTS` for the systemd unit `dlockfs@INSTANCE.service`"},
	}
}

// FilesMarkdown renders FilesTable as the README's FILES section.
func FilesMarkdown() string {
	var b strings.Builder
	b.WriteString("| path | meaning |\n|---|---|\n")
	for _, f := range FilesTable() {
		fmt.Fprintf(&b, "| `%s` | %s |\n", f.Path, f.Meaning)
	}
	return b.String()
}
