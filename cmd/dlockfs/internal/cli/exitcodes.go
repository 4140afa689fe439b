package cli

import (
	"fmt"
	"strings"
)

// Exit codes, in one place. They are part of the command-line interface:
// scripts may test them, so never renumber one. ExitCodeTable documents
// them.
const (
	// ExitOK: success (mount: clean shutdown after SIGINT/SIGTERM).
	ExitOK = 0
	// ExitError: any failure not covered by a more specific code.
	ExitError = 1
	// ExitUsage: bad command line (unknown command or flag, missing or
	// extra argument, bad flag value).
	ExitUsage = 2
	// ExitMountpoint: mount refused the mountpoint: missing, not a
	// directory, already a mount point, or a dead FUSE mount.
	ExitMountpoint = 10
	// ExitJoin: mount could not join any --join address within
	// --join-timeout, or the peer failed to start (ports in use...).
	ExitJoin = 11
	// ExitBusy: lock --try found the lock busy; CMD did not run.
	ExitBusy = 12
	// ExitTimeout: lock --timeout expired before the lock was granted;
	// CMD did not run.
	ExitTimeout = 13
	// ExitFUSE: FUSE is unavailable or the mount failed (/dev/fuse or
	// fusermount3 missing, no permission, allow_other not allowed).
	ExitFUSE = 14
	// ExitKey: the --key-file is unreadable, not base64, or not a
	// 16, 24 or 32-byte key.
	ExitKey = 15
	// ExitNotMounted: status, lock or check was given a path that is not
	// inside a live dlockfs mount (not mounted, another filesystem, or a
	// dead mount whose daemon is gone), or no mount serves the control
	// socket keys was given. lock did not run CMD.
	ExitNotMounted = 16
	// ExitRevoked: lock's hold was revoked while CMD ran (this node lost
	// its lease in majority mode, or its daemon went away): CMD was sent
	// SIGTERM, then SIGKILL after --revoke-grace.
	ExitRevoked = 17
	// ExitCannotExec: lock found CMD but cannot execute it (as in sh).
	ExitCannotExec = 126
	// ExitNotFound: lock cannot find CMD (as in sh); the lock was not
	// taken.
	ExitNotFound = 127
)

// ExitCodeDoc is one row of the EXIT CODES table.
type ExitCodeDoc struct {
	Code int
	// Meaning may hold `code spans`: the README shows them as code, the
	// help and the man page as plain text (Text).
	Meaning string
}

// Text is the meaning as plain text, for the help and the man page.
func (d ExitCodeDoc) Text() string { return plainText(d.Meaning) }

// plainText drops the backquotes of a Markdown text that has `code
// spans` only, for the help and the man page.
func plainText(md string) string { return strings.ReplaceAll(md, "`", "") }

// ExitCodeTable documents the exit codes above: the one table that the
// help (exitCodesText), the man page (ManPage) and the README
// (ExitCodesMarkdown; TestExitCodesDocumented compares) show.
func ExitCodeTable() []ExitCodeDoc {
	return []ExitCodeDoc{
		{ExitOK, "success; `mount`: clean shutdown after SIGINT/SIGTERM"},
		{ExitError, "other error"},
		{ExitUsage, "usage error (bad command, flag or argument)"},
		{ExitMountpoint, "`mount`: mountpoint missing, not a directory, already mounted, or a dead mount (`umount -l DIR` clears it)"},
		{ExitJoin, "`mount`: could not join the cluster (no answer, wrong key, name taken) or start the peer"},
		{ExitBusy, "`lock --try`: the lock is busy (CMD not run)"},
		{ExitTimeout, "`lock --timeout`: not granted in time (CMD not run); `--timeout 0` is `--try` (12)"},
		{ExitFUSE, "`mount`: FUSE unavailable or the mount failed (`/dev/fuse`, `fusermount3`)"},
		{ExitKey, "`mount`: bad `--key-file` (unreadable, not base64, wrong length)"},
		{ExitNotMounted, "`status`/`lock`/`check`: not a live dlockfs mount (CMD not run); `keys`/`forget`/`break`: no mount serves the control socket"},
		{ExitRevoked, "`lock`: the hold was revoked under CMD (lease lost or daemon gone); CMD was terminated"},
		{ExitCannotExec, "`lock`: CMD cannot be executed"},
		{ExitNotFound, "`lock`: CMD not found (lock not taken)"},
	}
}

// exitCodesNote follows the table everywhere it is shown.
const exitCodesNote = "`lock` exits with CMD's status once CMD has run (128+N if a signal N killed it)."

// ExitCodesMarkdown renders the table for the README's EXIT CODES
// section.
func ExitCodesMarkdown() string {
	var b strings.Builder
	b.WriteString("| code | meaning |\n|---|---|\n")
	for _, r := range ExitCodeTable() {
		fmt.Fprintf(&b, "| %d | %s |\n", r.Code, r.Meaning)
	}
	b.WriteString("\n" + exitCodesNote + "\n")
	return b.String()
}
