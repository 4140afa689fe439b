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
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
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
	q      msgQueue
	kick   chan struct{} // retarget: drop the connection and redial now
	rekey  chan struct{} // the primary key changed: switch to it in band (rekey.go)
	ctx    context.Context
	cancel context.CancelFunc

	enqueued atomic.Uint64 // messages given to Send for this peer
	settled  atomic.Uint64 // of those: written, lost or dropped
	streak   atomic.Int64  // consecutive failed connection attempts

	// warnedAt is the streak at the last "unreachable" warning (0: none,
	// or the streak ended). Owned by runPeer.
	warnedAt int64

	// wmu is held by whoever writes to the connection: writeLoop, or a
	// Send writing directly (sendDirect). w is its writer, nil without a
	// connection.
	wmu sync.Mutex
	w   *connWriter

	mu      sync.Mutex
	inc     uint64
	addr    string
	conn    net.Conn // the established connection, if any
	connKey []byte   // the cluster key conn was made with
}

func newPeer(parent context.Context, name string, inc uint64, addr string, queueLen int) *peer {
	ctx, cancel := context.WithCancel(parent)
	return &peer{
		name: name, inc: inc, addr: addr,
		q:     msgQueue{max: queueLen, ready: make(chan struct{}, 1)},
		kick:  make(chan struct{}, 1),
		rekey: make(chan struct{}, 1),
		ctx:   ctx, cancel: cancel,
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
		p.streak.Store(0) // a new target: a new streak of attempts
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

func (p *peer) setConn(c net.Conn, key []byte) {
	p.mu.Lock()
	p.conn, p.connKey = c, key
	p.mu.Unlock()
}

// msgQueue is a peer's send queue: first in, first out, at most max
// messages, its storage grown as messages wait and let go once they are
// all written (a channel of max messages would hold max*sizeof(Message)
// for each peer, busy or not). ready holds a token while messages wait.
type msgQueue struct {
	mu    sync.Mutex
	buf   []mutex.Message // buf[head:] wait
	head  int
	max   int
	ready chan struct{} // capacity 1
}

// queueKeep is the capacity a drained queue keeps; more is let go.
const queueKeep = 64

// push appends m, unless max messages wait already.
func (q *msgQueue) push(m mutex.Message) bool {
	q.mu.Lock()
	if len(q.buf)-q.head >= q.max {
		q.mu.Unlock()
		return false
	}
	if len(q.buf) == cap(q.buf) && q.head > 0 {
		// Reuse the room of those taken before growing.
		n := copy(q.buf, q.buf[q.head:])
		clear(q.buf[n:])
		q.buf, q.head = q.buf[:n], 0
	}
	q.buf = append(q.buf, m)
	q.mu.Unlock()
	q.signal()
	return true
}

// pop takes the oldest message, if any.
func (q *msgQueue) pop() (mutex.Message, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.head == len(q.buf) {
		return mutex.Message{}, false
	}
	m := q.buf[q.head]
	q.buf[q.head] = mutex.Message{}
	q.head++
	if q.head == len(q.buf) {
		if cap(q.buf) > queueKeep {
			q.buf = nil
		} else {
			q.buf = q.buf[:0]
		}
		q.head = 0
	}
	return m, true
}

// signal makes sure ready holds a token.
func (q *msgQueue) signal() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// len is the number of messages waiting.
func (q *msgQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.buf) - q.head
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
	failures := 0 // consecutive failed attempts, for the backoff
	// short: the last established connection was lost before it had
	// lasted MaxBackoff and was redialled at once. One such loss is
	// redialled at once (a peer closing a connection on a removed key,
	// or restarting); another in a row backs off.
	short := false
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
		established, err := t.connectAndServe(p)
		switch {
		case p.ctx.Err() != nil:
			return
		case errors.Is(err, errRetarget):
			failures = 0
		case !established.IsZero() && time.Since(established) >= t.cfg.MaxBackoff:
			failures, short = 0, false // a connection that lasted: redial at once
		case !established.IsZero() && !short:
			failures, short = 0, true // lost soon, the first time: redial at once
		default:
			failures++ // failed, or lost at once: back off further
		}
	}
}

// connectAndServe runs one connection to p and returns when its handshake
// completed (zero if it did not). A failed attempt is logged by
// attemptFailed.
func (t *Transport) connectAndServe(p *peer) (time.Time, error) {
	inc, addr := p.target()
	t.st.dials.Add(1)
	d := net.Dialer{Timeout: t.cfg.DialTimeout}
	conn, err := d.DialContext(p.ctx, "tcp", addr)
	if err != nil {
		t.st.dialFailures.Add(1)
		t.attemptFailed(p, false, inc, addr, err)
		return time.Time{}, err
	}
	defer conn.Close()
	stop := context.AfterFunc(p.ctx, func() { conn.Close() })
	defer stop()

	br := bufio.NewReaderSize(conn, 512)
	bw := bufio.NewWriterSize(conn, 32<<10)
	var key []byte
	if t.keys != nil {
		key = t.keys.GetPrimaryKey()
	}
	send, err := t.clientHandshake(conn, br, bw, key, p.name, inc)
	if err != nil && !errors.Is(err, errHandshake) {
		err = fmt.Errorf("%w: %w", errHandshake, err)
	}
	if err != nil {
		if p.ctx.Err() == nil {
			t.st.handshakeFailures.Add(1)
			t.attemptFailed(p, true, inc, addr, err)
		}
		return time.Time{}, err
	}
	established := time.Now()
	t.st.connects.Add(1)
	t.st.outboundConns.Add(1)
	defer t.st.outboundConns.Add(-1)
	p.setConn(conn, key)
	defer p.setConn(nil, nil)
	if n := p.streak.Swap(0); p.warnedAt > 0 {
		t.log.Info("transport: peer's lock channel reachable again", "peer", p.name, "addr", addr, "failed_attempts", n)
	} else {
		t.log.Debug("transport: connected", "peer", p.name, "remote", addr)
	}
	p.warnedAt = 0

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

// warnEvery is how many consecutive failed attempts to reach a peer pass
// between two "unreachable" warnings.
const warnEvery = 30

// attemptFailed counts and logs a failed attempt to connect to p. A peer
// that is unreachable while messages wait for it stalls every lock it is
// asked about (Serf may well say it is alive): from the second failed
// attempt in a row with messages queued this is a warning, repeated every
// warnEvery attempts. Otherwise the first failure of a streak is logged at
// Info (a handshake failure, usually a configuration error, at Warn, and
// again every warnEvery attempts), the rest at Debug.
func (t *Transport) attemptFailed(p *peer, handshake bool, inc uint64, addr string, err error) {
	n := p.streak.Add(1)
	queued := p.q.len()
	args := []any{"peer", p.name, "incarnation", inc, "addr", addr, "failed_attempts", n, "err", err}
	if n <= p.warnedAt {
		p.warnedAt = 0 // a retarget began a new streak
	}
	if queued > 0 && n >= 2 && (p.warnedAt == 0 || n-p.warnedAt >= warnEvery) {
		p.warnedAt = n
		t.log.Warn("transport: peer's lock channel unreachable; messages for it wait",
			append(args, "queued", queued)...)
		return
	}
	level := slog.LevelDebug
	switch {
	case handshake && (n == 1 || n%warnEvery == 0):
		level = slog.LevelWarn
	case n == 1:
		level = slog.LevelInfo
	}
	what := "transport: dial failed"
	if handshake {
		what = "transport: handshake with peer failed"
	}
	t.log.Log(p.ctx, level, what, args...)
}

// connWriter is the writing side of p's established connection. It is
// used under p.wmu, by writeLoop or by a Send that writes directly.
type connWriter struct {
	conn    net.Conn
	bw      *bufio.Writer
	send    *frameCipher
	scratch []byte
	types   []mutex.MsgType // of a batch, counted once flushed
	err     error           // the write that failed: the connection is done

	raw    syscall.RawConn // for sendDirect's non-blocking write (nil: none)
	direct []byte          // sendDirect's frame
	// pending: a message sendDirect could write only in part; rest is
	// the rest of its frame (of restBytes), for writeBatch to write.
	pending, restBytes int
	restType           mutex.MsgType
	rest               []byte
}

// writeLoop drains p's queue into the connection, flushing whenever the
// queue is empty (or after maxBatch messages). While it waits, a Send
// may write to the connection directly (sendDirect).
func (t *Transport) writeLoop(p *peer, conn net.Conn, bw *bufio.Writer, send *frameCipher, broken <-chan struct{}) error {
	cw := &connWriter{conn: conn, bw: bw, send: send,
		scratch: make([]byte, 0, headerLen+maxPayload+send.overhead()),
		types:   make([]mutex.MsgType, 0, maxBatch)}
	if sc, ok := conn.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			cw.raw = raw
		}
	}
	p.wmu.Lock()
	p.w = cw
	p.wmu.Unlock()
	defer func() {
		p.wmu.Lock()
		p.w = nil
		if cw.pending > 0 {
			t.settleWritten(p, cw.pending, nil, 0, errBroken)
			cw.pending = 0
		}
		p.wmu.Unlock()
	}()
	for {
		select {
		case <-p.q.ready:
		case <-broken:
			p.wmu.Lock()
			err := cw.err
			p.wmu.Unlock()
			if err != nil {
				return fmt.Errorf("transport: write: %w", err)
			}
			return errBroken
		case <-p.kick:
			return errRetarget
		case <-p.rekey:
			p.wmu.Lock()
			err := t.rekeyConn(p, cw)
			p.wmu.Unlock()
			if err != nil {
				return fmt.Errorf("transport: rekey: %w", err)
			}
			continue
		case <-p.ctx.Done():
			return p.ctx.Err()
		}
		p.wmu.Lock()
		err := t.writeBatch(p, cw)
		p.wmu.Unlock()
		if err != nil {
			return err
		}
	}
}

// rekeyConn switches cw to the primary key if it is not on it.
func (t *Transport) rekeyConn(p *peer, cw *connWriter) error {
	if cw.err != nil {
		return cw.err
	}
	if err := cw.conn.SetWriteDeadline(time.Now().Add(t.cfg.WriteTimeout)); err != nil {
		return err
	}
	var err error
	if cw.send, err = t.rekeyIfNeeded(p, cw.bw, cw.send); err == nil {
		err = cw.bw.Flush()
	}
	return err
}

// writeBatch writes up to maxBatch queued messages and flushes them
// (under p.wmu).
func (t *Transport) writeBatch(p *peer, cw *connWriter) error {
	if cw.err != nil {
		return fmt.Errorf("transport: write: %w", cw.err)
	}
	if cw.pending > 0 {
		// The rest of sendDirect's frame goes first.
		err := cw.conn.SetWriteDeadline(time.Now().Add(t.cfg.WriteTimeout))
		if err == nil {
			_, err = cw.conn.Write(cw.rest)
		}
		cw.types = append(cw.types[:0], cw.restType)
		t.settleWritten(p, cw.pending, cw.types, cw.restBytes, err)
		cw.pending = 0
		if err != nil {
			cw.err = err
			return fmt.Errorf("transport: write: %w", err)
		}
	}
	m, ok := p.q.pop()
	if !ok {
		return nil
	}
	if err := cw.conn.SetWriteDeadline(time.Now().Add(t.cfg.WriteTimeout)); err != nil {
		t.settleWritten(p, 1, nil, 0, err)
		return fmt.Errorf("transport: set write deadline: %w", err)
	}
	n, bytes := 1, 0
	cw.types = append(cw.types[:0], m.Type)
	// A batch goes out on the primary key: a busy connection
	// switches at once, before the poll of watchPrimary.
	var err error
	if cw.send, err = t.rekeyIfNeeded(p, cw.bw, cw.send); err != nil {
		t.settleWritten(p, 1, nil, 0, err)
		return fmt.Errorf("transport: rekey: %w", err)
	}
	w, err := writeMessage(cw.bw, cw.scratch, cw.send, m)
	bytes += w
	for err == nil && n < maxBatch {
		if m, ok = p.q.pop(); !ok {
			break
		}
		n++
		cw.types = append(cw.types, m.Type)
		w, err = writeMessage(cw.bw, cw.scratch, cw.send, m)
		bytes += w
	}
	if n == maxBatch {
		p.q.signal() // more may wait: the next turn of the loop takes them
	}
	if err == nil {
		err = cw.bw.Flush()
	}
	t.settleWritten(p, n, cw.types, bytes, err)
	if err != nil {
		cw.err = err
		return fmt.Errorf("transport: write: %w", err)
	}
	return nil
}

// settleWritten counts n messages written (err nil) or lost, before
// settling them, so that a Flush that returns sees them.
func (t *Transport) settleWritten(p *peer, n int, types []mutex.MsgType, bytes int, err error) {
	if err != nil {
		t.st.droppedUnsent.Add(uint64(n))
	} else {
		t.st.framesSent.Add(uint64(n))
		for _, ty := range types {
			t.st.sentByType[ty].Add(1)
		}
		t.st.bytesSent.Add(uint64(bytes))
	}
	p.settled.Add(uint64(n))
	t.notifyProgress()
}

// sendDirect writes m to p's connection from the caller's goroutine, if
// the connection is up, its writer idle and nothing queued before m: a
// lock round then does not wait for a writer goroutine to be scheduled.
// The write is one non-blocking write(2): what the socket has no room for
// is left buffered for writeLoop, so Send never blocks. It reports
// whether it took m.
func (t *Transport) sendDirect(p *peer, m mutex.Message) bool {
	if !p.wmu.TryLock() {
		return false
	}
	defer p.wmu.Unlock()
	cw := p.w
	if cw == nil || cw.raw == nil || cw.err != nil || cw.pending > 0 || p.q.len() != 0 {
		return false
	}
	var err error
	ab := appendBuf{b: cw.direct[:0]}
	// On the primary key, as writeBatch (a rekey frame goes first).
	if cw.send, err = t.rekeyIfNeeded(p, &ab, cw.send); err != nil {
		// A rekey frame may have been sealed and not sent: the stream
		// is done; m waits for the next connection.
		cw.err = err
		cw.conn.Close()
		return false
	}
	b, err := appendFrame(ab.b, cw.send, m)
	if err != nil {
		t.settleWritten(p, 1, nil, 0, err)
		return true
	}
	cw.direct = b[:0]
	n, werr, called := 0, error(nil), false
	write := func(fd uintptr) bool {
		called = true
		n, werr = syscall.Write(int(fd), b)
		return true // one attempt: never wait for room
	}
	err = cw.raw.Write(write)
	if !called && errors.Is(err, os.ErrDeadlineExceeded) {
		// writeBatch's deadline has passed: this write sets none.
		if err = cw.conn.SetWriteDeadline(time.Time{}); err == nil {
			err = cw.raw.Write(write)
		}
	}
	if !called {
		werr = err // nothing written: the connection is closed
	}
	n = max(n, 0)
	if werr != nil && !errors.Is(werr, syscall.EAGAIN) && !errors.Is(werr, syscall.EINTR) {
		// Nothing or part of a frame went out: the connection is done,
		// and writeLoop ends with it.
		cw.err = werr
		cw.conn.Close()
		t.settleWritten(p, 1, nil, 0, werr)
		return true
	}
	if n == len(b) {
		cw.types = append(cw.types[:0], m.Type)
		t.settleWritten(p, 1, cw.types, n, nil)
		return true
	}
	// The socket is full: the rest waits for writeLoop.
	cw.rest = append(cw.rest[:0], b[n:]...)
	cw.restBytes, cw.restType = len(b), m.Type
	cw.pending = 1
	p.q.signal()
	return true
}

// appendBuf is an io.Writer appending to b.
type appendBuf struct{ b []byte }

func (a *appendBuf) Write(p []byte) (int, error) {
	a.b = append(a.b, p...)
	return len(p), nil
}

// writeMessage frames, seals and buffers one message, encoding straight
// into the bufio buffer when it has room.
func writeMessage(bw *bufio.Writer, scratch []byte, send *frameCipher, m mutex.Message) (int, error) {
	buf := bw.AvailableBuffer()
	if cap(buf) < cap(scratch) {
		buf = scratch[:0]
	}
	frame, err := appendFrame(buf, send, m)
	if err != nil {
		return 0, err
	}
	return bw.Write(frame)
}

// appendFrame appends m to dst as one sealed frame, sealed in place.
func appendFrame(dst []byte, send *frameCipher, m mutex.Message) ([]byte, error) {
	start := len(dst)
	b, err := appendMessage(append(dst, 0, 0, 0, 0), m)
	if err != nil {
		return dst, err
	}
	// Room for the seal's overhead, so that it seals where the frame is.
	b = slices.Grow(b, send.overhead())
	frame := send.seal(b[start:])
	return b[:start+len(frame)], nil
}

// clientHandshake opens a connection to the peer named want, incarnation
// wantInc, with the cluster key key (nil: plaintext): exchange preambles,
// send our hello, check the peer's welcome. It returns the cipher for the
// frames we send.
func (t *Transport) clientHandshake(conn net.Conn, br *bufio.Reader, bw *bufio.Writer, key []byte, want string, wantInc uint64) (*frameCipher, error) {
	open := func(dst []byte) []byte {
		return appendHello(dst, kindHello, hello{Name: t.cfg.Name, Incarnation: t.cfg.Incarnation, ToName: want})
	}
	send, _, err := t.clientOpen(conn, br, bw, key, want, wantInc, open)
	return send, err
}

// clientOpen is clientHandshake with the first client frame made by open
// (a hello or a query open, appended after 4 spare bytes). It returns the
// ciphers of both directions.
func (t *Transport) clientOpen(conn net.Conn, br *bufio.Reader, bw *bufio.Writer, key []byte, want string, wantInc uint64,
	open func([]byte) []byte) (*frameCipher, *frameCipher, error) {
	if err := conn.SetDeadline(time.Now().Add(t.cfg.HandshakeTimeout)); err != nil {
		return nil, nil, fmt.Errorf("transport: set deadline: %w", err)
	}
	mine, err := newPreamble(t.mode)
	if err != nil {
		return nil, nil, err
	}
	if _, err := bw.Write(mine.append(nil)); err != nil {
		return nil, nil, err
	}
	if err := bw.Flush(); err != nil {
		return nil, nil, err
	}
	var pb [preambleLen]byte
	if _, err := io.ReadFull(br, pb[:]); err != nil {
		return nil, nil, fmt.Errorf("%w: read preamble: %w", errHandshake, err)
	}
	theirs, err := parsePreamble(pb[:])
	if err != nil {
		return nil, nil, err
	}
	if theirs.mode != t.mode {
		return nil, nil, fmt.Errorf("%w: peer uses %s, we use %s (cluster key mismatch)", errHandshake, modeName(theirs.mode), modeName(t.mode))
	}
	var sk []byte
	if t.mode == modeAESGCM {
		sk = sessionKey(key, theirs.nonce, mine.nonce)
	}
	send, err := newFrameCipher(sk, dirClientToServer)
	if err != nil {
		return nil, nil, err
	}
	recv, err := newFrameCipher(sk, dirServerToClient)
	if err != nil {
		return nil, nil, err
	}
	send.challenge, recv.challenge = theirs.nonce, theirs.nonce
	buf := open([]byte{0, 0, 0, 0})
	if _, err := bw.Write(send.seal(buf)); err != nil {
		return nil, nil, err
	}
	if err := bw.Flush(); err != nil {
		return nil, nil, err
	}
	fr := frameReader{conn: conn, br: br, c: recv, max: t.cfg.MaxFrameSize}
	payload, err := fr.read(true)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: read welcome: %w", errHandshake, err)
	}
	w, err := decodeHello(payload, kindWelcome)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: welcome: %w", errHandshake, err)
	}
	if w.Name != want {
		return nil, nil, fmt.Errorf("%w: dialled peer %q but %q answered", errHandshake, want, w.Name)
	}
	if w.Incarnation != wantInc {
		// Another life of the peer (restarted at the same address): our
		// messages are for the one we were told about.
		return nil, nil, fmt.Errorf("%w: dialled %q incarnation %d but incarnation %d answered",
			errHandshake, want, wantInc, w.Incarnation)
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return nil, nil, fmt.Errorf("transport: clear deadline: %w", err)
	}
	return send, recv, nil
}
