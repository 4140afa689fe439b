package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dlockfs/dlockfs/mutex"
)

// maxBatch bounds the messages written between two flushes (and under one
// write deadline).
const maxBatch = 1024

var (
	errBroken   = errors.New("connection closed by peer")
	errRetarget = errors.New("peer re-targeted")
)

// peer is the outgoing side towards one peer: a send queue and the
// goroutine (runPeer) that keeps a connection to the peer and drains the
// queue into it.
type peer struct {
	name   string
	q      chan mutex.Message
	kick   chan struct{} // retarget: drop the connection and redial now
	ctx    context.Context
	cancel context.CancelFunc

	enqueued atomic.Uint64 // messages given to Send for this peer
	settled  atomic.Uint64 // of those: written, lost or dropped

	mu   sync.Mutex
	inc  uint64
	addr string
	conn net.Conn // the established connection, if any (for tests)
}

func newPeer(parent context.Context, name string, inc uint64, addr string, queueLen int) *peer {
	ctx, cancel := context.WithCancel(parent)
	return &peer{
		name: name, inc: inc, addr: addr,
		q:    make(chan mutex.Message, queueLen),
		kick: make(chan struct{}, 1),
		ctx:  ctx, cancel: cancel,
	}
}

// retarget records a new address or incarnation and reports whether
// anything changed (then the connection is redialled).
func (p *peer) retarget(inc uint64, addr string) bool {
	p.mu.Lock()
	changed := p.inc != inc || p.addr != addr
	p.inc, p.addr = inc, addr
	p.mu.Unlock()
	if changed {
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
	return changed
}

func (p *peer) target() (uint64, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inc, p.addr
}

func (p *peer) setConn(c net.Conn) {
	p.mu.Lock()
	p.conn = c
	p.mu.Unlock()
}

// backoff returns the wait before redial number n (n >= 1): doubling from
// MinBackoff up to MaxBackoff, with the upper half jittered.
func (t *Transport) backoff(n int) time.Duration {
	d := t.cfg.MinBackoff
	for i := 1; i < n && d < t.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, t.cfg.MaxBackoff)
	if half := d / 2; half > 0 {
		d = half + rand.N(half+1)
	}
	return d
}

// runPeer keeps a connection to p until p is removed or the transport
// closes: dial, handshake, announce on Connected, write the queue; on any
// failure wait a bounded backoff and start again.
func (t *Transport) runPeer(p *peer) {
	defer t.wg.Done()
	failures := 0 // consecutive failed attempts, for the backoff and the log
	for {
		if failures > 0 {
			timer := time.NewTimer(t.backoff(failures))
			select {
			case <-timer.C:
			case <-p.kick:
				timer.Stop()
			case <-p.ctx.Done():
				timer.Stop()
				return
			}
		}
		if p.ctx.Err() != nil {
			return
		}
		established, err := t.connectAndServe(p, failures)
		switch {
		case p.ctx.Err() != nil:
			return
		case errors.Is(err, errRetarget):
			failures = 0
		case !established.IsZero() && time.Since(established) >= t.cfg.MaxBackoff:
			failures = 1 // a connection that lasted: redial soon
		default:
			failures++ // failed, or lost at once: back off further
		}
	}
}

// connectAndServe runs one connection to p and returns when its handshake
// completed (zero if it did not). Failures are logged at a higher level
// on the first of a streak (and every 30th), at Debug otherwise.
func (t *Transport) connectAndServe(p *peer, failures int) (time.Time, error) {
	inc, addr := p.target()
	loud := failures%30 == 0
	t.st.dials.Add(1)
	d := net.Dialer{Timeout: t.cfg.DialTimeout}
	conn, err := d.DialContext(p.ctx, "tcp", addr)
	if err != nil {
		t.st.dialFailures.Add(1)
		level := slog.LevelDebug
		if loud {
			level = slog.LevelInfo
		}
		t.log.Log(p.ctx, level, "transport: dial failed", "peer", p.name, "addr", addr, "err", err)
		return time.Time{}, err
	}
	defer conn.Close()
	stop := context.AfterFunc(p.ctx, func() { conn.Close() })
	defer stop()

	br := bufio.NewReaderSize(conn, 512)
	bw := bufio.NewWriterSize(conn, 32<<10)
	send, err := t.clientHandshake(conn, br, bw, p.name)
	if err != nil && !errors.Is(err, errHandshake) {
		err = fmt.Errorf("%w: %w", errHandshake, err)
	}
	if err != nil {
		if p.ctx.Err() == nil {
			t.st.handshakeFailures.Add(1)
			level := slog.LevelDebug
			if loud {
				level = slog.LevelWarn
			}
			t.log.Log(p.ctx, level, "transport: handshake with peer failed", "peer", p.name, "incarnation", inc, "remote", addr, "err", err)
		}
		return time.Time{}, err
	}
	established := time.Now()
	t.st.connects.Add(1)
	t.st.outboundConns.Add(1)
	defer t.st.outboundConns.Add(-1)
	p.setConn(conn)
	defer p.setConn(nil)
	t.log.Debug("transport: connected", "peer", p.name, "remote", addr)

	// The server sends nothing after its welcome: a read returning means
	// the connection is gone (or the peer misbehaves).
	broken := make(chan struct{})
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		defer close(broken)
		var b [1]byte
		_, _ = br.Read(b[:])
	}()
	defer func() { conn.Close(); <-broken }()

	select {
	case t.connected <- p.name:
	case <-p.ctx.Done():
		return established, p.ctx.Err()
	}
	err = t.writeLoop(p, conn, bw, send, broken)
	if p.ctx.Err() == nil {
		t.st.disconnects.Add(1)
		t.log.Info("transport: connection to peer lost", "peer", p.name, "remote", addr, "err", err)
	}
	return established, err
}

// writeLoop drains p's queue into the connection, flushing whenever the
// queue is empty (or after maxBatch messages).
func (t *Transport) writeLoop(p *peer, conn net.Conn, bw *bufio.Writer, send *frameCipher, broken <-chan struct{}) error {
	scratch := make([]byte, 0, headerLen+maxPayload+send.overhead())
	for {
		var m mutex.Message
		select {
		case m = <-p.q:
		case <-broken:
			return errBroken
		case <-p.kick:
			return errRetarget
		case <-p.ctx.Done():
			return p.ctx.Err()
		}
		if err := conn.SetWriteDeadline(time.Now().Add(t.cfg.WriteTimeout)); err != nil {
			t.st.droppedUnsent.Add(1)
			p.settled.Add(1)
			t.notifyProgress()
			return fmt.Errorf("transport: set write deadline: %w", err)
		}
		n, bytes := 1, 0
		w, err := writeMessage(bw, scratch, send, m)
		bytes += w
	batch:
		for err == nil && n < maxBatch {
			select {
			case m = <-p.q:
				n++
				w, err = writeMessage(bw, scratch, send, m)
				bytes += w
			default:
				break batch
			}
		}
		if err == nil {
			err = bw.Flush()
		}
		// Count before settling, so that a Flush that returns sees them.
		if err != nil {
			t.st.droppedUnsent.Add(uint64(n))
		} else {
			t.st.framesSent.Add(uint64(n))
			t.st.bytesSent.Add(uint64(bytes))
		}
		p.settled.Add(uint64(n))
		t.notifyProgress()
		if err != nil {
			return fmt.Errorf("transport: write: %w", err)
		}
	}
}

// writeMessage frames, seals and buffers one message, encoding straight
// into the bufio buffer when it has room.
func writeMessage(bw *bufio.Writer, scratch []byte, send *frameCipher, m mutex.Message) (int, error) {
	buf := bw.AvailableBuffer()
	if cap(buf) < cap(scratch) {
		buf = scratch[:0]
	}
	buf = append(buf, 0, 0, 0, 0)
	buf, err := appendMessage(buf, m)
	if err != nil {
		return 0, err
	}
	frame := send.seal(buf)
	return bw.Write(frame)
}

// clientHandshake opens a connection to the peer named want: exchange
// preambles, send our hello, check the peer's welcome. It returns the
// cipher for the frames we send.
func (t *Transport) clientHandshake(conn net.Conn, br *bufio.Reader, bw *bufio.Writer, want string) (*frameCipher, error) {
	if err := conn.SetDeadline(time.Now().Add(t.cfg.HandshakeTimeout)); err != nil {
		return nil, fmt.Errorf("transport: set deadline: %w", err)
	}
	mine, err := newPreamble(t.mode)
	if err != nil {
		return nil, err
	}
	if _, err := bw.Write(mine.append(nil)); err != nil {
		return nil, err
	}
	if err := bw.Flush(); err != nil {
		return nil, err
	}
	var pb [preambleLen]byte
	if _, err := io.ReadFull(br, pb[:]); err != nil {
		return nil, fmt.Errorf("%w: read preamble: %w", errHandshake, err)
	}
	theirs, err := parsePreamble(pb[:])
	if err != nil {
		return nil, err
	}
	if theirs.mode != t.mode {
		return nil, fmt.Errorf("%w: peer uses %s, we use %s (cluster key mismatch)", errHandshake, modeName(theirs.mode), modeName(t.mode))
	}
	var sk []byte
	if t.mode == modeAESGCM {
		sk = sessionKey(t.cfg.Key, theirs.nonce, mine.nonce)
	}
	send, err := newFrameCipher(sk, dirClientToServer)
	if err != nil {
		return nil, err
	}
	recv, err := newFrameCipher(sk, dirServerToClient)
	if err != nil {
		return nil, err
	}
	buf := appendHello([]byte{0, 0, 0, 0}, kindHello, hello{Name: t.cfg.Name, Incarnation: t.cfg.Incarnation, ToName: want})
	if _, err := bw.Write(send.seal(buf)); err != nil {
		return nil, err
	}
	if err := bw.Flush(); err != nil {
		return nil, err
	}
	fr := frameReader{conn: conn, br: br, c: recv, max: t.cfg.MaxFrameSize}
	payload, err := fr.read(true)
	if err != nil {
		return nil, fmt.Errorf("%w: read welcome: %w", errHandshake, err)
	}
	w, err := decodeHello(payload, kindWelcome)
	if err != nil {
		return nil, fmt.Errorf("%w: welcome: %w", errHandshake, err)
	}
	if w.Name != want {
		return nil, fmt.Errorf("%w: dialled peer %q but %q answered", errHandshake, want, w.Name)
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("transport: clear deadline: %w", err)
	}
	return send, nil
}
