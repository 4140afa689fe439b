package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/dlockfs/dlockfs/mutex"
)

// Defaults for the zero fields of a [Config].
const (
	DefaultMaxFrameSize     = 32768                 // bytes of frame body: a full voter set fits
	DefaultQueueLen         = 4096                  // messages per peer
	DefaultIncomingLen      = 1024                  // messages
	DefaultMaxConns         = 1024                  // inbound connections
	DefaultHandshakeTimeout = 5 * time.Second       // whole handshake
	DefaultReadTimeout      = 10 * time.Second      // one frame, first byte to last
	DefaultWriteTimeout     = 10 * time.Second      // one batch of writes
	DefaultDialTimeout      = 5 * time.Second       // one dial
	DefaultMinBackoff       = 50 * time.Millisecond // first redial wait
	DefaultMaxBackoff       = 2 * time.Second       // longest redial wait
	DefaultMaxFrameRate     = 50000                 // frames/s per inbound connection
	DefaultKeyCheckInterval = time.Second           // look for connections on removed keys
)

// minFrameSize is the smallest MaxFrameSize accepted: the largest message
// (four 255-byte names, nine varints and a full voter set) sealed, with
// room to spare.
const minFrameSize = maxPayload + 64

// Config configures a [Transport]. Zero limits and timeouts take the
// Default values above.
type Config struct {
	// Name and Incarnation say who we are; they are sent in the handshake
	// and every outgoing message must carry them as From/FromIncarnation.
	Name        string
	Incarnation uint64
	// ListenAddr is the TCP address to accept peers on, e.g. "127.0.0.1:0"
	// or "0.0.0.0:7947".
	ListenAddr string
	// AdvertiseAddr, if set, is what [Transport.Addr] reports (needed when
	// ListenAddr is a wildcard address).
	AdvertiseAddr string
	// Key is the cluster key: nil for a plaintext channel, else 16, 24 or
	// 32 bytes selecting AES-128/192/256-GCM. At most one of Key and
	// Keyring may be set.
	Key []byte
	// Keyring, instead of Key, makes the keys changeable while the
	// transport runs (key rotation): a handshake is accepted with any key
	// it holds, new connections are dialled with its primary key, and
	// established connections keep their session keys until the key they
	// were made with is removed (see [Transport.CheckKeys]). Typically
	// Serf's *memberlist.Keyring. Every key must be 16, 24 or 32 bytes.
	Keyring Keyring
	// KeyCheckInterval is how often, with a Keyring, the transport looks
	// for connections made with a key since removed, and closes them.
	KeyCheckInterval time.Duration
	// Logger receives the transport's logs; nil discards them.
	Logger *slog.Logger

	// MaxFrameSize is the largest frame body accepted or sent, in bytes.
	MaxFrameSize int
	// QueueLen bounds the messages queued for one peer while its
	// connection is (re)established or busy; a message sent to a full
	// queue is dropped and counted.
	QueueLen int
	// IncomingLen is the buffer of the Incoming channel. When it is full,
	// readers stop reading (TCP back-pressure) until it drains.
	IncomingLen int
	// Deliver, if set, receives every lock message instead of Incoming
	// (which then stays empty): called on the goroutine that read the
	// message, one connection's messages in order, with a context that
	// ends when the transport closes. The reader reads nothing more on
	// that connection until Deliver returns (back-pressure, as a full
	// Incoming). A lock round then costs no hand-off between goroutines
	// on the receiving side.
	Deliver func(ctx context.Context, in Incoming)
	// MaxConns bounds the inbound connections open at once; one more is
	// closed on accept and counted.
	MaxConns int
	// HandshakeTimeout bounds the whole handshake, in both directions.
	HandshakeTimeout time.Duration
	// ReadTimeout bounds the time from a frame's first byte to its last.
	// An idle connection (between frames) has no deadline.
	ReadTimeout time.Duration
	// WriteTimeout bounds each batch of writes to a peer, so that a peer
	// that stops reading cannot wedge us: the connection is dropped and
	// redialled.
	WriteTimeout time.Duration
	// DialTimeout bounds one TCP dial.
	DialTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between redials of a peer
	// (doubling, with jitter).
	MinBackoff, MaxBackoff time.Duration
	// MaxFrameRate is the most frames per second one inbound connection
	// may sustain (with a burst of one second's worth); a connection over
	// it is closed as a flood. Negative disables the limit.
	MaxFrameRate float64
}

func (c Config) withDefaults() Config {
	if c.MaxFrameSize == 0 {
		c.MaxFrameSize = DefaultMaxFrameSize
	}
	if c.QueueLen == 0 {
		c.QueueLen = DefaultQueueLen
	}
	if c.IncomingLen == 0 {
		c.IncomingLen = DefaultIncomingLen
	}
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = DefaultReadTimeout
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = c.MinBackoff
	}
	if c.MaxFrameRate == 0 {
		c.MaxFrameRate = DefaultMaxFrameRate
	}
	if c.KeyCheckInterval == 0 {
		c.KeyCheckInterval = DefaultKeyCheckInterval
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports the first problem with the configuration.
func (c Config) Validate() error {
	switch {
	case mutex.ValidNodeName(c.Name) != nil:
		return fmt.Errorf("transport: config: Name: %w", mutex.ValidNodeName(c.Name))
	case c.ListenAddr == "":
		return errors.New("transport: config: ListenAddr is empty")
	case c.Key != nil && CheckKey(c.Key) != nil:
		return fmt.Errorf("transport: config: Key: %w", CheckKey(c.Key))
	case c.Key != nil && c.Keyring != nil:
		return errors.New("transport: config: set Key or Keyring, not both")
	case c.Keyring != nil && CheckKey(c.Keyring.GetPrimaryKey()) != nil:
		return fmt.Errorf("transport: config: Keyring's primary key: %w", CheckKey(c.Keyring.GetPrimaryKey()))
	case c.KeyCheckInterval < 0:
		return errors.New("transport: config: KeyCheckInterval must not be negative")
	case c.MaxFrameSize != 0 && c.MaxFrameSize < minFrameSize:
		return fmt.Errorf("transport: config: MaxFrameSize %d is below %d", c.MaxFrameSize, minFrameSize)
	case c.QueueLen < 0, c.IncomingLen < 0, c.MaxConns < 0:
		return errors.New("transport: config: QueueLen, IncomingLen and MaxConns must not be negative")
	case c.HandshakeTimeout < 0, c.ReadTimeout < 0, c.WriteTimeout < 0, c.DialTimeout < 0,
		c.MinBackoff < 0, c.MaxBackoff < 0:
		return errors.New("transport: config: timeouts and backoffs must not be negative")
	}
	return nil
}
