package mutex

import (
	"errors"
	"fmt"
	"strings"
)

// OpenerID identifies one local opener: one caller of Acquire or TryAcquire
// on this peer. The caller chooses it; it must be unique among the openers
// the core currently knows.
type OpenerID uint64

// MsgType is the kind of a lock message.
type MsgType uint8

// The lock messages.
const (
	// MsgRequest asks the receiver's permission to enter lock Lock with
	// request timestamp ReqTime (Try marks a try-lock).
	MsgRequest MsgType = 1
	// MsgReply grants the request ReqTime.
	MsgReply MsgType = 2
	// MsgBusy refuses the try-lock request ReqTime: the receiver would
	// have deferred it.
	MsgBusy MsgType = 3
	// MsgCancel withdraws the request ReqTime.
	MsgCancel MsgType = 4
	// MsgHello tells a peer that the sender now counts it as a member;
	// the receiver sends again every request it still has outstanding
	// with the sender (a request sent before the sender knew us was
	// dropped). Lock, ReqTime and Try are empty.
	MsgHello MsgType = 5
)

// String names the message type.
func (t MsgType) String() string {
	switch t {
	case MsgRequest:
		return "request"
	case MsgReply:
		return "reply"
	case MsgBusy:
		return "busy"
	case MsgCancel:
		return "cancel"
	case MsgHello:
		return "hello"
	}
	return fmt.Sprintf("msgtype(%d)", uint8(t))
}

// Message is one lock message between two peers. Incarnations identify one
// life of a peer: a peer restarted under the same name has a new incarnation,
// and messages to or from an old one are dropped.
type Message struct {
	Type            MsgType
	From            string
	FromIncarnation uint64
	To              string
	ToIncarnation   uint64
	// Lock is the lock's name (empty for MsgHello).
	Lock string
	// Time is the sender's Lamport time when it sent the message.
	Time uint64
	// ReqTime is the timestamp of the request the message concerns.
	ReqTime uint64
	// Try marks a try-lock request.
	Try bool
}

// String renders the message for logs and failing tests.
func (m Message) String() string {
	try := ""
	if m.Try {
		try = " try"
	}
	return fmt.Sprintf("%s %s/%d->%s/%d lock=%q t=%d req=%d%s",
		m.Type, m.From, m.FromIncarnation, m.To, m.ToIncarnation, m.Lock, m.Time, m.ReqTime, try)
}

// Grant tells a local opener it holds lock Lock. Token is the fencing token.
type Grant struct {
	Opener OpenerID
	Lock   string
	Token  uint64
}

// Refusal tells a local try-lock opener that the lock is busy.
type Refusal struct {
	Opener OpenerID
	Lock   string
}

// Ready holds the outputs accumulated since the last call to [Core.Ready].
// The caller performs them in this order: send Messages (each to its To
// peer), then deliver Grants, then Refusals. A grant delivered to an opener
// that has meanwhile gone away must be given back with [Core.Release].
type Ready struct {
	Messages []Message
	Grants   []Grant
	Refusals []Refusal
}

// Empty reports whether there is nothing to do.
func (r Ready) Empty() bool {
	return len(r.Messages) == 0 && len(r.Grants) == 0 && len(r.Refusals) == 0
}

// Config configures a [Core].
type Config struct {
	// Name is this peer's node name, unique in the cluster. Ties between
	// equal timestamps are broken by name.
	Name string
	// Incarnation identifies this life of the peer (a boot nonce).
	Incarnation uint64
	// KeepPermissions enables the Roucairol–Carvalho optimisation.
	KeepPermissions bool
}

// Validate reports the first problem with the configuration.
func (c Config) Validate() error {
	if c.Name == "" {
		return errors.New("mutex: config: Name is empty")
	}
	if len(c.Name) > MaxNameLen {
		return fmt.Errorf("mutex: config: Name is longer than %d bytes", MaxNameLen)
	}
	return nil
}

// MaxNameLen is the longest node or lock name, in bytes.
const MaxNameLen = 255

// Errors.
var (
	// ErrLocked is a try-lock's answer when the lock is held or wanted.
	ErrLocked = errors.New("lock is busy")
	// ErrInvalidName rejects a lock name that is empty, too long, or holds
	// '/' or NUL, or is "." or "..".
	ErrInvalidName = errors.New("invalid lock name")
	// ErrUnknownPeer: the message came from, or was meant for, a peer
	// (or incarnation) that is not a current member.
	ErrUnknownPeer = errors.New("message from unknown peer")
	// ErrStale: a request or cancel older than one already seen from
	// that peer for that lock.
	ErrStale = errors.New("stale message")
	// ErrUnexpected: a reply or busy that answers no outstanding request,
	// or a cancel/reply for a lock this peer has no state for.
	ErrUnexpected = errors.New("unexpected message")
	// ErrDuplicate: a message already seen.
	ErrDuplicate = errors.New("duplicate message")
	// ErrMalformed: a message with an unknown type or missing fields.
	ErrMalformed = errors.New("malformed message")
)

// ValidLockName reports whether name can be a lock's name: 1 to MaxNameLen
// bytes, not "." or "..", with no '/' and no NUL.
func ValidLockName(name string) error {
	if name == "" || name == "." || name == ".." || len(name) > MaxNameLen ||
		strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("%w: %q", ErrInvalidName, name)
	}
	return nil
}

// Phase is the local state of one lock on one peer.
type Phase uint8

// The phases of a lock.
const (
	Idle Phase = iota
	Requesting
	Holding
)

// String names the phase.
func (p Phase) String() string {
	switch p {
	case Idle:
		return "idle"
	case Requesting:
		return "requesting"
	case Holding:
		return "holding"
	}
	return fmt.Sprintf("phase(%d)", uint8(p))
}

// Status is a snapshot of a core, for introspection.
type Status struct {
	Name        string
	Incarnation uint64
	Lamport     uint64
	Members     []MemberStatus // sorted by name, this peer excluded
	Locks       []LockStatus   // sorted by name
	Counters    Counters
}

// MemberStatus is one member as the core knows it.
type MemberStatus struct {
	Name        string
	Incarnation uint64
}

// LockStatus is one lock's state on this peer.
type LockStatus struct {
	Name  string
	Phase Phase
	// Holder is the local opener holding the lock (Phase == Holding).
	Holder OpenerID
	// Token is the fencing token of the current or last local hold.
	Token uint64
	// ReqTime is the timestamp of the outstanding or held request.
	ReqTime uint64
	// Try reports that the outstanding request is a try-lock.
	Try bool
	// Waiting counts local openers waiting: the requesting one and those
	// queued behind it or behind the holder (the holder excluded).
	Waiting int
	// Queued lists the peers whose requests are deferred here.
	Queued []string
	// Awaiting lists the peers whose reply the outstanding request lacks.
	Awaiting []string
	// Permissions lists the peers whose permission this peer holds.
	Permissions []string
}

// Counters count what the core has done since it was made. The JSON names
// are those of the status file.
type Counters struct {
	Sent     uint64 `json:"sent"`     // messages output
	Received uint64 `json:"received"` // messages stepped
	Dropped  uint64 `json:"dropped"`  // messages rejected (Received includes them)
	Grants   uint64 `json:"grants"`
	Refusals uint64 `json:"refusals"`
	// DroppedBy counts drops by the sentinel error's text.
	DroppedBy map[string]uint64 `json:"dropped_by"`
}
