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

// The state words of a Status, for the programs that read it (and the
// tests): compare with these, not with string literals.
const (
	// LockIdle, LockRequesting and LockHolding are LockStatus.State (the
	// core's Phase).
	LockIdle       = "idle"
	LockRequesting = "requesting"
	LockHolding    = "holding"
	// MemberAlive, MemberFailed and MemberLeft are MemberStatus.Status.
	MemberAlive  = "alive"
	MemberFailed = "failed"
	MemberLeft   = "left"
	// VoterSelf, VoterAlive, VoterSilent, VoterDown and VoterEvicted are
	// VoterStatus.State (the core's quorum view).
	VoterSelf    = "self"
	VoterAlive   = "alive"
	VoterSilent  = "silent"
	VoterDown    = "down"
	VoterEvicted = "evicted"
	// ModeExclusive and ModeShared are LockStatus.Mode, ClusterLock.Mode
	// and LockView.Mode.
	ModeExclusive = "exclusive"
	ModeShared    = "shared"
)

// Status is a snapshot of a peer, as served by the .status file: the
// schema of that file, which the command line and the tests decode into.
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
	// Quorum is majority mode's state; nil (absent) with Quorum "none".
	Quorum *QuorumStatus `json:"quorum,omitempty"`
	// Draining: the mount is stopping (a SIGTERM drain): it grants no new
	// local open and waits for its local holders before it leaves. The
	// peer itself never sets it; the mount that serves it does.
	Draining bool `json:"draining"`
	// Suspects lists the members this peer suspects of refusing to
	// answer (see Config.AnswerTimeout), by name.
	Suspects []SuspectStatus `json:"suspects"`
}

// SuspectStatus is a member suspected of refusing to answer.
type SuspectStatus struct {
	Name string `json:"name"`
	// Lock and Request name the oldest request of ours it owes an
	// answer to, ForMS for how long (milliseconds); Lock is empty when
	// the suspicion rests on a probe it left unanswered (Probe), which
	// another voter's report made us send.
	Lock    string `json:"lock"`
	Request uint64 `json:"request"`
	ForMS   int64  `json:"for_ms"`
	Probe   bool   `json:"probe"`
}

// SlowStatus is a member that has owed an answer to this lock's request
// for longer than the answer-timeout.
type SlowStatus struct {
	Name    string `json:"name"`
	Request uint64 `json:"request"`
	ForMS   int64  `json:"for_ms"`
}

// QuorumStatus is majority mode's state on this peer.
type QuorumStatus struct {
	// Mode is "majority".
	Mode string `json:"mode"`
	// Version is the voter set's version (it rises with every change).
	Version uint64 `json:"version"`
	// Voters lists every voter with its state as seen here.
	Voters []VoterStatus `json:"voters"`
	// Majority is how many voters make a majority.
	Majority int `json:"majority"`
	// HasMajority reports that this peer hears from a majority of the
	// voters (itself included; evicted voters do not count).
	HasMajority bool `json:"has_majority"`
	// Voter reports that this peer is one of the voters.
	Voter bool `json:"voter"`
	// LeaseValid: this peer holds a lease now, so it may be granted locks;
	// LeaseLeftMS is how long it has left, in milliseconds.
	LeaseValid  bool  `json:"lease_valid"`
	LeaseLeftMS int64 `json:"lease_left_ms"`
	// Lease and LockDelay are the profile's, as Go durations ("1s").
	Lease     string `json:"lease"`
	LockDelay string `json:"lock_delay"`
	// Lapses counts leases lost; Revoked counts holds they revoked;
	// Evictions counts voters evicted, as counted here.
	Lapses    uint64 `json:"lapses"`
	Revoked   uint64 `json:"revoked"`
	Evictions uint64 `json:"evictions"`
	// Pending lists voter set changes under way ("add b", "remove c").
	Pending []string `json:"pending"`
}

// VoterStatus is one voter.
type VoterStatus struct {
	Name string `json:"name"`
	// State is VoterSelf, VoterAlive, VoterSilent (nothing heard for a
	// lease), VoterDown (Serf reports it failed) or VoterEvicted (a
	// majority declared it: it counts as having answered every request).
	State string `json:"state"`
	// Declared: this peer declared it evicted.
	Declared bool `json:"declared"`
}

// MemberStatus is one member as Serf knows it.
type MemberStatus struct {
	Name string `json:"name"`
	// Addr is the gossip address, IP:PORT.
	Addr string `json:"addr"`
	// LockAddr is the lock channel's address from the member's tags.
	LockAddr string `json:"lock_addr"`
	// Status is MemberAlive, MemberFailed or MemberLeft (a member leaving
	// counts as left).
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
	// State is LockIdle, LockRequesting or LockHolding.
	State string `json:"state"`
	// Holder is this node's name while it holds the lock, else "": a
	// Ricart–Agrawala peer cannot know a remote holder.
	Holder string `json:"holder"`
	// Mode is "exclusive" or "shared": the mode of the local hold, or of
	// the request under way ("" while idle).
	Mode string `json:"mode"`
	// Holders counts the local openers holding the lock: 1 for an
	// exclusive hold, 1 or more readers for a shared one.
	Holders int `json:"holders"`
	// Token is the fencing token of the current or last local hold.
	Token uint64 `json:"token"`
	// Waiting counts local openers waiting.
	Waiting int `json:"waiting"`
	// Queued lists the peers whose requests this peer defers.
	Queued []string `json:"queued"`
	// Awaiting lists the peers whose reply this peer's request lacks.
	Awaiting []string `json:"awaiting"`
	// Slow lists those of Awaiting that have owed their answer for
	// longer than the answer-timeout: suspected of refusing to answer.
	Slow []SlowStatus `json:"slow"`
	// Permissions lists the peers whose permission this peer keeps.
	Permissions []string `json:"permissions"`
	// Revoked counts local holds of this lock that a lapse of the lease
	// revoked and whose openers have not closed yet (their reads fail
	// with EIO).
	Revoked int `json:"revoked"`
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
		Suspects:  []SuspectStatus{},
	}
	for _, s := range cs.Suspects {
		st.Suspects = append(st.Suspects, SuspectStatus{Name: s.Name, Lock: s.Lock, Request: s.ReqTime,
			ForMS: s.For.Milliseconds(), Probe: s.Probe})
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
			Slow:        []SlowStatus{},
		}
		for _, sp := range l.Slow {
			ls.Slow = append(ls.Slow, SlowStatus{Name: sp.Name, Request: sp.ReqTime, ForMS: sp.For.Milliseconds()})
		}
		if l.Phase == mutex.Holding {
			ls.Holder = p.name
			ls.Holders = l.Holders
		}
		switch {
		case l.Phase == mutex.Idle:
		case l.Shared:
			ls.Mode = ModeShared
		default:
			ls.Mode = ModeExclusive
		}
		st.Locks = append(st.Locks, ls)
	}
	revoked := map[string]int{}
	p.revoked.Range(func(_, v any) bool {
		if name, ok := v.(string); ok {
			revoked[name]++
		}
		return true
	})
	for i := range st.Locks {
		if n, ok := revoked[st.Locks[i].Name]; ok {
			st.Locks[i].Revoked = n
			delete(revoked, st.Locks[i].Name)
		}
	}
	for name, n := range revoked { // the core forgot the lock already
		st.Locks = append(st.Locks, LockStatus{Name: name, State: LockIdle, Queued: []string{}, Awaiting: []string{},
			Permissions: []string{}, Slow: []SlowStatus{}, Revoked: n})
	}
	slices.SortStableFunc(st.Locks, func(a, b LockStatus) int { return strings.Compare(a.Name, b.Name) })
	if q := cs.Quorum; q != nil {
		qs := &QuorumStatus{Mode: QuorumMajority, Version: q.Version, Voters: []VoterStatus{}, Majority: q.Majority,
			Voter: q.Voter, LeaseValid: q.Lease, LeaseLeftMS: q.LeaseLeft.Milliseconds(),
			Lease: q.LeaseLen.String(), LockDelay: q.LockDelay.String(),
			Lapses: q.Lapses, Revoked: q.Revoked, Evictions: q.Evictions, Pending: nonNil(q.Pending)}
		reach := 0
		for _, v := range q.Voters {
			qs.Voters = append(qs.Voters, VoterStatus{Name: v.Name, State: v.State, Declared: v.Declared})
			if v.State == VoterSelf || v.State == VoterAlive {
				reach++
			}
		}
		qs.HasMajority = reach >= q.Majority
		st.Quorum = qs
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
		return MemberAlive
	case serf.StatusFailed:
		return MemberFailed
	case serf.StatusLeaving, serf.StatusLeft:
		return MemberLeft
	}
	return MemberFailed
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return slices.Clone(s)
}
