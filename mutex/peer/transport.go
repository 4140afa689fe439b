package peer

import (
	"context"
	"errors"
	"log/slog"

	"github.com/dlockfs/dlockfs/mutex"
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
	Close() error
}

// incoming is one message received on the lock channel and the remote
// address it came from.
// TODO(peer): = transport.Incoming once mutex/transport lands.
type incoming = struct {
	Msg    mutex.Message
	Remote string
}

// transportStats is the transport's counters, served in Status.
// TODO(peer): = transport.Stats once mutex/transport lands.
type transportStats = map[string]uint64

// transportConfig is what Start tells the transport.
type transportConfig struct {
	Name          string
	Incarnation   uint64
	ListenAddr    string
	AdvertiseAddr string
	Key           []byte
	Logger        *slog.Logger
}

// listenTCP opens the real lock channel.
func listenTCP(cfg transportConfig) (lockTransport, error) {
	return nil, errors.New("peer: mutex/transport is not available yet")
}
