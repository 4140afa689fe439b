package transport

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/dlockfs/dlockfs/mutex"
	"github.com/dlockfs/dlockfs/mutex/testutil"
)

// wait is the bound on every condition a test awaits.
const wait = 10 * time.Second

var (
	key1 = bytes.Repeat([]byte{0x11}, 32)
	key2 = bytes.Repeat([]byte{0x22}, 32)
	key3 = bytes.Repeat([]byte{0x33}, 16)
)

func newTestFrameReader(b []byte, c *frameCipher, maxSize int) *frameReader {
	return &frameReader{br: bufio.NewReader(bytes.NewReader(b)), c: c, max: maxSize}
}

// testLogger logs to the test's output (warnings and up) and to buf.
func testLogger(t *testing.T, buf *testutil.SyncBuffer) *slog.Logger {
	var w io.Writer = t.Output()
	if buf != nil {
		w = io.MultiWriter(w, buf)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// newT starts a transport on 127.0.0.1 with test-sized timeouts, closed
// when the test ends.
func newT(t *testing.T, name string, key []byte, opts ...func(*Config)) *Transport {
	t.Helper()
	cfg := Config{
		Name: name, Incarnation: uint64(len(name)) * 1000, ListenAddr: "127.0.0.1:0", Key: key,
		Logger:     testLogger(t, nil),
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		HandshakeTimeout: 2 * time.Second,
	}
	for _, o := range opts {
		o(&cfg)
	}
	tr, err := Listen(cfg)
	if err != nil {
		t.Fatalf("listen %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := tr.Close(); err != nil {
			t.Errorf("close %s: %v", name, err)
		}
	})
	return tr
}

func link(a, b *Transport) {
	a.AddPeer(b.cfg.Name, b.cfg.Incarnation, b.Addr())
	b.AddPeer(a.cfg.Name, a.cfg.Incarnation, a.Addr())
}

func msg(from, to *Transport, lock string, time uint64) mutex.Message {
	return mutex.Message{
		Type: mutex.MsgRequest, From: from.cfg.Name, FromIncarnation: from.cfg.Incarnation,
		To: to.cfg.Name, ToIncarnation: to.cfg.Incarnation, Lock: lock, Time: time, ReqTime: time,
	}
}

func recv(t *testing.T, tr *Transport) Incoming {
	t.Helper()
	select {
	case in := <-tr.Incoming():
		return in
	case <-time.After(wait):
		t.Fatalf("%s: no message within %v", tr.cfg.Name, wait)
	}
	return Incoming{}
}

// expectConnected waits for one Connected value per name, in any order.
func expectConnected(t *testing.T, tr *Transport, peers ...string) {
	t.Helper()
	want := map[string]bool{}
	for _, p := range peers {
		want[p] = true
	}
	for len(want) > 0 {
		select {
		case name := <-tr.Connected():
			if !want[name] {
				t.Fatalf("%s: connected to %q, want %v", tr.cfg.Name, name, peers)
			}
			delete(want, name)
		case <-time.After(wait):
			t.Fatalf("%s: no connection to %v within %v", tr.cfg.Name, want, wait)
		}
	}
}

// expectNothing checks that no message arrives while cond is awaited.
func expectNothing(t *testing.T, tr *Transport) {
	t.Helper()
	select {
	case in := <-tr.Incoming():
		t.Fatalf("%s: unexpected message %v from %s", tr.cfg.Name, in.Msg, in.Remote)
	default:
	}
}

// rawClient is a hand-driven client for feeding a transport bad input.
type rawClient struct {
	conn net.Conn
	send *frameCipher
}

func dialRaw(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, wait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// rawHandshake performs a client handshake by hand, as name/inc towards
// the transport named to, with key (nil: plaintext).
func rawHandshake(t *testing.T, addr string, key []byte, name string, inc uint64, to string) (*rawClient, error) {
	t.Helper()
	conn := dialRaw(t, addr)
	if err := conn.SetDeadline(time.Now().Add(wait)); err != nil {
		return nil, err
	}
	mode := byte(modePlain)
	if key != nil {
		mode = modeAESGCM
	}
	mine, err := newPreamble(mode)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Write(mine.append(nil)); err != nil {
		return nil, err
	}
	br := bufio.NewReader(conn)
	var pb [preambleLen]byte
	if _, err := io.ReadFull(br, pb[:]); err != nil {
		return nil, err
	}
	theirs, err := parsePreamble(pb[:])
	if err != nil {
		return nil, err
	}
	var sk []byte
	if key != nil {
		sk = sessionKey(key, theirs.nonce, mine.nonce)
	}
	send, _ := newFrameCipher(sk, dirClientToServer)
	recvc, _ := newFrameCipher(sk, dirServerToClient)
	if _, err := conn.Write(send.seal(appendHello([]byte{0, 0, 0, 0}, kindHello, hello{Name: name, Incarnation: inc, ToName: to}))); err != nil {
		return nil, err
	}
	fr := frameReader{conn: conn, br: br, c: recvc, max: DefaultMaxFrameSize}
	p, err := fr.read(true)
	if err != nil {
		return nil, fmt.Errorf("welcome: %w", err)
	}
	if _, err := decodeHello(p, kindWelcome); err != nil {
		return nil, err
	}
	return &rawClient{conn: conn, send: send}, conn.SetDeadline(time.Time{})
}

func (c *rawClient) writeMsg(t *testing.T, m mutex.Message) error {
	t.Helper()
	buf, err := appendMessage([]byte{0, 0, 0, 0}, m)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.conn.Write(c.send.seal(buf))
	return err
}

// expectClosed waits until the server closes conn (a read returns an error).
func expectClosed(t *testing.T, conn net.Conn) {
	t.Helper()
	if err := conn.SetReadDeadline(time.Now().Add(wait)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for {
		_, err := conn.Read(buf)
		if err == nil {
			continue
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("connection from %s still open after %v", conn.LocalAddr(), wait)
		}
		return
	}
}

// proxy forwards 127.0.0.1 connections to target. For the first
// connection, it hands each client-to-server frame (after the preamble;
// frame 0 is the hello) to hook, which returns the frames to forward;
// it also records that connection's client bytes.
type proxy struct {
	*testutil.Proxy
	hook func(i int, frame []byte) [][]byte

	mu       sync.Mutex
	recorded []byte
}

func newProxy(t *testing.T, target string, hook func(i int, frame []byte) [][]byte) *proxy {
	t.Helper()
	p := &proxy{hook: hook}
	p.Proxy = testutil.NewProxy(t, target, func(conn int, c io.Reader, s io.Writer) {
		if conn == 0 {
			p.forwardFrames(c, s)
		} else {
			_, _ = io.Copy(s, c)
		}
	})
	return p
}

func (p *proxy) clientBytes() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]byte(nil), p.recorded...)
}

func (p *proxy) forwardFrames(c io.Reader, s io.Writer) {
	r := bufio.NewReader(c)
	pre := make([]byte, preambleLen)
	if _, err := io.ReadFull(r, pre); err != nil {
		return
	}
	p.record(pre)
	if _, err := s.Write(pre); err != nil {
		return
	}
	for i := 0; ; i++ {
		hdr := make([]byte, headerLen)
		if _, err := io.ReadFull(r, hdr); err != nil {
			return
		}
		n := int(hdr[0])<<24 | int(hdr[1])<<16 | int(hdr[2])<<8 | int(hdr[3])
		body := make([]byte, n)
		if _, err := io.ReadFull(r, body); err != nil {
			return
		}
		frame := append(hdr, body...)
		p.record(frame)
		out := [][]byte{frame}
		if p.hook != nil {
			out = p.hook(i, frame)
		}
		for _, f := range out {
			if _, err := s.Write(f); err != nil {
				return
			}
		}
	}
}

func (p *proxy) record(b []byte) {
	p.mu.Lock()
	p.recorded = append(p.recorded, b...)
	p.mu.Unlock()
}

// killOutbound closes a's established connection to peer.
func killOutbound(t *testing.T, a *Transport, peer string) {
	t.Helper()
	a.mu.RLock()
	p := a.peers[peer]
	a.mu.RUnlock()
	p.mu.Lock()
	c := p.conn
	p.mu.Unlock()
	if c == nil {
		t.Fatalf("%s has no connection to %s", a.cfg.Name, peer)
	}
	c.Close()
}

// killInbound closes b's accepted connection from peer.
func killInbound(t *testing.T, b *Transport, peer string) {
	t.Helper()
	b.mu.RLock()
	ic := b.inbound[peer]
	b.mu.RUnlock()
	if ic == nil {
		t.Fatalf("%s has no connection from %s", b.cfg.Name, peer)
	}
	ic.conn.Close()
}
