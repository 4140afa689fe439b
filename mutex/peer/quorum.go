package peer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/dlockfs/dlockfs/mutex"
)

// hardStateFile is the HardState's file name in Config.StateDir.
const hardStateFile = "hardstate.json"

// ErrVoterBack: Forget's voter came back (it answers, in a new session)
// before the change was made, so the change was dropped and it stays a
// voter.
var ErrVoterBack = errors.New("the voter is back (it answers in a new session): it stays a voter")

// ErrRevoked: the hold ended without an Unlock because this peer's lease
// lapsed (majority mode): it was cut off from a majority of the voters, or
// starved, and others may now be granted the lock.
var ErrRevoked = errors.New("peer: lock revoked: this peer lost its lease (no majority of voters reachable in time)")

// readHardState reads what an earlier life wrote; a missing file is none.
func readHardState(path string) (*mutex.HardState, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("peer: state: %w", err)
	}
	var hs mutex.HardState
	if err := json.Unmarshal(b, &hs); err != nil {
		return nil, fmt.Errorf("peer: state %s: %w (move it away to start this peer afresh)", path, err)
	}
	return &hs, nil
}

// writeHardState replaces the file atomically and durably.
func writeHardState(path string, hs *mutex.HardState) error {
	b, err := json.Marshal(hs)
	if err != nil {
		return err
	}
	return writeFileDurable(path, append(b, '\n'))
}

// now is the core's clock: monotonic time since the peer was made.
func (p *Peer) now() time.Duration { return time.Since(p.epoch) }

// tickEvery is how often the driver ticks the core: Lease/8 in majority
// mode, AnswerTimeout/8 in plain mode.
func (p *Peer) tickEvery() time.Duration {
	if p.quorum != mutex.QuorumMajority {
		if p.answerTO > 0 {
			return p.answerTO / 8 // the answer-timeout's scans
		}
		return time.Hour
	}
	return p.lease / 8
}

// performHardState writes what the core must keep, before its messages go.
func (p *Peer) performHardState(hs *mutex.HardState) {
	if hs == nil || p.statePath == "" {
		return
	}
	if err := writeHardState(p.statePath, hs); err != nil {
		p.log.Error("cannot write the peer's state: a restart may forget the voters or let fencing tokens fall",
			"file", p.statePath, "err", err)
	}
}

// performRevocations ends local holds whose lease lapsed.
func (p *Peer) performRevocations(rs []mutex.Revocation) {
	for _, r := range rs {
		delete(p.held, r.Opener)
		p.revoked.Store(r.Opener, r.Lock)
		if r.MaxHold {
			p.log.Warn("lock revoked: the hold reached --max-hold; the holder must stop: reads of its lock "+
				"file fail with EIO", "lock", r.Lock, "token", r.Token)
			continue
		}
		p.log.Warn("lock revoked: this peer lost its lease (cut off from a majority of the voters, or starved); "+
			"the holder must stop: reads of its lock file fail with EIO", "lock", r.Lock, "token", r.Token)
	}
}

// Revoked reports whether grant g was revoked by a lapse of this peer's
// lease (majority mode). Its holder must stop using the resource.
func (p *Peer) Revoked(g mutex.Grant) bool {
	_, ok := p.revoked.Load(g.Opener)
	return ok
}

// leaveVoters asks the voters to remove this peer, and waits until they
// have (a majority acknowledged) or a bound passes: lease + lock-delay.
func (p *Peer) leaveVoters(ctx context.Context) error {
	if p.quorum != mutex.QuorumMajority {
		return nil
	}
	ack := make(chan struct{})
	select {
	case p.calls <- call{kind: callLeaveVoters, ack: ack}:
	case <-p.done:
		return nil
	}
	_, delay := leaseTimes(p.profile)
	t := time.NewTimer(p.lease + delay)
	defer t.Stop()
	select {
	case <-ack:
		return nil
	case <-p.done:
		return nil
	case <-t.C:
	case <-ctx.Done():
	}
	p.log.Warn("left without the voters' agreement (no majority reachable): this node stays a voter "+
		"until it comes back or `dlockfs forget` removes it", "node", p.name)
	return nil
}

// Forget removes voter node from the voter set (majority mode) and waits
// until this peer's voter set no longer has it, or ctx ends. Without force
// it needs a majority of the voters, and node must have been declared
// evicted by them (silent for a lease and not granted one for the
// lock-delay): so it cannot be holding anything. With force this peer
// removes node on its own word: the way out of a cluster that lost its
// majority for good, such as a 2-peer cluster that lost one; it is unsafe
// if node is alive and can reach a majority of the old voters without us.
func (p *Peer) Forget(ctx context.Context, node string, force bool) error {
	if p.quorum != mutex.QuorumMajority {
		return fmt.Errorf("peer: forget %q: only in majority mode", node)
	}
	for {
		errc := make(chan error, 1)
		select {
		case p.calls <- call{kind: callForget, lock: node, try: force, errc: errc}:
		case <-p.done:
			return fmt.Errorf("peer: forget %q: %w", node, ErrClosed)
		case <-ctx.Done():
			return fmt.Errorf("peer: forget %q: %w", node, ctx.Err())
		}
		var err error
		select {
		case err = <-errc:
		case <-p.done:
			return fmt.Errorf("peer: forget %q: %w", node, ErrClosed)
		}
		// Not yet declared or not yet leased: wait and try again.
		if err != nil && !errors.Is(err, mutex.ErrNotEvicted) && !errors.Is(err, mutex.ErrNoMajority) {
			return fmt.Errorf("peer: %w", err)
		}
		if err == nil {
			for {
				q := p.coreStatus().Quorum
				gone := true
				for _, v := range q.Voters {
					if v.Name == node {
						gone = false
					}
				}
				if gone {
					return nil
				}
				if !slices.Contains(q.Pending, "remove "+node) {
					// The core dropped the change: the voter came back
					// (a new session, answering) before it committed.
					return fmt.Errorf("peer: forget %q: %w", node, ErrVoterBack)
				}
				select {
				case <-ctx.Done():
					return fmt.Errorf("peer: forget %q: no majority agreed yet: %w", node, ctx.Err())
				case <-time.After(p.lease / 8):
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("peer: forget %q: %w (last: %w)", node, ctx.Err(), err)
		case <-time.After(p.lease / 8):
		}
	}
}

// takeRevoked forgets that op was revoked, reporting whether it was.
func (p *Peer) takeRevoked(op mutex.OpenerID) bool {
	_, ok := p.revoked.LoadAndDelete(op)
	return ok
}
