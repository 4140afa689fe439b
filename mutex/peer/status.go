package peer

import (
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/serf/serf"

	"github.com/dlockfs/dlockfs/mutex"
)

// Status is a snapshot of a peer, as served by the .status file.
type Status struct {
	Node        string `json:"node"`
	Incarnation uint64 `json:"incarnation,string"`
	// Lamport is the core's Lamport clock.
	Lamport   uint64 `json:"lamport"`
	Encrypted bool   `json:"encrypted"`
	Profile   string `json:"profile"`
	// Members is every member Serf knows, this peer included, by name.
	Members   []MemberStatus `json:"members"`
	Locks     []LockStatus   `json:"locks"`
	Counters  mutex.Counters `json:"counters"`
	Transport transportStats `json:"transport"`
}

// MemberStatus is one member as Serf knows it.
type MemberStatus struct {
	Name string `json:"name"`
	// Addr is the gossip address, IP:PORT.
	Addr string `json:"addr"`
	// LockAddr is the lock channel's address from the member's tags.
	LockAddr string `json:"lock_addr"`
	// Status is "alive", "failed" or "left" (a member leaving counts as
	// left).
	Status string `json:"status"`
	// LockConnected reports that this peer's outgoing lock connection to
	// the member is established (always true for this peer itself). An
	// alive member that stays unconnected stalls every lock it is asked
	// about until it is reachable; the lock channel logs a warning then.
	LockConnected bool `json:"lock_connected"`
}

// LockStatus is one lock's state on this peer.
type LockStatus struct {
	Name string `json:"name"`
	// State is "idle", "requesting" or "holding".
	State string `json:"state"`
	// Holder is this node's name while it holds the lock, else "": a
	// Ricart–Agrawala peer cannot know a remote holder.
	Holder string `json:"holder"`
	// Token is the fencing token of the current or last local hold.
	Token uint64 `json:"token"`
	// Waiting counts local openers waiting.
	Waiting int `json:"waiting"`
	// Queued lists the peers whose requests this peer defers.
	Queued []string `json:"queued"`
	// Awaiting lists the peers whose reply this peer's request lacks.
	Awaiting []string `json:"awaiting"`
	// Permissions lists the peers whose permission this peer keeps.
	Permissions []string `json:"permissions"`
}

// Status returns a snapshot of the peer. After the peer stopped it shows
// the last state of its locks.
func (p *Peer) Status() Status {
	cs := p.coreStatus()
	st := Status{
		Node:        p.name,
		Incarnation: p.inc,
		Lamport:     cs.Lamport,
		Encrypted:   p.encrypted,
		Profile:     p.profile,
		Members:     []MemberStatus{},
		Locks:       make([]LockStatus, 0, len(cs.Locks)),
		// The core's Status hands out a DroppedBy map of its own.
		Counters:  cs.Counters,
		Transport: p.tr.Stats(),
	}
	if st.Counters.DroppedBy == nil {
		st.Counters.DroppedBy = map[string]uint64{}
	}
	if p.serf != nil {
		connected := map[string]bool{p.name: true}
		for _, ps := range p.tr.PeerStates() {
			connected[ps.Name] = ps.Connected
		}
		for _, m := range p.serf.Members() {
			st.Members = append(st.Members, MemberStatus{
				Name:          m.Name,
				Addr:          net.JoinHostPort(m.Addr.String(), strconv.Itoa(int(m.Port))),
				LockAddr:      m.Tags[tagLock],
				Status:        memberStatus(m.Status),
				LockConnected: connected[m.Name],
			})
		}
		slices.SortFunc(st.Members, func(a, b MemberStatus) int { return strings.Compare(a.Name, b.Name) })
	}
	for _, l := range cs.Locks {
		ls := LockStatus{
			Name:        l.Name,
			State:       l.Phase.String(),
			Token:       l.Token,
			Waiting:     l.Waiting,
			Queued:      nonNil(l.Queued),
			Awaiting:    nonNil(l.Awaiting),
			Permissions: nonNil(l.Permissions),
		}
		if l.Phase == mutex.Holding {
			ls.Holder = p.name
		}
		st.Locks = append(st.Locks, ls)
	}
	return st
}

// StatusJSON returns Status as indented JSON, newline-terminated.
func (p *Peer) StatusJSON() ([]byte, error) {
	b, err := json.MarshalIndent(p.Status(), "", "  ")
	if err != nil {
		return nil, fmt.Errorf("peer: status: %w", err)
	}
	return append(b, '\n'), nil
}

func memberStatus(s serf.MemberStatus) string {
	switch s {
	case serf.StatusAlive:
		return "alive"
	case serf.StatusFailed:
		return "failed"
	case serf.StatusLeaving, serf.StatusLeft:
		return "left"
	}
	return "failed"
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return slices.Clone(s)
}
