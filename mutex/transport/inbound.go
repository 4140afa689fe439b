package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// maxInterned bounds the lock names one inbound connection keeps as
// strings to avoid allocating them again.
const maxInterned = 4096

// internIdle is how long an inbound connection receives nothing before
// its cache of lock names is dropped (within one to two periods): a peer
// that used many names and let them go returns to its idle memory.
const internIdle = time.Second

// nameCache is the lock names one inbound connection interned. The map is
// read and written by the connection's reader only; a timer drops it (by
// swapping the pointer, never touching the map) when no name was looked up
// for internIdle, and the reader then starts a new one.
type nameCache struct {
	m    atomic.Pointer[map[string]string]
	used atomic.Bool
	mu   sync.Mutex // guards t and stop
	t    *time.Timer
	stop bool
}

// start arms the idle timer; close disarms it.
func (c *nameCache) start(idle time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = time.AfterFunc(idle, func() {
		if !c.used.Swap(false) {
			c.m.Store(nil)
		}
		c.mu.Lock()
		if !c.stop {
			c.t.Reset(idle)
		}
		c.mu.Unlock()
	})
}

func (c *nameCache) close() {
	c.mu.Lock()
	c.stop = true
	c.t.Stop()
	c.mu.Unlock()
}

// intern returns b as a string, from the cache when it is there.
func (c *nameCache) intern(b []byte) string {
	if !c.used.Load() {
		c.used.Store(true)
	}
	mp := c.m.Load()
	if mp == nil {
		m := make(map[string]string)
		mp = &m
		c.m.Store(mp)
	}
	m := *mp
	if s, ok := m[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(m) < maxInterned {
		m[s] = s
	}
	return s
}

// len is the number of names cached (for tests; the reader's goroutine,
// or once it has ended).
func (c *nameCache) len() int {
	if mp := c.m.Load(); mp != nil {
		return len(*mp)
	}
	return 0
}

// inConn is one accepted connection.
type inConn struct {
	conn   net.Conn
	remote string
	key    []byte // the cluster key of its handshake (nil: plaintext)
}

func (t *Transport) acceptLoop() {
	defer t.wg.Done()
	var delay time.Duration
	for {
		conn, err := t.ln.Accept()
		if err != nil {
			if t.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors or similar: wait a little.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			t.log.Warn("transport: accept failed", "err", err, "retry_in", delay)
			timer := time.NewTimer(delay)
			select {
			case <-timer.C:
			case <-t.ctx.Done():
				timer.Stop()
				return
			}
			continue
		}
		delay = 0
		if n := t.st.inboundConns.Add(1); n > int64(t.cfg.MaxConns) {
			t.st.inboundConns.Add(-1)
			t.st.rejectedConns.Add(1)
			t.warn("transport: too many connections, closing", "remote", conn.RemoteAddr().String(), "max", t.cfg.MaxConns)
			conn.Close()
			continue
		}
		t.wg.Add(1)
		go t.serveInbound(conn)
	}
}

// serveInbound runs one accepted connection: handshake, then read, check
// and deliver frames until the connection ends or misbehaves. Any bad
// input closes this connection only.
func (t *Transport) serveInbound(conn net.Conn) {
	defer t.wg.Done()
	defer t.st.inboundConns.Add(-1)
	defer conn.Close()
	stop := context.AfterFunc(t.ctx, func() { conn.Close() })
	defer stop()
	remote := conn.RemoteAddr().String()

	br := bufio.NewReaderSize(conn, 16<<10)
	fr, h, key, err := t.serverHandshake(conn, br)
	if err != nil {
		if t.ctx.Err() == nil {
			t.st.handshakeFailures.Add(1)
			t.warn("transport: inbound handshake failed", "remote", remote, "err", err)
		}
		return
	}
	if h.query != 0 {
		t.serveQuery(conn, fr.send, h, remote) // not a lock connection
		return
	}
	t.st.accepts.Add(1)
	ic := &inConn{conn: conn, remote: remote, key: key}
	t.registerInbound(h.Name, ic)
	defer t.unregisterInbound(h.Name, ic)
	t.log.Debug("transport: accepted peer", "peer", h.Name, "incarnation", h.Incarnation, "remote", remote)

	self := t.cfg.Name
	locks := &nameCache{}
	locks.start(internIdle)
	defer locks.close()
	intern := func(b []byte) string {
		switch string(b) {
		case h.Name:
			return h.Name
		case self:
			return self
		}
		return locks.intern(b)
	}
	bucket := newTokenBucket(t.cfg.MaxFrameRate)

	for {
		payload, err := fr.read(false)
		if err != nil {
			t.inboundError(err, remote, h.Name)
			return
		}
		if len(payload) > 0 && payload[0]&0x0f == kindQuery {
			// A control frame: an in-band rekey (rekey.go).
			if err := t.serverRekey(fr, ic, payload); err != nil {
				t.inboundError(err, remote, h.Name)
				return
			}
			continue
		}
		m, err := decodeMessage(payload, intern)
		if err == nil && (m.From != h.Name || m.FromIncarnation != h.Incarnation || m.To != self) {
			err = fmt.Errorf("%w: %v (hello %s/%d)", errIdentity, m, h.Name, h.Incarnation)
		}
		if err != nil {
			t.inboundError(err, remote, h.Name)
			return
		}
		if !bucket.take() {
			t.st.floods.Add(1)
			t.warn("transport: frame rate over limit, closing connection", "remote", remote, "peer", h.Name, "max_rate", t.cfg.MaxFrameRate)
			return
		}
		t.st.framesReceived.Add(1)
		t.st.receivedByType[m.Type].Add(1)
		t.st.bytesReceived.Add(uint64(headerLen + len(payload) + fr.c.overhead()))
		if t.cfg.Deliver != nil {
			t.cfg.Deliver(t.ctx, Incoming{Msg: m, Remote: remote})
			continue
		}
		select {
		case t.incoming <- Incoming{Msg: m, Remote: remote}:
		case <-t.ctx.Done():
			return
		}
	}
}

// inboundError counts and logs the end of an inbound connection.
func (t *Transport) inboundError(err error, remote, name string) {
	if t.ctx.Err() != nil {
		return
	}
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		t.log.Debug("transport: inbound connection closed", "remote", remote, "peer", name, "err", err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		// A peer that crashed or was cut off mid-frame.
		t.log.Info("transport: inbound connection closed mid-frame", "remote", remote, "peer", name)
	case errors.As(err, &ne) && ne.Timeout():
		t.st.badFrames.Add(1)
		t.warn("transport: frame stalled, closing connection", "remote", remote, "peer", name, "err", err)
	case errors.Is(err, errOversized), errors.Is(err, errAuth), errors.Is(err, errMalformed),
		errors.Is(err, errIdentity):
		t.st.badFrames.Add(1)
		t.warn("transport: bad frame, closing connection", "remote", remote, "peer", name, "err", err)
	default:
		t.log.Info("transport: inbound connection failed", "remote", remote, "peer", name, "err", err)
	}
}

// registerInbound records ic as name's newest connection and closes the
// previous one: a peer that reconnected has given up on it.
func (t *Transport) registerInbound(name string, ic *inConn) {
	t.mu.Lock()
	old := t.inbound[name]
	t.inbound[name] = ic
	t.mu.Unlock()
	if old != nil {
		t.log.Debug("transport: peer reconnected, closing its previous connection", "peer", name, "remote", old.remote)
		old.conn.Close()
	}
}

func (t *Transport) unregisterInbound(name string, ic *inConn) {
	t.mu.Lock()
	if t.inbound[name] == ic {
		delete(t.inbound, name)
	}
	t.mu.Unlock()
}

// serverHandshake answers a new connection: exchange preambles, check the
// client's hello, send our welcome. It returns the reader of the client's
// frames, its hello and the cluster key the hello was sealed with: the
// hello is tried with every installed key, primary first.
func (t *Transport) serverHandshake(conn net.Conn, br *bufio.Reader) (*frameReader, hello, []byte, error) {
	fail := func(err error) (*frameReader, hello, []byte, error) { return nil, hello{}, nil, err }
	if err := conn.SetDeadline(time.Now().Add(t.cfg.HandshakeTimeout)); err != nil {
		return fail(fmt.Errorf("transport: set deadline: %w", err))
	}
	mine, err := newPreamble(t.mode)
	if err != nil {
		return fail(err)
	}
	if _, err := conn.Write(mine.append(nil)); err != nil {
		return fail(fmt.Errorf("%w: write preamble: %w", errHandshake, err))
	}
	var pb [preambleLen]byte
	if _, err := io.ReadFull(br, pb[:]); err != nil {
		return fail(fmt.Errorf("%w: read preamble: %w", errHandshake, err))
	}
	theirs, err := parsePreamble(pb[:])
	if err != nil {
		return fail(err)
	}
	if theirs.mode != t.mode {
		return fail(fmt.Errorf("%w: peer uses %s, we use %s (cluster key mismatch)", errHandshake, modeName(theirs.mode), modeName(t.mode)))
	}
	// Read the hello as it is, then open it with each key in turn (a
	// failed Open clobbers its buffer: each try works on a copy).
	plain := &frameCipher{}
	fr := &frameReader{conn: conn, br: br, c: plain, max: t.cfg.MaxFrameSize, timeout: t.cfg.ReadTimeout}
	body, err := fr.read(true)
	if err != nil {
		return fail(fmt.Errorf("%w: read hello: %w", errHandshake, err))
	}
	var (
		key        []byte
		recv, send *frameCipher
		payload    []byte
	)
	if t.mode == modePlain {
		recv, send, payload = plain, plain, body
	} else {
		keys := t.keys.GetKeys()
		try := make([]byte, len(body))
		for _, k := range keys {
			sk := sessionKey(k, mine.nonce, theirs.nonce)
			r, err := newFrameCipher(sk, dirClientToServer)
			if err != nil {
				return fail(err)
			}
			copy(try, body)
			p, err := r.open(fr.hdr[:], try)
			if err != nil {
				continue
			}
			if send, err = newFrameCipher(sk, dirServerToClient); err != nil {
				return fail(err)
			}
			r.challenge = mine.nonce
			key, recv, payload = k, r, p
			break
		}
		if recv == nil {
			return fail(fmt.Errorf("%w: hello failed authentication with each of our %d keys (wrong cluster key?)", errHandshake, len(keys)))
		}
	}
	fr.c = recv
	h, what, err := decodeClientOpen(payload)
	h.query = what
	if err != nil {
		return fail(fmt.Errorf("%w: hello: %w", errHandshake, err))
	}
	if h.ToName != t.cfg.Name {
		return fail(fmt.Errorf("%w: hello from %q is for %q, we are %q", errHandshake, h.Name, h.ToName, t.cfg.Name))
	}
	buf := appendHello([]byte{0, 0, 0, 0}, kindWelcome, hello{Name: t.cfg.Name, Incarnation: t.cfg.Incarnation})
	if _, err := conn.Write(send.seal(buf)); err != nil {
		return fail(fmt.Errorf("%w: write welcome: %w", errHandshake, err))
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return fail(fmt.Errorf("transport: clear deadline: %w", err))
	}
	fr.send = send
	return fr, h, key, nil
}

// tokenBucket limits the frame rate of one connection: rate frames per
// second with a burst of one second's worth. It reads the clock only when
// the burst is used up.
type tokenBucket struct {
	rate   float64 // <0: unlimited
	tokens float64
	last   time.Time
}

func newTokenBucket(rate float64) *tokenBucket {
	return &tokenBucket{rate: rate, tokens: max(rate, 1), last: time.Now()}
}

func (b *tokenBucket) take() bool {
	if b.rate < 0 {
		return true
	}
	if b.tokens >= 1 {
		b.tokens--
		return true
	}
	now := time.Now()
	b.tokens = min(b.tokens+now.Sub(b.last).Seconds()*b.rate, max(b.rate, 1))
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true
	}
	return false
}

// warnLimiter rate-limits the warnings about bad input, so that a flood of
// garbage cannot flood the log too: at most warnRate a second (with a
// burst as large); the next warning emitted counts those suppressed.
type warnLimiter struct {
	mu         sync.Mutex
	bucket     tokenBucket
	suppressed uint64
}

const warnRate = 20

// warn logs a warning about bad input unless too many came recently.
func (t *Transport) warn(msg string, args ...any) {
	l := &t.warns
	l.mu.Lock()
	ok := l.bucket.take()
	n := l.suppressed
	if ok {
		l.suppressed = 0
	} else {
		l.suppressed++
	}
	l.mu.Unlock()
	if !ok {
		return
	}
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	t.log.Warn(msg, args...)
}
