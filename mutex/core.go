package mutex

import "errors"

// Core is one peer's Ricart–Agrawala state for every named lock. It is not
// safe for concurrent use: one goroutine (the driver) owns it.
type Core struct {
	cfg Config
}

// New returns a core for the peer cfg describes, with no members yet.
func New(cfg Config) (*Core, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Core{cfg: cfg}, nil
}

var errTODO = errors.New("mutex: not implemented yet")

// Acquire queues local opener op for lock; it is granted (see Ready) when
// every member has replied. Openers of one lock on one peer are served FIFO.
func (c *Core) Acquire(op OpenerID, lock string) error { return errTODO }

// TryAcquire is Acquire that must not wait: if the lock is held or wanted
// here, or a member would defer the request, op gets a Refusal instead.
func (c *Core) TryAcquire(op OpenerID, lock string) error { return errTODO }

// Cancel withdraws op: a waiting opener leaves the queue without a trace; a
// holder releases. Unknown openers are ignored.
func (c *Core) Cancel(op OpenerID) {}

// Release ends op's hold: deferred replies go out, then the next local
// waiter's request is made.
func (c *Core) Release(op OpenerID) error { return errTODO }

// Step processes one incoming message. A message that is rejected is counted
// and leaves the state unchanged; the error wraps one of ErrUnknownPeer,
// ErrStale, ErrUnexpected, ErrDuplicate, ErrMalformed.
func (c *Core) Step(m Message) error { return errTODO }

// AddMember records peer name (incarnation inc) as a member and sends it a
// hello. Outstanding requests go to it and its reply is awaited. A known
// name with another incarnation is first removed (a restart is a new peer).
func (c *Core) AddMember(name string, inc uint64) {}

// RemoveMember records that peer name failed or left: it counts as having
// replied to every request, and its own requests leave the deferred queues.
func (c *Core) RemoveMember(name string) {}

// Reconnected tells the core that the channel to peer name was re-opened:
// requests still outstanding with it are sent again.
func (c *Core) Reconnected(name string) {}

// Shutdown withdraws every waiting opener and releases every hold, so that
// nobody waits on this peer, before it leaves the cluster.
func (c *Core) Shutdown() {}

// Ready returns the outputs accumulated since the last call and clears them.
func (c *Core) Ready() Ready { return Ready{} }

// Status returns a snapshot of the core.
func (c *Core) Status() Status { return Status{} }
