// Package mutex implements the Ricart–Agrawala distributed mutual exclusion
// algorithm as a pure, deterministic state machine.
//
// A [Core] is one peer's view of every named lock. It has no goroutines, reads
// no clock, performs no I/O and uses no randomness: the caller feeds it inputs
// (a local acquire, try-acquire, cancel or release, an incoming [Message], a
// member joining or going away) and then drains its outputs with
// [Core.Ready]: messages to send, grants and refusals for local openers. This
// is the shape of etcd raft's Step/Ready, and it is what lets the algorithm be
// proven by a seeded, replayable simulation (see sim_test.go).
//
// Ordering follows the seed design: each request carries a Lamport timestamp
// (a [serf.LamportClock] Increment per new request, Witness on every message
// received from a member) and requests are ordered by (timestamp, node name).
// An incoming request is answered by one of four cases: idle → reply now;
// holding → defer until release; requesting with an earlier (time, name) →
// defer until our own release; requesting with a later one → reply now.
//
// Shared locks ([Core.AcquireShared], [Core.TryAcquireShared]) follow the
// readers–writers form of the algorithm: a request carries its mode, and a
// peer defers an incoming request only if the two conflict (either is a
// writer's) and its own has priority, or it holds; a reader never defers a
// reader. Requests are still served in (timestamp, name) order, so a reader
// whose request is later than a writer's waits behind it, and writers do not
// starve behind a stream of readers. On one peer, a reader joins the peer's
// shared request or hold (one request serves the group) unless a writer's
// request waits on it; a writer's request that waits here is earlier than
// any this reader could make now.
//
// With [Config.KeepPermissions] the core applies the Roucairol–Carvalho
// optimisation: a permission received from a peer is kept until we reply to
// that peer's request, so a repeated acquisition that nobody else contends
// costs no message at all.
//
// Every grant carries a fencing token: the Lamport time at entry, which
// strictly increases across successive holders of a lock as long as no peer
// crashes between them (a crashed holder takes its knowledge with it). With
// shared holds: an exclusive grant's token is above every earlier grant's,
// and a shared grant's above every earlier exclusive one's; readers holding
// together may have equal tokens (the readers of one peer's group share
// theirs). A permission kept from a reader, which may give it while it
// holds, serves shared requests only.
package mutex
