// Package fs serves dlockfs's FUSE file system: a distributed lock that any
// program takes by opening a file.
//
// # The mount
//
//	MOUNT/lock      the default lock
//	MOUNT/NAME      a named lock, made by creating it (touch, exec 9>NAME,
//	                flock NAME cmd) or known from the cluster ([Locker.Names])
//	MOUNT/.status   the peer's status as JSON ([Locker.StatusJSON])
//
// open(2) of a lock file, in any mode (O_RDONLY, O_WRONLY with or without
// O_CREAT/O_TRUNC/O_APPEND, O_RDWR), blocks until [Locker.Lock] grants that
// opener the lock. The lock is held by the open file description: dup'd
// descriptors, forked children and exec'd programs that inherit it keep the
// lock, and it is released when the last of them is closed (FUSE RELEASE, not
// FLUSH), so the exit or SIGKILL of the holder releases it at once. A signal
// to a blocked opener interrupts the open (EINTR) and withdraws its request;
// `timeout N cat MOUNT/lock` therefore bounds a wait. O_NONBLOCK makes the
// open a try-lock that fails with EAGAIN when the lock is busy.
//
// While held, reading the lock file gives
//
//	TOKEN
//	holder NODE
//	lock NAME
//
// where TOKEN is the grant's fencing token, so `read -r token <&9` works.
// Writes are accepted and discarded, truncation is accepted, the size is
// always 0 and reads bypass the page cache (FOPEN_DIRECT_IO).
//
// Shell idioms:
//
//	flock MOUNT/lock cmd                 # util-linux flock: the open is the lock
//	exec 9<MOUNT/lock; ...; exec 9<&-    # hold across a script section
//	exec 9>MOUNT/jobs                    # create a named lock and hold it
//	timeout 5 cat MOUNT/lock             # wait at most 5 s; prints the token
//	dd if=MOUNT/lock iflag=nonblock count=0   # try-lock (fails when busy)
//
// A name is valid when [mutex.ValidLockName] accepts it and it does not start
// with '.', which is reserved. Unlink removes an idle name from this mount
// (EBUSY while it is held or awaited through it) until it is created here
// again, even if the [Locker] still knows it. Directories, renames, links, symlinks, special files and
// ownership or mode changes are refused with EPERM.
//
// Things to know:
//
//   - If the file system is not mounted, `exec 9>DIR/lock` silently creates a
//     plain file in the bare directory and the script runs unlocked: scripts
//     should check the mount first (`mountpoint -q DIR` or `test -e
//     DIR/.status`). [Mount] warns when the mount point is not empty.
//   - `flock -w N` and `flock -n` do not bound the wait (flock arms its timer
//     after the open); `timeout N` does, and O_NONBLOCK is the try-lock.
//   - touch opens with O_NONBLOCK, so touching a name takes its lock for a
//     moment if it is free (and still succeeds if it is busy).
//   - `cat /dev/fd/9` opens the lock anew and waits for itself; read a held
//     descriptor with `cat <&9`.
//   - While lock files are open or opens are blocked, umount fails with
//     EBUSY; a lazy unmount (MNT_DETACH) serves on until the last close.
//
// # Implementation
//
// The package is a thin layer over a [Locker] (in production *peer.Peer). It
// never serialises requests (go-fuse runs each request in its own goroutine,
// so a thousand blocked opens do not delay stat, readdir or .status), and it
// isolates the Locker from go-fuse's request context, which is recycled after
// the request returns. A grant that arrives together with the interrupt is
// kept and the open succeeds: a killed opener's new descriptor is released
// by the kernel at once, and an opener that handles the signal holds the
// lock it waited for. Entries and attributes are cached for one second
// (they never change behind the kernel's back); failed lookups are not, as a
// name can appear when a peer starts using it.
package fs
