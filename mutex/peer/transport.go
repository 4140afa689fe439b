package peer

import (
	"context"

	"github.com/dlockfs/dlockfs/mutex"
	"github.com/dlockfs/dlockfs/mutex/transport"
)

// lockTransport is what the driver needs from the lock channel. The real
// one is *transport.Transport; tests run the driver on an in-memory one.
type lockTransport interface {
	Addr() string
	AddPeer(name string, inc uint64, addr string)
	RemovePeer(name string)
	Send(m mutex.Message)
	Incoming() <-chan incoming
	Connected() <-chan string
	Flush(ctx context.Context) error
	Stats() transportStats
	PeerStates() []peerState
	Close() error
}

// incoming is one message received on the lock channel and the remote
// address it came from.
type incoming = transport.Incoming

// transportStats is the transport's counters, served in Status.
type transportStats = transport.Stats

// peerState is the transport's state towards one peer.
type peerState = transport.PeerState

// transportConfig is what Start tells the transport.
type transportConfig = transport.Config

// listenTCP opens the real lock channel.
func listenTCP(cfg transportConfig) (lockTransport, error) {
	return transport.Listen(cfg)
}

var _ lockTransport = (*transport.Transport)(nil)
