//go:build dlockfs_faults

package peer

import (
	"os"

	"github.com/dlockfs/dlockfs/mutex"
)

// FaultEnv names the environment variable that makes a peer misbehave in a
// binary built with the dlockfs_faults tag (tests only; a release build
// has no such switch). DLOCKFS_FAULT=mute: the peer never answers a request
// (no reply, busy or deferral, and no acknowledgement of a probe), and
// otherwise follows the protocol; stamplow: it stamps its requests with the
// clock it has seen from the receiver; stamphigh: it stamps every message
// 2^40 ahead.
const FaultEnv = "DLOCKFS_FAULT"

// misbehave drops what a misbehaving peer withholds.
func (p *Peer) misbehave(ms []mutex.Message) []mutex.Message {
	switch os.Getenv(FaultEnv) {
	case "mute":
	case "stamplow", "stamphigh":
		for i := range ms {
			m := &ms[i]
			switch {
			case os.Getenv(FaultEnv) == "stamphigh":
				m.Time += 1 << 40
				if m.Type == mutex.MsgRequest {
					m.ReqTime += 1 << 40
				}
			case m.Type == mutex.MsgRequest && m.Seen > 0:
				m.ReqTime = m.Seen
			}
		}
		return ms
	default:
		return ms
	}
	out := ms[:0]
	for _, m := range ms {
		switch {
		case m.Type == mutex.MsgReply, m.Type == mutex.MsgBusy, m.Type == mutex.MsgDeferred,
			m.Type == mutex.MsgProbe && m.Try:
			continue
		}
		out = append(out, m)
	}
	return out
}
