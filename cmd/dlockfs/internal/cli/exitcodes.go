package cli

// Exit codes, in one place. They are part of the command-line interface:
// scripts may test them, so never renumber one. The EXIT CODES section of the
// help text (see help.go) lists the same table.
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

// ExitCodeDoc is one row of the EXIT CODES table in the help text.
type ExitCodeDoc struct {
	Code    int
	Meaning string
}

// ExitCodeTable documents the exit codes above, for the help text.
func ExitCodeTable() []ExitCodeDoc {
	return []ExitCodeDoc{
		{ExitOK, "success; mount: clean shutdown after SIGINT/SIGTERM"},
		{ExitError, "other error"},
		{ExitUsage, "usage error (bad command, flag or argument)"},
		{ExitMountpoint, "mount: mountpoint missing, not a directory, already mounted, or dead"},
		{ExitJoin, "mount: could not join the cluster (or start the peer)"},
		{ExitBusy, "lock --try: the lock is busy (CMD not run)"},
		{ExitTimeout, "lock --timeout: not granted in time (CMD not run)"},
		{ExitFUSE, "mount: FUSE unavailable or mount failed (/dev/fuse, fusermount3)"},
		{ExitKey, "mount: bad --key-file (unreadable, not base64, wrong length)"},
		{ExitNotMounted, "status/lock/check/keys: not a live dlockfs mount (CMD not run)"},
		{ExitRevoked, "lock: the hold was revoked under CMD (lease lost or daemon gone); CMD was terminated"},
		{ExitCannotExec, "lock: CMD cannot be executed"},
		{ExitNotFound, "lock: CMD not found (lock not taken)"},
	}
}
