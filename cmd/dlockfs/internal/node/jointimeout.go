package node

import (
	"context"
	"fmt"
	"time"
)

// --join-timeout 0 means one attempt, as 0 means "do not wait" for every
// other timeout: each --join address is tried once (bounded by Serf's TCP
// timeout) and mount exits 11 at once if none answers. The admission as a
// voter that follows a successful join (majority mode) is then bounded by
// admitTimeout. For no bound at all, give a long duration (8760h).

// admitTimeout bounds the admission as a voter after a one-attempt join.
const admitTimeout = time.Minute

// joinAttempts is peer.Config.JoinAttempts for a mount: 1 with
// --join-timeout 0, else 0 (retry until the timeout).
func joinAttempts(m mountConfig) int {
	if m.joinTimeout == 0 {
		return 1
	}
	return 0
}

// joinContext bounds the start of the peer: --join-timeout, or
// admitTimeout with --join-timeout 0; it says how, for the error message.
func joinContext(parent context.Context, m mountConfig) (context.Context, context.CancelFunc, string) {
	if len(m.join) == 0 {
		return parent, func() {}, ""
	}
	if m.joinTimeout == 0 {
		ctx, cancel := context.WithTimeout(parent, admitTimeout)
		return ctx, cancel, fmt.Sprintf("within %v (--join-timeout 0: one attempt, then up to %v to be admitted as a voter)", admitTimeout, admitTimeout)
	}
	ctx, cancel := context.WithTimeout(parent, m.joinTimeout)
	return ctx, cancel, fmt.Sprintf("within --join-timeout %v", m.joinTimeout)
}
