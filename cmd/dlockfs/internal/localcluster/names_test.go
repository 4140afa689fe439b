package localcluster

import "testing"

// TestPeerName: a..z, then p26 up to MaxPeers, all distinct.
func TestPeerName(t *testing.T) {
	seen := map[string]bool{}
	for i := range MaxPeers {
		n := peerName(i)
		if seen[n] {
			t.Fatalf("peer %d: name %q used twice", i, n)
		}
		seen[n] = true
	}
	for i, want := range map[int]string{0: "a", 25: "z", 26: "p26", MaxPeers - 1: "p31"} {
		if got := peerName(i); got != want {
			t.Errorf("peerName(%d) = %q, want %q", i, got, want)
		}
	}
}
