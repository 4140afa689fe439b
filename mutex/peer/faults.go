package peer

import (
	"time"

	"github.com/dlockfs/dlockfs/mutex"
)

// forgedLogEvery rate-limits the warning about a member's forgeries (each
// is counted in the status's dropped_by "forged" all the same).
const forgedLogEvery = 10 * time.Second

// logFaults logs what the core found out about misbehaving members (issue
// 14), and this peer's own eviction.
func (p *Peer) logFaults(rs []mutex.FaultReport) {
	for _, r := range rs {
		switch r.Kind {
		case mutex.FaultSuspect:
			if r.Lock == "" {
				p.log.Warn("member suspected of refusing to answer: it left a probe unanswered "+
					"(another voter reported it)", "member", r.Peer, "for", r.For)
				continue
			}
			p.log.Warn("member suspected of refusing to answer: it owes an answer to our request "+
				"(in majority mode a majority of the voters suspecting it evicts it)",
				"member", r.Peer, "lock", r.Lock, "request", r.ReqTime, "for", r.For)
		case mutex.FaultAnswered:
			p.log.Info("suspected member answers again", "member", r.Peer)
		case mutex.FaultSuspectedBy:
			p.log.Warn("a member suspects this peer of not answering its request; answering again",
				"member", r.Peer, "lock", r.Lock, "request", r.ReqTime)
		case mutex.FaultForged:
			if t, ok := p.forgedLog[r.Peer]; ok && time.Since(t) < forgedLogEvery {
				continue
			}
			if p.forgedLog == nil {
				p.forgedLog = map[string]time.Time{}
			}
			p.forgedLog[r.Peer] = time.Now()
			p.log.Warn("message with a forged timestamp dropped; its sender is suspected of misbehaving",
				"member", r.Peer, "lock", r.Lock, "request", r.ReqTime, "why", r.Why)
		case mutex.FaultEvictedSelf:
			p.log.Error("this peer was declared evicted (silent, or suspected of refusing to answer): "+
				"its holds are revoked when its lease lapses, and it starts a new session",
				"declared_by", r.Peer, "session", r.ReqTime)
		}
	}
}
