package node

import (
	"fmt"
	"strings"

	"github.com/dlockfs/dlockfs/mutex/peer"
)

// leaseTable lists each profile's lease and lock-delay (peer.LeaseTimes).
func leaseTable() string {
	var b strings.Builder
	for _, p := range []string{peer.ProfileFast, peer.ProfileLAN, peer.ProfileWAN} {
		lease, delay := peer.LeaseTimes(p)
		fmt.Fprintf(&b, "  %-5s lease %-4v lock-delay %-4v failover after a crash about %v\n", p, lease, delay, lease+delay)
	}
	return strings.TrimRight(b.String(), "\n")
}

var helpMount = `Usage: dlockfs mount [flags] MOUNTPOINT

Start a peer, join the cluster, and mount its lock directory on MOUNTPOINT (an
existing empty directory). Runs in the foreground until SIGINT or SIGTERM,
then leaves the cluster gracefully (waiters elsewhere stop waiting for us),
unmounts and exits 0. Prints one line when mounted and joined; otherwise quiet
unless --debug. Flags may come before or after MOUNTPOINT.

Writes: the mount on MOUNTPOINT; its control socket (--control, default
MOUNTPOINT.sock), removed at exit; in majority mode, or with --key-file, the
state directory (--state-dir, default /var/lib/dlockfs/NODENAME, mode 0700)
with hardstate.json (majority mode) and keyring.json (with a key); its log on
stderr; and, with --metrics, an HTTP listener. Nothing else.

Draining stop: on SIGTERM while local processes hold locks, the peer first
drains: it grants no new local open (they fail with ESHUTDOWN, "Cannot send
after transport endpoint shutdown"), withdraws the local openers still
waiting, keeps answering the other peers, logs which locks it waits for
(lock, token, PID and command of the opener), and waits up to
--drain-timeout for the holders to close. Then it leaves. A second SIGTERM
(a second or more after the first) leaves at once; .status shows
"draining": true meanwhile. SIGINT leaves at once, as does SIGTERM with no
local holder.

The mount is made only after the join succeeded: a node that is not yet in
the cluster never grants a lock on its own.

Flags:
  --name NAME            node name, unique in the cluster (default: hostname)
  --bind IP:PORT         Serf gossip address, TCP and UDP (default 0.0.0.0:7946)
  --advertise IP:PORT    Serf address told to peers (default: bind address, or
                         a private IP when binding 0.0.0.0)
  --lock-bind IP:PORT    lock channel, TCP (default: bind IP, Serf port + 1,
                         e.g. 0.0.0.0:7947); published to peers in Serf tags
  --lock-advertise IP:PORT  lock channel address told to peers
                         (default: the advertised IP, lock port)
  --join IP[:PORT]       a member to join (port default 7946); repeat the flag
                         or separate by commas. Tried with backoff until one
                         answers. Without --join this node starts a new cluster.
  --join-timeout DUR     give up joining after DUR, exit 11 (default 1m;
                         0 = try each address once and exit 11 at once if
                         none answers; for no limit give a long DUR: 8760h)
  --gossip PROFILE       failure-detection profile, the same on every node
                         (default lan):
                           lan   detects a dead node in ~5 s (Serf LAN defaults)
                           wan   ~35-40 s; tolerates slow, lossy links
                           fast  ~0.5 s; for one host or a quiet LAN; more
                                 CPU and risk of false suspicion under load
                         A lock held by a dead node is freed when it is
                         detected. On the smaller side of a network
                         partition detection is slower (measured, 2 of 5
                         nodes: fast 0.6-1.8 s, lan 14-21 s), and then
                         both sides grant locks: see the README.
  --quorum MODE          majority (default) or none:
                           majority  safe: a node holds a lock only while a
                                     majority of the voters (every member is
                                     one) grants it a lease. A side of a
                                     partition without a majority grants
                                     nothing (try-lock EAGAIN, lock
                                     --timeout exits 13) until it is back
                                     with a majority. No partition, pause or
                                     false failure report gives two holders.
                           none      availability over safety, the behaviour
                                     before majority mode: a member Serf
                                     reports failed counts as having
                                     answered, so a dead holder's lock is
                                     freed at detection, but under a
                                     partition or a pause two nodes can hold
                                     a lock at once and tokens can fall.
                         Every node of a cluster must use the same mode.
  --state-dir DIR        where majority mode keeps what must survive a
                         restart, in DIR/hardstate.json: the voter set and a
                         floor for this node's fencing tokens, so that tokens
                         keep rising and the voters are not forgotten across
                         restarts (default /var/lib/dlockfs/NODENAME; made
                         if missing, mode 0700; checked to be writable at
                         start, else exit 1). Unused with --quorum none.
  --answer-timeout DUR   suspect a member that has owed an answer to one of
                         this node's lock requests for DUR while it is alive
                         (a holder says it defers, so a long hold is no
                         silence): it is logged and named in .status; in
                         majority mode a majority of the voters suspecting
                         it, each on its own evidence, evicts it. Default
                         the --gossip profile's lease (fast 1s, lan 5s, wan
                         15s), far above any normal answer; 0 = off.
  --max-hold DUR          bound every single hold (default 0: none). A hold
                         that reaches DUR is revoked: reads of its lock file
                         fail with EIO and 'dlockfs lock' signals CMD. A
                         member deferring this node while holding for longer
                         than DUR plus the lock-delay is suspected (see
                         --answer-timeout). Every node must use the same.
                         Without it an operator ends a hold with 'dlockfs
                         break NAME'.
  --key-file FILE        cluster key: base64 of 16, 24 or 32 bytes (make one
                         with 'dlockfs keygen'). Encrypts gossip (AES-GCM) and
                         the lock channel. Every member needs the same key. A
                         file readable by group or others gives a warning.
                         Rotate keys while running with 'dlockfs keys'. The
                         keyring is kept in --state-dir/keyring.json (mode
                         0600, rewritten at every 'dlockfs keys' change); at
                         start, when that file exists, it is the keyring and
                         FILE only created it, so a restart after a rotation
                         keeps the rotated keys.
  --control PATH         unix socket for 'dlockfs keys' (mode 0600; default
                         MOUNTPOINT.sock, e.g. /run/dlockfs.sock; "none": no
                         socket). The default only warns if it cannot be made.
  --allow-other          let other users open the locks (non-root needs
                         user_allow_other in /etc/fuse.conf)
  --fast-path            (needs --quorum none) keep permissions between
                         acquisitions (Roucairol-Carvalho): a node that takes
                         the same lock again,
                         with no other node asking meanwhile, enters with no
                         messages at all. Default off: every grant is then
                         confirmed by every live member on the spot, so a node
                         cut off from the others waits instead of re-entering
                         on permissions it kept, and the behaviour is plain
                         Ricart-Agrawala. Turn it on where one node takes a
                         lock many times in a row. Can differ between nodes.
  --drain-timeout DUR    at SIGTERM, wait up to DUR for local holders to
                         release before leaving (default 30s; 0 = leave at
                         once, taking the locks from their holders)
  --metrics IP:PORT      serve Prometheus metrics on http://IP:PORT/metrics
                         (default off): acquisitions, try-lock refusals and
                         interrupts per lock (64 names, then lock="_other"),
                         the wait to acquire, holders, waiters, messages,
                         drops by reason, members and lock connections by
                         state. No authentication: bind it to a private IP.
  --debug                log our and go-fuse's debug messages to stderr

Leases (majority mode), per --gossip profile:
` + leaseTable() + `
A node renews its lease every lease/4. If it cannot (cut off from a majority,
or its daemon starved or paused), its lease lapses: its holds are revoked
("lock revoked" in the log and .status), reads of a held lock file fail with
EIO, 'dlockfs lock' terminates CMD, and it grants nothing until a majority
leases it again. The others count a silent node as having answered only once
a majority declared it evicted, lock-delay after they last granted it a
lease: after a crash the rest grant its locks again within lease + lock-delay
(about 3 s with --gossip fast). A cluster that lost its majority for good (a
2-node cluster that lost one) blocks until 'dlockfs forget --force NODE'.

Requirements: /dev/fuse; as non-root also fusermount3 (Debian/Ubuntu package
fuse3). A directory that is already a mount point, or a dead dlockfs mount
(its daemon was killed), is refused: "umount -l DIR" clears a dead one.

Examples:
  # first node, then two more joining it (one host, distinct ports):
  dlockfs mount --name a --bind 127.0.0.1:7946 /tmp/a &
  dlockfs mount --name b --bind 127.0.0.1:7956 --join 127.0.0.1:7946 /tmp/b &
  dlockfs mount --name c --bind 127.0.0.1:7966 --join 127.0.0.1:7946 /tmp/c &
  # (--gossip fast, for quick failure detection, goes to every node or none)
  # in a shell script (check first: on a bare directory 'exec 9>' would
  # silently create a plain file and run unlocked):
  dlockfs check /tmp/a && { exec 9</tmp/a/deploy; ./deploy.sh; exec 9<&-; }

Exit codes: 0 clean shutdown, 2 usage, 10 mountpoint problem, 11 join failed,
14 FUSE unavailable or mount failed, 15 bad key file, 1 other.
`

const helpStatus = `Usage: dlockfs status [--json] MOUNTPOINT
       dlockfs status --watch [--interval D] [--count N] MOUNTPOINT
       dlockfs status --cluster [--json] [--timeout D] [--control PATH] MOUNTPOINT

Show what the peer behind MOUNTPOINT knows: itself, the members (name, Serf
address, lock-channel address, alive/failed/left; a member that left is
dropped 5 minutes later, a failed one after 24 h), every lock it has state
for (state idle/requesting/holding, holder, fencing token, local waiters,
peers whose requests it defers; a lock with nothing left to do is forgotten)
and message counters. Reads MOUNTPOINT/.status.

In majority mode (--quorum majority, the default) two lines show the voters
(self, alive, silent, down or evicted), the majority, the lease (valid, time
left; lease and lock-delay of the profile), the lapses and the holds they
revoked; a lock with revoked holds whose openers have not closed yet shows
"(N revoked)". A node without a majority says NO MAJORITY; with 2 voters and
one of them gone it prints the 'dlockfs forget --force NODE' command that
unblocks it (run it only if that node is gone for good).

"holder" is this node's name when it holds the lock, else empty: in
Ricart-Agrawala no node knows who else holds a lock, only that it was not
yet granted permission. To see who holds a lock anywhere, use --cluster.
MOUNTPOINT/.status stays this peer's own view: the merged one needs a round
trip to every member (up to --timeout), and a read of .status never blocks.

With --cluster the mount asks every alive member, over the lock channel, for
its view of the locks, waits up to --timeout (default 2s) for the answers and
prints them merged: for each lock the holder (the member that says it holds
it; readers of a shared hold all listed, marked (shared); SEVERAL if more
than one holds it and one of them exclusively), its fencing token, the queue of members
requesting it in request order (NODE@LAMPORT-TIMESTAMP, the order
Ricart-Agrawala grants in), and each member's own view. A member that does
not answer in time (paused, overloaded, cut off) is listed as NO ANSWER and
named on a NOT ANSWERING line: its holds and requests are missing, so a lock
without a holder is known to be free only when every member answered
("complete": true in --json). Failed and left members are listed, not asked.
The request goes to the mount's control socket (MOUNTPOINT.sock, or
--control PATH), as for 'dlockfs keys'; MOUNTPOINT/.status stays this node's
own view. Exit 0 even when some member did not answer.

With --watch the tables are shown again every --interval until Ctrl-C
(SIGINT or SIGTERM, exit 0). On a terminal each snapshot replaces the last
(no watch(1) needed); when stdout is not a terminal the snapshots follow one
another as plain text, each under a line "--- YYYY-MM-DD HH:MM:SS", with no
escape codes. A mount that stops answering shows as an error line and the
watch goes on.

Writes: only to stdout (and errors to stderr); it reads MOUNTPOINT/.status,
or with --cluster asks the mount over its control socket.

Flags:
  --json          print the raw JSON from MOUNTPOINT/.status
  --watch         refresh the tables every --interval
  --interval D    time between snapshots with --watch (default 2s)
  --count N       stop after N snapshots (default 0: until interrupted)
  --cluster       ask every member and merge their views (see above)
  --timeout D     with --cluster: how long the members have to answer (default
                  2s; must be positive: the answers need a round trip)
  --control PATH  with --cluster: the mount's control socket (default MOUNTPOINT.sock)

Examples:
  dlockfs status /run/dlockfs
  dlockfs status --watch --interval 1s /run/dlockfs
  dlockfs status --watch --interval 10s /run/dlockfs >>/var/log/dlockfs-status.log
  dlockfs status --json /run/dlockfs | jq '.locks[] | select(.state=="holding")'
  dlockfs status --cluster /run/dlockfs
  dlockfs status --cluster --json /run/dlockfs | jq -r '.locks[] | select(.name=="deploy") | .holder'

Exit codes: 0 ok, 16 not a live dlockfs mount, 1 other.
`

const helpLock = `Usage: dlockfs lock [--shared] [--try | --timeout DUR] MOUNTPOINT[/NAME] [--] CMD [ARGS...]

Run CMD while holding lock NAME (default "lock") of the dlockfs mounted at
MOUNTPOINT: like flock(1), but for the whole cluster. Before opening, the path
is checked to be inside a live dlockfs mount (a FUSE filesystem serving
.status), so a dead or missing mount never runs CMD unlocked. The lock is then
opened (blocking until granted), and CMD runs as a child of dlockfs lock: it
inherits the open descriptor (and so do its children), and the lock is
released when the last of them and dlockfs lock have exited. lock exits with
CMD's status; SIGINT, SIGTERM and SIGHUP are forwarded to CMD. Flags may come
before or after the path; everything after the path is CMD and its arguments.

Writes: nothing itself (errors to stderr); CMD writes what it writes.

Revocation: in majority mode a node that loses its lease (cut off from a
majority of the voters, or its daemon starved or paused) revokes its holds,
and reads of the held file fail with EIO. lock reads it every 100 ms; on EIO
(or when the daemon is gone) it sends CMD SIGTERM, then SIGKILL after
--revoke-grace, and exits 17. Another node may hold the lock by then: a
resource that checks DLOCKFS_TOKEN refuses CMD's late writes. A read stuck
in a paused daemon is answered when it runs again, so a pause is noticed
only then.

CMD's environment gains:
  DLOCKFS_TOKEN   the fencing token of this hold (rises with every grant of
                  this lock: pass it to the resource you protect and have it
                  refuse older tokens)
  DLOCKFS_FD      the number of the descriptor that holds the lock (3)
  DLOCKFS_LOCK    the lock file's path

Shared: with --shared, CMD holds the lock together with every other shared
holder, on any node (readers), and excludes only exclusive holders (writers:
dlockfs lock without --shared, flock -x). Requests are served in timestamp
order, so a reader that asks after a writer waits behind it. lock takes it as
flock -s does, by flock(LOCK_SH) on MOUNTPOINT/flock/NAME: CMD inherits that
descriptor. A shared hold's token is above every earlier exclusive hold's;
readers that hold together may share a token.

Flags:
  --shared, -s       take a shared (reader) hold
  --try, -n          do not wait: exit 12 if the lock is busy
  --timeout, -w DUR  wait at most DUR (e.g. 30s, 5m), then exit 13; 0 means
                     do not wait, as flock -w 0: the same as --try (exit 12)
  --revoke-grace DUR after a revocation, SIGKILL CMD if it still runs DUR
                     after SIGTERM (default 5s; 0 = SIGKILL at once)

Examples:
  dlockfs lock /run/dlockfs -- make deploy
  dlockfs lock --try /run/dlockfs/backup -- ./backup.sh || echo "backup already running"
  dlockfs lock --timeout 1m /run/dlockfs/db -- sh -c 'migrate --fence "$DLOCKFS_TOKEN"'
  dlockfs lock --shared /run/dlockfs/db -- ./report.sh   # readers run together

Exit codes: CMD's status once CMD ran (17 if the hold was revoked under it);
before that 12 busy (--try), 13 timeout, 16 not a live dlockfs mount, 126/127 CMD not executable/not found,
2 usage, 1 other.
`

const helpCheck = `Usage: dlockfs check [-q] MOUNTPOINT

Exit 0 if MOUNTPOINT is a live dlockfs mount, else 16 with the reason on stderr
(not mounted, another filesystem, or a dead mount whose daemon is gone).
Writes: nothing but that reason on stderr. For scripts that take a lock with a redirection instead of 'dlockfs lock':

  dlockfs check /run/dlockfs || exit 1
  exec 9</run/dlockfs/deploy      # blocks until granted
  ./deploy.sh
  exec 9<&-                       # release

Flags:
  -q, --quiet   print nothing, only set the exit code
`

const helpKeygen = `Usage: dlockfs keygen

Print a new random cluster key: 32 bytes (AES-256) in base64, from the
operating system's cryptographic random source. Give every member the same
key with --key-file. Writes: the key on stdout, nothing else. Keep it
private:

  (umask 077; dlockfs keygen > /etc/dlockfs.key)
`

const helpKeys = `Usage: dlockfs keys [--control PATH] [--json] list | install KEY | use KEY | remove KEY

Rotate the cluster key without downtime, the way Serf's keyring does it. The
command talks to one running 'dlockfs mount' through its control socket (a
unix socket, mode 0600, answering only its own user or root: by default
MOUNTPOINT.sock next to the mountpoint, so /run/dlockfs.sock for a mount at
/run/dlockfs). That peer applies the operation on every member through
Serf's KeyManager (a cluster-wide Serf query); each member changes its one
keyring, which encrypts gossip and authenticates the lock channel. The
command reports how many members applied it and exits 1 unless all did.

Writes: the report on stdout. install, use and remove change the keyring of
every member, which each member writes to its --state-dir/keyring.json; the
command writes no file itself (and no --key-file: see below).

Operations:
  list          every key installed in the cluster, how many members hold
                it and how many use it as their primary key
  install KEY   add KEY on every member: accepted from now on (gossip and
                new lock connections), not yet used to send
  use KEY       make an installed KEY the primary key on every member: new
                gossip and new lock connections use it; established lock
                connections switch to it in band, without a reconnection
  remove KEY    remove KEY from every member; a lock connection still on it
                is closed and redialled with the primary key (within 1 s on
                each member). Removing the primary key is refused.

KEY is base64 of 16, 24 or 32 bytes ('dlockfs keygen'), or - to read it from
stdin (a KEY on the command line is visible to other users in ps).

A rotation, run on any one member:
  new=$(dlockfs keygen)
  dlockfs keys install "$new" && dlockfs keys use "$new" && dlockfs keys remove "$old"

Each member keeps its keyring in --state-dir/keyring.json, written before
it answers each operation, and a restart uses that file over --key-file: a
member restarted after the rotation keeps the new key. A new member (no
keyring file yet) needs the new key in its --key-file, else it is refused
(exit 11); so does a member whose --state-dir was lost. Write the new key
into every --key-file too. A member that is down during the rotation misses
it, and cannot rejoin with the old key once removed: give it the new key
file and remove its keyring.json.

Flags:
  --control PATH  the mount's control socket (default /run/dlockfs.sock)
  --json          print the members' answers as JSON

Exit codes: 0 applied on every member, 2 usage or bad KEY, 16 no mount
serves the control socket, 1 other (a member failed, the primary key, a
plaintext cluster).
`
