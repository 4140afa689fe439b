// Package transport carries dlockfs lock messages ([mutex.Message]) between
// peers over persistent TCP connections. Serf only keeps the membership:
// its gossip is too slow and too lossy for Ricart–Agrawala's requests and
// replies.
//
// # Connections
//
// Each peer listens ([Listen]) and dials one outgoing connection to every
// peer it knows ([Transport.AddPeer]). A connection carries messages one way
// only: a peer sends on the connection it dialled and reads from those it
// accepted. [Transport.Send] never blocks: it puts the message on the
// peer's bounded queue (a full queue drops it and counts the drop), and the
// peer's writer goroutine drains the queue through a bufio.Writer, flushing
// whenever the queue is empty; no timer sits in the send path. A broken
// connection is redialled at once if it had lasted (or is the first in a
// row to break soon after its handshake), else after a bounded, jittered
// backoff, and every
// completed (re)connection is announced on [Transport.Connected]: the
// caller (the peer's driver) then tells the core, which re-sends what it
// still owes, so messages lost with the old connection are recovered. A peer
// that cannot be reached while messages wait for it is logged as a warning
// from the second failed attempt in a row (and every 30th after), naming
// the peer and its address: its locks stall until it is reachable or
// removed. [Transport.PeerStates] tells which peers are connected.
//
// # Wire format
//
// Both ends first send a 38-byte preamble: "DLKF", protocol version 1, mode
// (0 plaintext, 1 AES-GCM) and 32 random bytes (the server's challenge, the
// client's nonce). Then frames follow: a 4-byte big-endian length and a
// body of at most [Config.MaxFrameSize] bytes. The body's plaintext is a
// payload: one byte version<<4|kind, then for a message a flags byte (bit 0
// = Try, bit 1 = Shared) and From, FromIncarnation, To, ToIncarnation, Lock, Time, ReqTime,
// names as a length byte plus bytes (names are at most 255 bytes), numbers
// as unsigned varints. A typical request is 20-40 bytes. The first client
// frame is a hello (its name and incarnation and the name it wants to
// reach), the first server frame a welcome (the server's name and
// incarnation, which the client checks against the peer it was told to
// reach: a peer restarted at the same address is not the one we queued for). Every later message's From and FromIncarnation must match
// the hello and its To must name the server, or the connection is dropped.
// This hand-written encoding is about half the size of gob's and a small
// fraction of its and JSON's cost, allocates nothing to encode and, with the
// names a connection already knows, nothing to decode (see bench_test.go).
//
// # Security
//
// With a cluster [Config.Key] each connection has a session key,
// HMAC-SHA256(Key, "dlockfs-v1" || challenge || nonce) cut to the key's
// length, and every frame body is sealed with AES-GCM under that key, a
// nonce made of the direction and a per-direction frame counter, and the
// length prefix as additional data. So a peer without the key can neither
// complete a handshake, nor send a message that is accepted, nor read one
// (a client sends no message before it has authenticated the server's
// welcome); a replayed, reordered or forged frame fails to open, and a
// replayed connection fails at its hello because the server's challenge is
// new. Both ends must agree on the mode: a keyed peer refuses a plaintext
// one and vice versa. Without a key the same handshake runs in plaintext:
// framing and identity checks, but no secrecy or authentication.
//
// # Key rotation
//
// With a [Config.Keyring] (Serf's *memberlist.Keyring in dlockfs) the keys
// can change while the transport runs, the way Serf rotates its gossip
// keys: a client seals its hello with the keyring's primary key; the server
// opens it with each installed key in turn, primary first, and answers
// under the key that opened it. So once a new key is installed everywhere,
// any peer may make it primary; established connections keep their session
// keys through install, and new connections use the primary key. When the
// primary key changes (use), each established outgoing connection switches
// to it in band, without being dropped ([Transport.Rekey], within 20 ms of
// the change): the client sends a rekey frame naming the new key (by
// [KeyID]) with a fresh nonce, and both ends derive the next session key
// from the new key, the server's challenge and that nonce, the frame
// counters starting again (see rekey.go). A server without the named key
// closes the connection. So a rotation moves every lock connection to the
// new key with no reconnection and no lock message waiting for one. When a
// key is removed, any connection still on it is closed
// ([Transport.CheckKeys], run every [Config.KeyCheckInterval]), outgoing
// ones redialled at once with the primary key: after a rotation no channel
// is left on the old key, and a peer that only has it cannot connect.
//
// # Status queries
//
// [Transport.QueryStatus] asks a peer for its view of the locks (the
// cluster status of dlockfs status --cluster) on a short-lived connection
// of its own to the peer's lock port: the same preamble, keys and session
// key derivation, but a query open (kind 13, with its own version byte)
// instead of a hello, answered by the welcome and one or more answer
// frames, after which the server closes it. It is not a lock connection:
// the client's lock connection stays as it is, and nothing reaches
// Incoming. The server answers with the function set by
// [Transport.HandleStatus], on the connection's goroutine; the client
// waits until its context ends, so a paused peer (whose kernel still
// accepts the TCP connection) costs the caller its deadline and no more.
// See query.go for the layout.
//
// # Bad input
//
// A connection that sends garbage, a frame over the size limit, a frame that
// fails authentication or decoding, a misattributed message, a frame that
// stalls half-way ([Config.ReadTimeout]), a handshake that stalls
// ([Config.HandshakeTimeout]) or more frames per second than
// [Config.MaxFrameRate] is closed, logged (with its remote address) and
// counted in [Transport.Stats]; every other connection goes on. These
// warnings are rate-limited (the next one emitted says how many were
// suppressed), so a storm of bad connections cannot flood the log. Outgoing
// writes have a deadline ([Config.WriteTimeout]), so a peer that stops
// reading is dropped and redialled instead of wedging the sender.
//
// # Shutdown
//
// [Transport.Flush] waits until what was queued has been written, for a
// graceful leave; [Transport.Close] closes every connection and ends every
// goroutine before it returns.
package transport
