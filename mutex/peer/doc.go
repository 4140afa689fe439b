// Package peer runs one member of a dlockfs cluster: the pure
// Ricart–Agrawala core ([mutex.Core]) behind a driver goroutine, Serf for
// membership and failure detection, and a TCP lock channel
// (mutex/transport) for the lock messages.
//
// # The driver
//
// One goroutine, the driver, owns the core, and shares it under one
// mutex only with the lock channel's readers (each steps the core with the
// message it read) and with Lock, TryLock, a cancelled Lock's withdrawal
// and Unlock (each steps it with its own call), so that a lock round costs
// no hand-off between goroutines. The driver selects on the other local
// calls (Status, ...), the lock channel's reconnections, Serf's member
// events, ticks and stop. Whoever steps the core then performs its
// outputs in order: messages go to the lock channel (which never
// blocks), grants to the waiting callers, refusals as [mutex.ErrLocked].
// A grant for a caller that went away is given back at once. Every
// wake-up of another goroutine on a lock round costs scheduling time, on a
// small machine as much as the network round itself. A Lock whose context
// ends withdraws its request without a trace (the core sends a cancel to
// every peer it asked) and returns the context's error.
//
// # Membership
//
// Every peer publishes two Serf tags: "lock", the lock channel's address,
// and "nonce", a random boot nonce that is also the core's incarnation. A
// member that joins, or is updated with a new nonce or lock address,
// becomes a member of the core (a new nonce is a new peer: whatever its
// previous life held or owed is forgotten); a member that fails, leaves or
// is reaped is removed, and counts as having replied to every request.
// Failure detection therefore bounds how long a crashed peer can stall a
// lock: see [ProfileLAN], [ProfileWAN] and [ProfileFast]. It is also the
// algorithm's weak spot: a live peer wrongly declared failed (a long GC
// pause, a starved CPU, a partition) is counted as having replied, so two
// peers may hold a lock at once until it is back. Fencing tokens
// ([mutex.Grant].Token) let a protected resource refuse the older holder.
//
// [Start] returns only after the core counts every member Serf knew at the
// join, so a Lock right after Start never skips a peer. Until a peer has
// added us, it drops our messages; when it adds us it sends a hello, on
// which we send our outstanding requests again.
//
// # Lost messages
//
// The lock channel redials a broken connection and reports it; the driver
// then has the core re-send the requests that peer has not answered, and
// sends the peer a hello so that it re-sends its own outstanding requests,
// which the core answers again: a request or a reply lost with a
// connection is recovered. Duplicates are dropped by the core.
//
// A newcomer whose name a live member already has is refused: its [Start]
// fails with [ErrNameConflict], and the member carries on. A peer whose
// Serf shuts down under it stops by itself: [Peer.Done] is closed and
// [Peer.Err] is [ErrSerfDown].
//
// # Cluster status
//
// No Ricart–Agrawala peer knows who holds a lock elsewhere. [Peer.ClusterStatus]
// asks every alive member over the lock channel (a status query, served
// off the driver) within a bound and merges the answers: the holder, the
// requesters in request order, each member's view, and which members did
// not answer (see cluster.go).
//
// # Leaving
//
// [Peer.Leave] withdraws the local waiters (their Lock returns
// [ErrClosed]), releases local holds and answers every deferred request,
// flushes the lock channel, then leaves Serf, so that the others go on at
// once instead of waiting for failure detection.
package peer
