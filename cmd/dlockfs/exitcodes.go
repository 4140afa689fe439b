package main

// Exit codes, in one place. They are part of the command-line interface:
// scripts may test them, so never renumber one. The EXIT CODES section of the
// help text (see help.go) lists the same table.
const (
	// exitOK: success (mount: clean shutdown after SIGINT/SIGTERM).
	exitOK = 0
	// exitError: any failure not covered by a more specific code.
	exitError = 1
	// exitUsage: bad command line (unknown command or flag, missing or
	// extra argument, bad flag value).
	exitUsage = 2
	// exitMountpoint: mount refused the mountpoint: missing, not a
	// directory, already a mount point, or a dead FUSE mount.
	exitMountpoint = 10
	// exitJoin: mount could not join any --join address within
	// --join-timeout, or the peer failed to start (ports in use...).
	exitJoin = 11
	// exitBusy: lock --try found the lock busy; CMD did not run.
	exitBusy = 12
	// exitTimeout: lock --timeout expired before the lock was granted;
	// CMD did not run.
	exitTimeout = 13
	// exitFUSE: FUSE is unavailable or the mount failed (/dev/fuse or
	// fusermount3 missing, no permission, allow_other not allowed).
	exitFUSE = 14
	// exitKey: the --key-file is unreadable, not base64, or not a
	// 16, 24 or 32-byte key.
	exitKey = 15
	// exitNotMounted: status, lock or check was given a path that is not
	// inside a live dlockfs mount (not mounted, another filesystem, or a
	// dead mount whose daemon is gone), or no mount serves the control
	// socket keys was given. lock did not run CMD.
	exitNotMounted = 16
	// exitRevoked: lock's hold was revoked while CMD ran (this node lost
	// its lease in majority mode, or its daemon went away): CMD was sent
	// SIGTERM, then SIGKILL after --revoke-grace.
	exitRevoked = 17
	// exitCannotExec: lock found CMD but cannot execute it (as in sh).
	exitCannotExec = 126
	// exitNotFound: lock cannot find CMD (as in sh); the lock was not
	// taken.
	exitNotFound = 127
)

// exitCodeDoc is one row of the EXIT CODES table in the help text.
type exitCodeDoc struct {
	code    int
	meaning string
}

// exitCodeTable documents the exit codes above, for the help text.
func exitCodeTable() []exitCodeDoc {
	return []exitCodeDoc{
		{exitOK, "success; mount: clean shutdown after SIGINT/SIGTERM"},
		{exitError, "other error"},
		{exitUsage, "usage error (bad command, flag or argument)"},
		{exitMountpoint, "mount: mountpoint missing, not a directory, already mounted, or dead"},
		{exitJoin, "mount: could not join the cluster (or start the peer)"},
		{exitBusy, "lock --try: the lock is busy (CMD not run)"},
		{exitTimeout, "lock --timeout: not granted in time (CMD not run)"},
		{exitFUSE, "mount: FUSE unavailable or mount failed (/dev/fuse, fusermount3)"},
		{exitKey, "mount: bad --key-file (unreadable, not base64, wrong length)"},
		{exitNotMounted, "status/lock/check/keys: not a live dlockfs mount (CMD not run)"},
		{exitRevoked, "lock: the hold was revoked under CMD (lease lost or daemon gone); CMD was terminated"},
		{exitCannotExec, "lock: CMD cannot be executed"},
		{exitNotFound, "lock: CMD not found (lock not taken)"},
	}
}
