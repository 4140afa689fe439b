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
// With [Config.KeepPermissions] the core applies the Roucairol–Carvalho
// optimisation: a permission received from a peer is kept until we reply to
// that peer's request, so a repeated acquisition that nobody else contends
// costs no message at all.
//
// Every grant carries a fencing token: the Lamport time at entry, which
// strictly increases across successive holders of a lock as long as no peer
// crashes between them (a crashed holder takes its knowledge with it).
package mutex
