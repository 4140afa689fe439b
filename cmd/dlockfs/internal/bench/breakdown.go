package bench

import (
	"sort"

	"github.com/dlockfs/dlockfs/cmd/dlockfs/internal/localcluster"
)

// Breakdown splits one row's open+close into where the time went, from
// the child's times (OpTimes) and the mounts' Lock and Unlock calls
// (localcluster.LockTimes) in the same run, on the same (wall) clock:
//
//	FUSEOpen     open(2) called .. the file system calls Peer.Lock
//	             (kernel, go-fuse's reader, LOOKUP if any, the Open method)
//	WaitRelease  Peer.Lock called .. the previous hold's Unlock (the
//	             kernel's asynchronous RELEASE of the last close reached
//	             its mount), 0 if it came first
//	LockRound    the later of the two .. Peer.Lock returned (driver, core,
//	             the lock channel's round, the grant's hand-back)
//	Reply        Peer.Lock returned .. open(2) returned (the file
//	             system's bookkeeping, go-fuse's reply, the kernel waking
//	             the opener)
//	Close        close(2) (FOPEN_NOFLUSH: the RELEASE goes asynchronously)
//
// Per operation the five add up to the row's open+close; their p50s need
// not, their means do. ReleaseLag (close(2) returned .. its Unlock) is how
// late the RELEASE arrives: positive lag is what WaitRelease waits for.
type Breakdown struct {
	Ops         int          `json:"ops"`
	FUSEOpen    LatencyStats `json:"fuse_open"`
	WaitRelease LatencyStats `json:"wait_release"`
	LockRound   LatencyStats `json:"lock_round"`
	Reply       LatencyStats `json:"reply"`
	Close       LatencyStats `json:"close"`
	ReleaseLag  LatencyStats `json:"release_lag"`
	// Unmatched counts the child's operations without a granted Lock
	// inside them (not in the figures; 0 unless something else opened
	// the lock during the run).
	Unmatched int `json:"unmatched,omitempty"`
}

// breakdown computes a Breakdown. ops are one client's operations, in
// order; locks and unlocks the mounts' calls during them. With one client
// the holds follow each other: the previous hold's Unlock is the last one
// before a grant returns, its own the first one after.
func breakdown(ops []OpTimes, locks []localcluster.LockEvent, unlocks []localcluster.UnlockEvent) Breakdown {
	var granted []localcluster.LockEvent
	for _, l := range locks {
		if l.OK {
			granted = append(granted, l)
		}
	}
	sort.Slice(granted, func(i, j int) bool { return granted[i].Called < granted[j].Called })
	at := make([]int64, len(unlocks))
	for i, u := range unlocks {
		at[i] = u.At
	}
	sort.Slice(at, func(i, j int) bool { return at[i] < at[j] })
	var fuseOpen, wait, round, reply, closeNs, lag []int64
	b := Breakdown{}
	k := 0 // next granted Lock
	for _, op := range ops {
		for k < len(granted) && granted[k].Called < op[0] {
			k++
		}
		if k >= len(granted) || granted[k].Returned > op[1] {
			b.Unmatched++
			continue
		}
		l := granted[k]
		k++
		// at[u-1] is the last Unlock before the grant, at[u] the first after.
		u := sort.Search(len(at), func(i int) bool { return at[i] > l.Returned })
		start := l.Called
		if u > 0 && at[u-1] > start {
			start = at[u-1]
		}
		fuseOpen = append(fuseOpen, l.Called-op[0])
		wait = append(wait, start-l.Called)
		round = append(round, l.Returned-start)
		reply = append(reply, op[1]-l.Returned)
		closeNs = append(closeNs, op[2]-op[1])
		if u < len(at) {
			lag = append(lag, at[u]-op[2])
		}
	}
	b.Ops = len(fuseOpen)
	b.FUSEOpen = summarize(fuseOpen, 0)
	b.WaitRelease = summarize(wait, 0)
	b.LockRound = summarize(round, 0)
	b.Reply = summarize(reply, 0)
	b.Close = summarize(closeNs, 0)
	b.ReleaseLag = summarize(lag, 0)
	return b
}
