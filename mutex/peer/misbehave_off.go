//go:build !dlockfs_faults

package peer

import "github.com/dlockfs/dlockfs/mutex"

// misbehave is the identity in a release build: the test-only switch of
// misbehave_on.go does not exist.
func (p *Peer) misbehave(ms []mutex.Message) []mutex.Message { return ms }

// faultsBuild reports whether this build has the switch (for the tests).
const faultsBuild = false
