// Package fs serves dlockfs's FUSE file system: a distributed lock that any
// program takes by opening a file.
//
// # The mount
//
//	MOUNT/lock        the default lock
//	MOUNT/NAME        lock NAME: every valid name exists on every peer
//	MOUNT/flock/NAME  the same lock NAME, taken by flock(2)/fcntl(2)/lockf(3)
//	                  instead of by open (open never blocks there)
//	MOUNT/.status     the peer's status as JSON ([Locker.StatusJSON])
//	                  (its size, in a stat, is that of the status then)
//
// A listing shows ., .., .status, flock/, lock, the names used (opened or
// created) here and the names the [Locker] knows ([Locker.Names]).
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
// A name is valid when [mutex.ValidLockName] accepts it, it does not start
// with '.' and it is not "flock" (both reserved); a name over 255 bytes
// fails with ENAMETOOLONG. Unlink takes an idle name out of this mount's
// listing (EBUSY while it is held or awaited through it); it can still be
// opened. As every name exists, mkdir, mknod, symlink and link answer
// EEXIST; renames and ownership or mode changes are refused with EPERM.
//
// # The flock view
//
// In MOUNT/flock/ open(2) returns at once and takes nothing; file-lock calls
// take the cluster lock of the same name (the mount negotiates
// FUSE_POSIX_LOCKS and FUSE_FLOCK_LOCKS). Each kernel lock owner is one
// holder: flock(2) and OFD locks are owned by the open file description,
// POSIX (fcntl F_SETLK, lockf) locks by the process.
//
//   - LOCK_EX, F_WRLCK wait ([Locker.Lock] with the request's context): an
//     interrupt (flock -w's timer, Ctrl-C, timeout) withdraws the request
//     and fails with EINTR. LOCK_NB and F_SETLK try ([Locker.TryLock]) and
//     fail at once with EAGAIN when busy.
//   - LOCK_SH, F_RDLCK take a shared hold if the Locker is a [SharedLocker]
//     (*peer.Peer is one: readers on every peer hold together, a writer
//     excludes them, in timestamp order); with a Locker that is not, they
//     are exclusive. A conversion (LOCK_SH to LOCK_EX or back)
//     releases and asks again, as flock(2) does: it is not atomic.
//   - flock and OFD locks end at LOCK_UN/F_UNLCK or when the open file
//     description is released; POSIX locks when their process closes any
//     descriptor of the file (FLUSH) or exits. A killed holder releases at once.
//   - Only whole-file locks: a byte range (start other than 0, or a length)
//     fails with EINVAL, so that a program that locks ranges fails loudly
//     rather than being serialised or unlocked by surprise.
//   - F_GETLK answers from the holders on this mount, else with a try-lock
//     given back at once (one round trip); a holder on another peer is
//     reported with pid 0.
//   - Reads give the token lines of the lock held through that descriptor,
//     or nothing.
//
// flock(2) on a file of the root view succeeds at once (its open already
// holds the lock), so `flock MOUNT/NAME cmd` keeps working. FUSE does not
// forward a directory's file locks: flock(2) on MOUNT or MOUNT/flock would
// take a lock local to this machine only. util-linux flock(1) on them
// therefore fails with EISDIR (its open of the directory is refused; it is
// recognised by its command name, as the open looks like any other). Other
// programs that flock(2) a directory of the mount get a machine-local lock.
//
// A wait (a blocking open, LOCK_EX, F_SETLKW) by a process that already
// holds the lock here, through a descriptor (its own or inherited) of the
// root view's file (`cat /proc/self/fd/9`, `cat /dev/stdin <&9`) or of a
// flock-view open file that holds a flock or OFD lock on it
// (`exec 9>F; flock 9; flock F cmd`), or through a POSIX lock, fails at once
// with EDEADLK instead of waiting for itself. The check runs only when a
// holder exists on this mount: it reads /proc/PID/fd, and tells which open
// file a flock-view descriptor is by fsyncing a copy of it (pidfd_getfd)
// from a thread of the daemon's own; without the permission for that (a
// non-root daemon under Yama ptrace restrictions) flock-view descriptors
// are not recognised and such a wait waits.
//
// Things to know:
//
//   - If the file system is not mounted, `exec 9>DIR/lock` silently creates a
//     plain file in the bare directory and the script runs unlocked: scripts
//     should check the mount first (`mountpoint -q DIR` or `test -e
//     DIR/.status`). [Mount] warns when the mount point is not empty.
//   - In the root view `flock -w N` and `flock -n` do not bound the wait
//     (the open is the wait); use MOUNT/flock/NAME, `timeout N`, or
//     O_NONBLOCK.
//   - touch opens with O_NONBLOCK, so touching a name takes its lock for a
//     moment if it is free (and still succeeds if it is busy).
//   - `cat /dev/fd/9` opens the lock anew: it fails with EDEADLK; read a
//     held descriptor with `cat <&9`.
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
// name can appear when a peer starts using it. Root-view and .status opens
// answer FOPEN_NOFLUSH, so their close(2) costs no FLUSH round trip, while
// the flock view gets the FLUSH it needs for POSIX locks (answering ENOSYS
// instead would stop FLUSH for the whole mount). go-fuse does not pass
// FLUSH's lock owner to the node API, so a thin wrapper of the raw file
// system records it.
package fs
