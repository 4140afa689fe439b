package peer

import (
	"io"
	"sync/atomic"
	"testing"

	"github.com/dlockfs/dlockfs/mutex/testutil"
)

// proxy forwards TCP connections to a target, and can swallow what clients
// send (a connection that breaks with messages in flight) and cut every
// connection.
type proxy struct {
	*testutil.Proxy
	// swallow makes established connections discard what clients send.
	swallow atomic.Bool
	// swallowed counts the bytes discarded.
	swallowed atomic.Int64
}

// newProxy listens on a free 127.0.0.1 port and forwards to target.
func newProxy(t testing.TB, target string) *proxy {
	p := &proxy{}
	p.Proxy = testutil.NewProxy(t, target, func(_ int, c io.Reader, s io.Writer) {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				if p.swallow.Load() {
					p.swallowed.Add(int64(n))
				} else if _, werr := s.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	})
	return p
}
