package peer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dlockfs/dlockfs/mutex"
	"github.com/dlockfs/dlockfs/mutex/transport"
)

// The cluster status. A Ricart–Agrawala peer cannot know who holds a lock
// elsewhere: only the holder knows it holds, and each requester knows its
// own request. ClusterStatus therefore asks every live member over the lock
// channel (a status query, see transport.QueryStatus) for its view and
// merges the answers: the holder is the member that says it holds the
// lock, the queue is the members that request it, in request order
// (Lamport timestamp, then node name: the order Ricart–Agrawala grants
// in). Each member's answer is served by a goroutine of the transport that
// asks the driver for a snapshot, as a read of .status does: the driver
// never waits on the network for it.

// statusQuerier is what a transport that answers and asks status queries
// offers (the real one does; the in-memory test transports need not).
type statusQuerier interface {
	HandleStatus(h transport.StatusHandler)
	QueryStatus(ctx context.Context, name string) (transport.StatusAnswer, error)
}

// ClusterStatus is the merged view of every member's locks.
type ClusterStatus struct {
	// Node is the member that asked.
	Node string `json:"node"`
	// BoundMS is the time the members were given to answer, in ms.
	BoundMS int64 `json:"bound_ms"`
	// Complete reports that every live member answered: only then is a
	// lock without a holder known to be free.
	Complete bool `json:"complete"`
	// Peers lists every member Serf knows, by name, with its answer.
	Peers []PeerAnswer `json:"peers"`
	// Locks lists every lock some member has state for, by name.
	Locks []ClusterLock `json:"locks"`
}

// PeerAnswer is one member and how it answered.
type PeerAnswer struct {
	Name string `json:"name"`
	// Status is Serf's: "alive", "failed" or "left". Only alive members
	// are asked.
	Status string `json:"status"`
	// Answered reports an answer within the bound; otherwise Error says
	// why not ("not answering within 2s: ..."; "not asked: failed").
	Answered bool   `json:"answered"`
	Error    string `json:"error,omitempty"`
	// Incarnation and Lamport are the member's, from its answer.
	Incarnation uint64 `json:"incarnation,string,omitempty"`
	Lamport     uint64 `json:"lamport,omitempty"`
	// LeaseValid: in majority mode, the member holds a lease now (a
	// member without one is granted nothing, and its holds are revoked).
	LeaseValid bool `json:"lease_valid,omitempty"`
	// Truncated: the member left some locks out of its answer.
	Truncated bool `json:"truncated,omitempty"`
	// ElapsedMS is how long its answer took, in ms.
	ElapsedMS int64 `json:"elapsed_ms"`
}

// ClusterLock is one lock across the cluster.
type ClusterLock struct {
	Name string `json:"name"`
	// Holder is the member that says it holds the lock, or "" when no
	// member that answered does. Holders lists every such member: more
	// than one, unless all hold it shared, is a violation of mutual
	// exclusion (or, in plain mode, a member wrongly declared failed),
	// shown as it is.
	Holder  string   `json:"holder"`
	Holders []string `json:"holders"`
	// Mode is "shared" when every holder holds the lock shared (readers),
	// "exclusive" when one holds it exclusively, "" when none holds it.
	Mode string `json:"mode"`
	// Token is the holders' highest fencing token.
	Token uint64 `json:"token"`
	// Queue lists the members requesting the lock, in request order:
	// (Lamport timestamp, node name), the order they are granted in.
	Queue []QueueEntry `json:"queue"`
	// Views is each answering member's own view of the lock, by name
	// (members that have no state for it are left out).
	Views []LockView `json:"views"`
}

// QueueEntry is one member requesting a lock.
type QueueEntry struct {
	Node    string `json:"node"`
	ReqTime uint64 `json:"req_time"`
	Try     bool   `json:"try"`
	// Shared marks a reader's request.
	Shared bool `json:"shared"`
	// Waiting counts the member's local openers waiting for the lock.
	Waiting int `json:"waiting"`
}

// LockView is one member's view of one lock.
type LockView struct {
	Node string `json:"node"`
	// State is "idle", "requesting" or "holding".
	State string `json:"state"`
	// Mode is "exclusive" or "shared" while requesting or holding.
	Mode    string `json:"mode"`
	Token   uint64 `json:"token"`
	ReqTime uint64 `json:"req_time"`
	Try     bool   `json:"try"`
	// Waiting counts local openers waiting (behind the hold, or for the
	// request).
	Waiting int `json:"waiting"`
	// Queued lists the members whose requests this member defers;
	// Awaiting those whose reply its request lacks.
	Queued   []string `json:"queued"`
	Awaiting []string `json:"awaiting"`
}

// serveStatusQueries makes the transport answer other members' status
// queries with this peer's snapshot. Called once, at Start.
func (p *Peer) serveStatusQueries() {
	q, ok := p.tr.(statusQuerier)
	if !ok {
		return
	}
	q.HandleStatus(func(ctx context.Context, from string) (transport.StatusAnswer, error) {
		cs, err := p.coreStatusCtx(ctx)
		if err != nil {
			return transport.StatusAnswer{}, err
		}
		return answerOf(cs), nil
	})
}

// answerOf is the part of a core status a status query answers with.
func answerOf(cs mutex.Status) transport.StatusAnswer {
	a := transport.StatusAnswer{Node: cs.Name, Incarnation: cs.Incarnation, Lamport: cs.Lamport, Locks: cs.Locks}
	if cs.Quorum != nil {
		a.Majority, a.LeaseValid = true, cs.Quorum.Lease
	}
	return a
}

// coreStatusCtx is coreStatus bounded by ctx; a stopped peer answers
// [ErrClosed].
func (p *Peer) coreStatusCtx(ctx context.Context) (mutex.Status, error) {
	if err := ctx.Err(); err != nil {
		// Checked first: select picks at random among ready cases, and
		// the driver may be ready to take the call (CI once saw a
		// cancelled query answered).
		return mutex.Status{}, fmt.Errorf("peer: status: %w", err)
	}
	res := make(chan mutex.Status, 1)
	select {
	case p.calls <- call{kind: callStatus, status: res}:
	case <-p.done:
		return mutex.Status{}, ErrClosed
	case <-ctx.Done():
		return mutex.Status{}, fmt.Errorf("peer: status: %w", ctx.Err())
	}
	select {
	case s := <-res:
		return s, nil
	case <-p.done:
		return mutex.Status{}, ErrClosed
	case <-ctx.Done():
		return mutex.Status{}, fmt.Errorf("peer: status: %w", ctx.Err())
	}
}

// ClusterStatus asks every live member for its view of the locks, waiting
// up to bound (or until ctx ends) for the answers, and merges them with
// this peer's own. A member that does not answer in time is listed with
// Answered false and the reason; the others' answers are shown regardless.
func (p *Peer) ClusterStatus(ctx context.Context, bound time.Duration) ClusterStatus {
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	cs := ClusterStatus{Node: p.name, BoundMS: bound.Milliseconds(), Peers: []PeerAnswer{}, Locks: []ClusterLock{}}

	type member struct {
		name, status string
	}
	members := []member{{p.name, MemberAlive}}
	if p.serf != nil {
		members = members[:0]
		for _, m := range p.serf.Members() {
			members = append(members, member{m.Name, memberStatus(m.Status)})
		}
		if !slices.ContainsFunc(members, func(m member) bool { return m.name == p.name }) {
			members = append(members, member{p.name, MemberAlive})
		}
	}
	q, _ := p.tr.(statusQuerier)
	answers := make([]transport.StatusAnswer, len(members))
	cs.Peers = make([]PeerAnswer, len(members))
	start := time.Now()
	var wg sync.WaitGroup
	for i, m := range members {
		pa := &cs.Peers[i]
		pa.Name, pa.Status = m.name, m.status
		switch {
		case m.name == p.name:
			st, err := p.coreStatusCtx(ctx)
			if err != nil {
				pa.Error = err.Error()
				continue
			}
			answers[i], pa.Answered = answerOf(st), true
			pa.ElapsedMS = time.Since(start).Milliseconds()
		case m.status != MemberAlive:
			pa.Error = "not asked: " + m.status
		case q == nil:
			pa.Error = "not asked: this lock channel has no status queries"
		default:
			wg.Add(1)
			go func() {
				defer wg.Done()
				t0 := time.Now()
				a, err := q.QueryStatus(ctx, m.name)
				pa.ElapsedMS = time.Since(t0).Milliseconds()
				if err != nil {
					if errors.Is(err, context.DeadlineExceeded) {
						pa.Error = fmt.Sprintf("not answering within %v: %v", bound, err)
					} else {
						pa.Error = err.Error()
					}
					return
				}
				answers[i], pa.Answered = a, true
			}()
		}
	}
	wg.Wait()

	cs.Complete = true
	for i := range cs.Peers {
		pa := &cs.Peers[i]
		if pa.Status == MemberAlive && !pa.Answered {
			cs.Complete = false
		}
		if pa.Answered {
			a := answers[i]
			pa.Incarnation, pa.Lamport, pa.LeaseValid, pa.Truncated = a.Incarnation, a.Lamport, a.LeaseValid, a.Truncated
			if pa.Truncated {
				cs.Complete = false
			}
		}
	}
	cs.Locks = mergeLocks(cs.Peers, answers)
	slices.SortFunc(cs.Peers, func(a, b PeerAnswer) int { return strings.Compare(a.Name, b.Name) })
	return cs
}

// mergeLocks merges the members' answers (answers[i] is peers[i]'s) into
// one entry per lock.
func mergeLocks(peers []PeerAnswer, answers []transport.StatusAnswer) []ClusterLock {
	byName := map[string]*ClusterLock{}
	for i, pa := range peers {
		if !pa.Answered {
			continue
		}
		for _, l := range answers[i].Locks {
			cl := byName[l.Name]
			if cl == nil {
				cl = &ClusterLock{Name: l.Name, Holders: []string{}, Queue: []QueueEntry{}, Views: []LockView{}}
				byName[l.Name] = cl
			}
			mode := ""
			switch {
			case l.Phase == mutex.Idle:
			case l.Shared:
				mode = ModeShared
			default:
				mode = ModeExclusive
			}
			cl.Views = append(cl.Views, LockView{
				Node: pa.Name, State: l.Phase.String(), Mode: mode, Token: l.Token, ReqTime: l.ReqTime, Try: l.Try,
				Waiting: l.Waiting, Queued: nonNil(l.Queued), Awaiting: nonNil(l.Awaiting),
			})
			switch l.Phase {
			case mutex.Holding:
				cl.Holders = append(cl.Holders, pa.Name)
				if cl.Token < l.Token {
					cl.Token = l.Token
				}
				if cl.Mode != ModeExclusive {
					cl.Mode = mode
				}
			case mutex.Requesting:
				cl.Queue = append(cl.Queue, QueueEntry{Node: pa.Name, ReqTime: l.ReqTime, Try: l.Try, Shared: l.Shared,
					Waiting: l.Waiting})
			}
		}
	}
	out := make([]ClusterLock, 0, len(byName))
	for _, cl := range byName {
		slices.Sort(cl.Holders)
		if len(cl.Holders) > 0 {
			cl.Holder = cl.Holders[0]
		}
		slices.SortFunc(cl.Queue, func(a, b QueueEntry) int {
			return cmp.Or(cmp.Compare(a.ReqTime, b.ReqTime), strings.Compare(a.Node, b.Node))
		})
		slices.SortFunc(cl.Views, func(a, b LockView) int { return strings.Compare(a.Node, b.Node) })
		out = append(out, *cl)
	}
	slices.SortFunc(out, func(a, b ClusterLock) int { return strings.Compare(a.Name, b.Name) })
	return out
}
