//go:build dlockfs_faults

package peer

import (
	"errors"
	"io/fs"
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

// FaultUntilEnv names a file that bounds the fault in time: with
// DLOCKFS_FAULT_UNTIL=PATH the peer misbehaves only while PATH exists, and
// behaves from the moment it is removed (the tests remove it to see a mute
// peer answer again and rejoin). Whoever performs the core's outputs
// (under the core's mutex) looks, once per batch of them (a stat), so a
// batch is either withheld or sent whole: no signal handler is involved.
// Unset, the fault lasts for the peer's life. A release build has no such switch either.
const FaultUntilEnv = "DLOCKFS_FAULT_UNTIL"

// faultsBuild reports whether this build has the switch (for the tests).
const faultsBuild = true

// faultOn reports whether the fault applies now (see FaultUntilEnv).
func faultOn() bool {
	path := os.Getenv(FaultUntilEnv)
	if path == "" {
		return true
	}
	_, err := os.Stat(path)
	return !errors.Is(err, fs.ErrNotExist)
}

// misbehave drops what a misbehaving peer withholds.
func (p *Peer) misbehave(ms []mutex.Message) []mutex.Message {
	fault := os.Getenv(FaultEnv)
	if fault == "" || !faultOn() {
		return ms
	}
	switch fault {
	case "mute":
	case "stamplow", "stamphigh":
		for i := range ms {
			m := &ms[i]
			switch {
			case fault == "stamphigh":
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
