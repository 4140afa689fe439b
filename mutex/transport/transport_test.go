package transport

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dlockfs/dlockfs/mutex"
	"github.com/dlockfs/dlockfs/mutex/testutil"
)

func keyName(k []byte) string {
	if k == nil {
		return "plain"
	}
	return fmt.Sprintf("aes%d", len(k)*8)
}

func TestConfigValidate(t *testing.T) {
	good := Config{Name: "a", ListenAddr: "127.0.0.1:0"}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*Config){
		"no name":      func(c *Config) { c.Name = "" },
		"long name":    func(c *Config) { c.Name = strings.Repeat("x", 256) },
		"no addr":      func(c *Config) { c.ListenAddr = "" },
		"key 15":       func(c *Config) { c.Key = make([]byte, 15) },
		"key empty":    func(c *Config) { c.Key = []byte{} },
		"small frame":  func(c *Config) { c.MaxFrameSize = 100 },
		"neg queue":    func(c *Config) { c.QueueLen = -1 },
		"neg timeout":  func(c *Config) { c.WriteTimeout = -1 },
		"neg backoff":  func(c *Config) { c.MinBackoff = -1 },
		"neg incoming": func(c *Config) { c.IncomingLen = -1 },
	} {
		c := good
		mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: no error", name)
		}
		if _, err := Listen(c); err == nil {
			t.Errorf("%s: Listen accepted it", name)
		}
	}
}

func TestTwoPeersBothDirections(t *testing.T) {
	for _, key := range [][]byte{nil, key1, key3} {
		t.Run(keyName(key), func(t *testing.T) {
			a, b := newT(t, "a", key), newT(t, "b", key)
			if a.Encrypted() != (key != nil) {
				t.Fatalf("Encrypted() = %v", a.Encrypted())
			}
			link(a, b)
			const n = 200
			for i := range n {
				a.Send(msg(a, b, "ab", uint64(i)))
				b.Send(msg(b, a, "ba", uint64(i)))
			}
			for _, pair := range [][2]*Transport{{a, b}, {b, a}} {
				from, to := pair[0], pair[1]
				expectConnected(t, from, to.cfg.Name)
				for i := range n {
					in := recv(t, to)
					if want := msg(from, to, in.Msg.Lock, uint64(i)); !reflect.DeepEqual(in.Msg, want) {
						t.Fatalf("%s got %v, want %v", to.cfg.Name, in.Msg, want)
					}
					if !strings.HasPrefix(in.Remote, "127.0.0.1:") {
						t.Errorf("Remote = %q", in.Remote)
					}
				}
			}
			testutil.WaitFor(t, wait, "stats", func() bool { return a.Stats().FramesSent == n && b.Stats().FramesReceived == n })
			st := a.Stats()
			if st.Connects != 1 || st.Peers != 1 || st.OutboundConns != 1 || st.BadFrames != 0 || st.HandshakeFailures != 0 {
				t.Errorf("a stats: %+v", st)
			}
			if st.BytesSent == 0 || b.Stats().BytesReceived != st.BytesSent {
				t.Errorf("bytes: sent %d, received %d", st.BytesSent, b.Stats().BytesReceived)
			}
		})
	}
}

func TestThreePeersMesh(t *testing.T) {
	for _, key := range [][]byte{nil, key1} {
		t.Run(keyName(key), func(t *testing.T) {
			ts := []*Transport{newT(t, "a", key), newT(t, "b", key), newT(t, "c", key)}
			for i, x := range ts {
				for _, y := range ts[i+1:] {
					link(x, y)
				}
			}
			const n = 50
			for i := range n {
				for _, x := range ts {
					for _, y := range ts {
						if x != y {
							x.Send(msg(x, y, "l", uint64(i)))
						}
					}
				}
			}
			for _, y := range ts {
				next := map[string]uint64{}
				for range 2 * n {
					in := recv(t, y)
					if in.Msg.To != y.cfg.Name || in.Msg.Time != next[in.Msg.From] {
						t.Fatalf("%s: got %v, want time %d from %s", y.cfg.Name, in.Msg, next[in.Msg.From], in.Msg.From)
					}
					next[in.Msg.From]++
				}
				if len(next) != 2 {
					t.Fatalf("%s heard from %v", y.cfg.Name, next)
				}
			}
		})
	}
}

// A connection killed while messages stream is redialled, announced again
// on Connected, and later messages arrive; nothing arrives twice.
func TestReconnectAfterKill(t *testing.T) {
	for _, side := range []string{"client", "server"} {
		for _, key := range [][]byte{nil, key1} {
			t.Run(side+"/"+keyName(key), func(t *testing.T) {
				// The queue holds the whole stream, so that the final
				// marker cannot be dropped for a full queue.
				a := newT(t, "a", key, func(c *Config) { c.QueueLen = 1 << 15 })
				b := newT(t, "b", key)
				a.AddPeer("b", b.cfg.Incarnation, b.Addr())
				expectConnected(t, a, "b")

				var wg sync.WaitGroup
				stop := make(chan struct{})
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := uint64(1); i <= 20000; i++ {
						select {
						case <-stop:
							return
						default:
						}
						a.Send(msg(a, b, "stream", i))
						if i%64 == 0 {
							runtime.Gosched()
						}
					}
				}()
				seen := map[uint64]bool{}
				take := func() Incoming {
					in := recv(t, b)
					if seen[in.Msg.Time] {
						t.Fatalf("message %d delivered twice", in.Msg.Time)
					}
					seen[in.Msg.Time] = true
					return in
				}
				for range 100 {
					take()
				}
				if side == "client" {
					killOutbound(t, a, "b")
				} else {
					killInbound(t, b, "a")
				}
				expectConnected(t, a, "b")
				close(stop)
				wg.Wait()
				const marker = 1 << 40
				a.Send(msg(a, b, "marker", marker))
				for {
					if in := take(); in.Msg.Time == marker {
						break
					}
				}
				if st := a.Stats(); st.Connects < 2 || st.Disconnects < 1 {
					t.Errorf("a stats after kill: %+v", st)
				}
			})
		}
	}
}

// A peer with the wrong key, or without one against a keyed peer (and the
// other way round), never completes a handshake: nothing is delivered,
// nothing is sent, both sides count it.
func TestKeyMismatch(t *testing.T) {
	for name, keys := range map[string][2][]byte{
		"wrong key":       {key1, key2},
		"wrong key size":  {key1, key3},
		"no key vs keyed": {nil, key1},
		"keyed vs no key": {key1, nil},
	} {
		t.Run(name, func(t *testing.T) {
			a, b := newT(t, "a", keys[0]), newT(t, "b", keys[1])
			link(a, b)
			a.Send(msg(a, b, "secret", 1))
			b.Send(msg(b, a, "secret", 1))
			testutil.WaitFor(t, wait, "repeated handshake failures", func() bool {
				return a.Stats().HandshakeFailures >= 4 && b.Stats().HandshakeFailures >= 4
			})
			expectNothing(t, a)
			expectNothing(t, b)
			for _, x := range []*Transport{a, b} {
				st := x.Stats()
				if st.Connects != 0 || st.Accepts != 0 || st.FramesSent != 0 || st.FramesReceived != 0 || st.Queued != 1 {
					t.Errorf("%s stats: %+v", x.cfg.Name, st)
				}
			}
		})
	}
}

// Someone without the key cannot inject a message: a hello sealed with
// another key, a plaintext hello, and a message sealed with another
// session's key are all refused.
func TestForgedConnection(t *testing.T) {
	b := newT(t, "b", key1)
	if _, err := rawHandshake(t, b.Addr(), key2, "a", 1, "b"); err == nil {
		t.Fatal("handshake with the wrong key succeeded")
	}
	if _, err := rawHandshake(t, b.Addr(), nil, "a", 1, "b"); err == nil {
		t.Fatal("plaintext handshake with a keyed peer succeeded")
	}
	// Plaintext hello while claiming the keyed mode.
	conn := dialRaw(t, b.Addr())
	pre, _ := newPreamble(modeAESGCM)
	plain, _ := newFrameCipher(nil, dirClientToServer)
	conn.Write(pre.append(nil))
	conn.Write(plain.seal(appendHello([]byte{0, 0, 0, 0}, kindHello, hello{Name: "a", Incarnation: 1, ToName: "b"})))
	expectClosed(t, conn)
	testutil.WaitFor(t, wait, "3 handshake failures", func() bool { return b.Stats().HandshakeFailures >= 3 })
	// A legitimate handshake, then a frame sealed under another key.
	c, err := rawHandshake(t, b.Addr(), key1, "a", 1, "b")
	if err != nil {
		t.Fatal(err)
	}
	c.send, _ = newFrameCipher(sessionKey(key1, [nonceLen]byte{}, [nonceLen]byte{}), dirClientToServer)
	c.writeMsg(t, mutex.Message{Type: mutex.MsgRequest, From: "a", FromIncarnation: 1, To: "b", Lock: "x"})
	expectClosed(t, c.conn)
	testutil.WaitFor(t, wait, "bad frame", func() bool { return b.Stats().BadFrames == 1 })
	expectNothing(t, b)
	if st := b.Stats(); st.FramesReceived != 0 || st.Accepts != 1 {
		t.Errorf("stats: %+v", st)
	}
}

// A keyed peer talking to a server that lacks the key reveals nothing: it
// sends no message before the server proves the key with its welcome, and
// its hello is sealed.
func TestNoKeyCannotRead(t *testing.T) {
	for _, mode := range []byte{modePlain, modeAESGCM} {
		t.Run(modeName(mode), func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			got := make(chan []byte, 1)
			go func() {
				conn, err := ln.Accept()
				if err != nil {
					got <- nil
					return
				}
				defer conn.Close()
				pre, _ := newPreamble(mode)
				conn.Write(pre.append(nil))
				// Answer with a welcome sealed under a guessed key.
				fake, _ := newFrameCipher(sessionKey(key2, pre.nonce, [nonceLen]byte{}), dirServerToClient)
				conn.Write(fake.seal(appendHello([]byte{0, 0, 0, 0}, kindWelcome, hello{Name: "b", Incarnation: 1})))
				conn.SetReadDeadline(time.Now().Add(wait))
				var all []byte
				buf := make([]byte, 4096)
				for {
					n, err := conn.Read(buf)
					all = append(all, buf[:n]...)
					if err != nil {
						break
					}
				}
				got <- all
			}()
			a := newT(t, "a-secret-node", key1)
			a.AddPeer("b", 1, ln.Addr().String())
			a.Send(mutex.Message{Type: mutex.MsgRequest, From: a.cfg.Name, FromIncarnation: a.cfg.Incarnation, To: "b", Lock: "secret-lock-name", Time: 1})
			var all []byte
			select {
			case all = <-got:
			case <-time.After(wait):
				t.Fatal("fake server got nothing")
			}
			if strings.Contains(string(all), "secret-lock-name") || strings.Contains(string(all), "a-secret-node") {
				t.Errorf("the fake server read a name in clear: %q", all)
			}
			if len(all) > preambleLen+headerLen+64 {
				t.Errorf("the fake server got %d bytes, more than a preamble and a hello", len(all))
			}
			testutil.WaitFor(t, wait, "handshake failure", func() bool { return a.Stats().HandshakeFailures >= 1 })
			if st := a.Stats(); st.FramesSent != 0 || st.Connects != 0 {
				t.Errorf("stats: %+v", st)
			}
		})
	}
}

// Garbage bytes, a stalled handshake, a stalled frame, an oversized frame
// and a misattributed message each close their own connection, are logged
// with the remote address and counted, while a legitimate peer goes on.
func TestBadInput(t *testing.T) {
	for _, key := range [][]byte{nil, key1} {
		t.Run(keyName(key), func(t *testing.T) {
			var logs testutil.SyncBuffer
			b := newT(t, "b", key, func(c *Config) {
				c.Logger = testLogger(t, &logs)
				c.HandshakeTimeout = 200 * time.Millisecond
				c.ReadTimeout = 200 * time.Millisecond
			})
			a := newT(t, "a", key)
			a.AddPeer("b", b.cfg.Incarnation, b.Addr())
			expectConnected(t, a, "b")
			seq := uint64(0)
			roundTrip := func() {
				t.Helper()
				seq++
				a.Send(msg(a, b, "good", seq))
				if in := recv(t, b); in.Msg.Time != seq {
					t.Fatalf("got %v, want time %d", in.Msg, seq)
				}
			}
			roundTrip()

			// Garbage instead of a preamble.
			g := dialRaw(t, b.Addr())
			junk := make([]byte, 1000)
			rand.Read(junk)
			g.Write(junk)
			expectClosed(t, g)
			testutil.WaitFor(t, wait, "garbage counted", func() bool { return b.Stats().HandshakeFailures == 1 })
			if !strings.Contains(logs.String(), "remote="+g.LocalAddr().String()) {
				t.Errorf("log does not name the remote %s:\n%s", g.LocalAddr(), logs.String())
			}
			roundTrip()

			// A handshake that stalls.
			s := dialRaw(t, b.Addr())
			expectClosed(t, s)
			testutil.WaitFor(t, wait, "stall counted", func() bool { return b.Stats().HandshakeFailures == 2 })
			roundTrip()

			// A frame that stalls half-way.
			c, err := rawHandshake(t, b.Addr(), key, "x", 1, "b")
			if err != nil {
				t.Fatal(err)
			}
			c.conn.Write([]byte{0, 0})
			expectClosed(t, c.conn)
			testutil.WaitFor(t, wait, "stalled frame counted", func() bool { return b.Stats().BadFrames == 1 })
			roundTrip()

			// An oversized frame.
			c, err = rawHandshake(t, b.Addr(), key, "x", 1, "b")
			if err != nil {
				t.Fatal(err)
			}
			c.conn.Write([]byte{0, 0, 0x10, 0x01}) // 4097 bytes
			expectClosed(t, c.conn)
			testutil.WaitFor(t, wait, "oversized counted", func() bool { return b.Stats().BadFrames == 2 })
			roundTrip()

			// Garbage after a good handshake.
			c, err = rawHandshake(t, b.Addr(), key, "x", 1, "b")
			if err != nil {
				t.Fatal(err)
			}
			f := c.send.seal([]byte{0, 0, 0, 0, 0x11, 0xff})
			c.conn.Write(f)
			expectClosed(t, c.conn)
			testutil.WaitFor(t, wait, "malformed counted", func() bool { return b.Stats().BadFrames == 3 })
			roundTrip()

			// A message whose From is not the hello's name, and one not
			// addressed to b.
			for i, m := range []mutex.Message{
				{Type: mutex.MsgRequest, From: "a", FromIncarnation: a.cfg.Incarnation, To: "b", Lock: "forged"},
				{Type: mutex.MsgRequest, From: "x", FromIncarnation: 2, To: "b", Lock: "forged"},
				{Type: mutex.MsgRequest, From: "x", FromIncarnation: 1, To: "c", Lock: "forged"},
			} {
				c, err = rawHandshake(t, b.Addr(), key, "x", 1, "b")
				if err != nil {
					t.Fatal(err)
				}
				c.writeMsg(t, m)
				expectClosed(t, c.conn)
				testutil.WaitFor(t, wait, "misattributed counted", func() bool { return b.Stats().BadFrames == uint64(4+i) })
				roundTrip()
			}

			// A hello meant for someone else.
			if _, err := rawHandshake(t, b.Addr(), key, "x", 1, "c"); err == nil {
				t.Error("a hello for c was accepted by b")
			}
			testutil.WaitFor(t, wait, "wrong target counted", func() bool { return b.Stats().HandshakeFailures == 3 })
			roundTrip()

			expectNothing(t, b)
			if st := a.Stats(); st.Connects != 1 || st.Disconnects != 0 {
				t.Errorf("the good peer was disturbed: %+v", st)
			}
			if st := b.Stats(); st.FramesReceived != seq {
				t.Errorf("b received %d frames, want %d", st.FramesReceived, seq)
			}
		})
	}
}

// Frames captured from a keyed connection are useless: the whole client
// side of a connection replayed on a new one fails at the hello; a frame
// replayed, reordered or altered inside its connection fails to open, the
// connection is dropped and the sender reconnects.
func TestReplay(t *testing.T) {
	t.Run("connection", func(t *testing.T) {
		b := newT(t, "b", key1)
		a := newT(t, "a", key1)
		px := newProxy(t, b.Addr(), nil)
		a.AddPeer("b", b.cfg.Incarnation, px.Addr())
		expectConnected(t, a, "b")
		for i := range 5 {
			a.Send(msg(a, b, "very-secret-lock", uint64(i)))
			recv(t, b)
		}
		captured := px.clientBytes()
		if strings.Contains(string(captured), "very-secret-lock") {
			t.Error("the lock name crossed the wire in clear")
		}
		if len(captured) < preambleLen+6*(headerLen+16) {
			t.Fatalf("captured only %d bytes", len(captured))
		}
		r := dialRaw(t, b.Addr())
		r.Write(captured)
		expectClosed(t, r)
		testutil.WaitFor(t, wait, "replay refused", func() bool { return b.Stats().HandshakeFailures == 1 })
		expectNothing(t, b)
		if st := b.Stats(); st.FramesReceived != 5 || st.Accepts != 1 {
			t.Errorf("stats: %+v", st)
		}
	})
	for name, hook := range map[string]func(i int, f []byte) [][]byte{
		"duplicate frame": func(i int, f []byte) [][]byte {
			if i == 3 {
				return [][]byte{f, f}
			}
			return [][]byte{f}
		},
		"flipped bit": func(i int, f []byte) [][]byte {
			if i == 4 {
				g := append([]byte(nil), f...)
				g[len(g)-20] ^= 1
				return [][]byte{g}
			}
			return [][]byte{f}
		},
		"earlier frame again": func() func(i int, f []byte) [][]byte {
			var first []byte
			return func(i int, f []byte) [][]byte {
				if i == 1 {
					first = f
				}
				if i == 4 {
					return [][]byte{first}
				}
				return [][]byte{f}
			}
		}(),
	} {
		t.Run(name, func(t *testing.T) {
			b := newT(t, "b", key1)
			a := newT(t, "a", key1)
			px := newProxy(t, b.Addr(), hook)
			a.AddPeer("b", b.cfg.Incarnation, px.Addr())
			expectConnected(t, a, "b")
			// Frames 1..3 (after the hello) are messages 1..3.
			for i := uint64(1); i <= 3; i++ {
				a.Send(msg(a, b, "l", i))
				if in := recv(t, b); in.Msg.Time != i {
					t.Fatalf("got %v, want %d", in.Msg, i)
				}
			}
			a.Send(msg(a, b, "l", 4)) // frame 4: tampered with
			testutil.WaitFor(t, wait, "bad frame", func() bool { return b.Stats().BadFrames == 1 })
			expectConnected(t, a, "b")
			a.Send(msg(a, b, "l", 5))
			// Message 4 was lost with the connection unless a noticed the
			// break before writing it; the replayed or altered frame never
			// arrives.
			in := recv(t, b)
			if in.Msg.Time == 4 {
				in = recv(t, b)
			}
			if in.Msg.Time != 5 {
				t.Fatalf("after reconnect got %v, want 5", in.Msg)
			}
			expectNothing(t, b)
		})
	}
}

// A connection sending faster than MaxFrameRate, and connections beyond
// MaxConns, are closed and counted; others go on.
func TestFlood(t *testing.T) {
	b := newT(t, "b", nil, func(c *Config) { c.MaxFrameRate = 100; c.MaxConns = 4 })
	a := newT(t, "a", nil)
	a.AddPeer("b", b.cfg.Incarnation, b.Addr())
	expectConnected(t, a, "b")

	c, err := rawHandshake(t, b.Addr(), nil, "x", 1, "b")
	if err != nil {
		t.Fatal(err)
	}
	var frames []byte
	for i := range 1000 {
		buf, _ := appendMessage([]byte{0, 0, 0, 0}, mutex.Message{Type: mutex.MsgRequest, From: "x", FromIncarnation: 1, To: "b", Lock: "f", Time: uint64(i)})
		frames = append(frames, c.send.seal(buf)...)
	}
	go c.conn.Write(frames)
	n := 0
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for in := range b.Incoming() {
			if in.Msg.From == "x" {
				n++
			}
			if in.Msg.From == "a" {
				return
			}
		}
	}()
	expectClosed(t, c.conn)
	testutil.WaitFor(t, wait, "flood counted", func() bool { return b.Stats().Floods == 1 })
	a.Send(msg(a, b, "after", 1))
	select {
	case <-drained:
	case <-time.After(wait):
		t.Fatal("a's message did not arrive after the flood")
	}
	if n < 100 || n >= 1000 {
		t.Errorf("delivered %d flood frames, want the burst (100) and not all 1000", n)
	}

	// Connections: a's inbound one is 1 of the 4 allowed... b has a's
	// connection; 3 more stalled ones fill it, the next are refused.
	var raws []net.Conn
	for range 5 {
		raws = append(raws, dialRaw(t, b.Addr()))
	}
	testutil.WaitFor(t, wait, "refused connections", func() bool { return b.Stats().RejectedConns >= 2 })
	for _, r := range raws {
		r.Close()
	}
	testutil.WaitFor(t, wait, "slots freed", func() bool { return b.Stats().InboundConns == 1 })
	a.Send(msg(a, b, "after", 2))
	if in := recv(t, b); in.Msg.Time != 2 {
		t.Fatalf("got %v", in.Msg)
	}
}

// A peer that stops reading does not wedge us: the write deadline drops
// the connection, and other peers are served meanwhile.
func TestWriteDeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { conn.Close() })
			// Do the server handshake by hand, then never read again.
			pre, _ := newPreamble(modePlain)
			conn.Write(pre.append(nil))
			buf := make([]byte, preambleLen+headerLen+64)
			conn.SetReadDeadline(time.Now().Add(wait))
			n := 0
			for n < preambleLen+headerLen {
				k, err := conn.Read(buf[n:])
				if err != nil {
					return
				}
				n += k
			}
			plain, _ := newFrameCipher(nil, dirServerToClient)
			conn.Write(plain.seal(appendHello([]byte{0, 0, 0, 0}, kindWelcome, hello{Name: "slow", Incarnation: 1})))
			accepted <- conn
		}
	}()
	a := newT(t, "a", nil, func(c *Config) { c.WriteTimeout = 200 * time.Millisecond; c.QueueLen = 100000 })
	b := newT(t, "b", nil)
	a.AddPeer("slow", 1, ln.Addr().String())
	a.AddPeer("b", b.cfg.Incarnation, b.Addr())
	expectConnected(t, a, "slow", "b")
	big := strings.Repeat("x", 255)
	for i := range 50000 { // ~14 MB: more than the socket buffers hold
		a.Send(mutex.Message{Type: mutex.MsgRequest, From: "a", FromIncarnation: a.cfg.Incarnation, To: "slow", ToIncarnation: 1, Lock: big, Time: uint64(i)})
	}
	a.Send(msg(a, b, "fine", 1))
	if in := recv(t, b); in.Msg.Lock != "fine" {
		t.Fatalf("got %v", in.Msg)
	}
	testutil.WaitFor(t, wait, "slow peer dropped", func() bool { return a.Stats().Disconnects >= 1 })
	if st := a.Stats(); st.DroppedUnsent == 0 {
		t.Errorf("stats: %+v", st)
	}
}

func TestSendDrops(t *testing.T) {
	// A peer that cannot be reached: its queue fills, the rest is dropped.
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	a := newT(t, "a", nil, func(c *Config) { c.QueueLen = 10 })
	a.AddPeer("z", 1, deadAddr)
	for i := range 25 {
		a.Send(mutex.Message{Type: mutex.MsgRequest, From: "a", FromIncarnation: a.cfg.Incarnation, To: "z", Lock: "l", Time: uint64(i)})
	}
	a.Send(mutex.Message{Type: mutex.MsgRequest, From: "a", FromIncarnation: a.cfg.Incarnation, To: "nobody"})
	a.Send(mutex.Message{Type: mutex.MsgRequest, From: "someone-else", To: "z"})
	a.Send(mutex.Message{Type: mutex.MaxMsgType + 1, From: "a", FromIncarnation: a.cfg.Incarnation, To: "z"})
	st := a.Stats()
	if st.DroppedQueueFull != 15 || st.Queued != 10 || st.DroppedNoPeer != 1 || st.DroppedInvalid != 2 {
		t.Errorf("stats: %+v", st)
	}
	testutil.WaitFor(t, wait, "redials", func() bool { return a.Stats().DialFailures >= 3 })

	// Flush cannot finish while the peer is unreachable.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := a.Flush(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Flush = %v, want deadline exceeded", err)
	}
	// Removing the peer discards its queue; Flush has nothing to wait for.
	a.RemovePeer("z")
	if err := a.Flush(context.Background()); err != nil {
		t.Errorf("Flush after RemovePeer = %v", err)
	}
	if st := a.Stats(); st.Peers != 0 || st.Queued != 0 {
		t.Errorf("stats after RemovePeer: %+v", st)
	}
}

// AddPeer with a new address and incarnation re-targets the connection;
// queued messages follow.
func TestRetarget(t *testing.T) {
	a := newT(t, "a", key1)
	b1 := newT(t, "b", key1)
	a.AddPeer("b", b1.cfg.Incarnation, b1.Addr())
	expectConnected(t, a, "b")
	a.Send(msg(a, b1, "one", 1))
	recv(t, b1)

	b2 := newT(t, "b", key1, func(c *Config) { c.Incarnation = 777 })
	a.AddPeer("b", 777, b2.Addr())
	expectConnected(t, a, "b")
	a.Send(msg(a, b2, "two", 2))
	if in := recv(t, b2); in.Msg.Lock != "two" || in.Msg.ToIncarnation != 777 {
		t.Fatalf("got %v", in.Msg)
	}
	expectNothing(t, b1)
	// A transport listening where another name is expected is refused.
	a.AddPeer("c", 1, b1.Addr())
	testutil.WaitFor(t, wait, "wrong name refused", func() bool { return b1.Stats().HandshakeFailures >= 1 })
}

// Flush returns once the queue is written; Close ends every goroutine.
func TestFlushCloseNoLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		a, err := Listen(Config{Name: "a", Incarnation: 1, ListenAddr: "127.0.0.1:0", Key: key1})
		if err != nil {
			t.Fatal(err)
		}
		b, err := Listen(Config{Name: "b", Incarnation: 2, ListenAddr: "127.0.0.1:0", Key: key1})
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		defer b.Close()
		link(a, b)
		for i := range 1000 {
			a.Send(mutex.Message{Type: mutex.MsgReply, From: "a", FromIncarnation: 1, To: "b", ToIncarnation: 2, Lock: "l", Time: uint64(i)})
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := a.Flush(ctx); err != nil {
			t.Fatalf("Flush: %v", err)
		}
		if st := a.Stats(); st.FramesSent+st.DroppedUnsent != 1000 || st.Queued != 0 {
			t.Errorf("after Flush: %+v", st)
		}
		// Close with connections up, a half-open handshake, and messages
		// still being delivered (nobody reads b.Incoming past its buffer).
		stall, err := net.Dial("tcp", b.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer stall.Close()
		if err := a.Close(); err != nil {
			t.Errorf("close a: %v", err)
		}
		if err := b.Close(); err != nil {
			t.Errorf("close b: %v", err)
		}
		for range a.Connected() { // closed by Close
		}
		if err := a.Flush(context.Background()); !errors.Is(err, ErrClosed) {
			t.Errorf("Flush after Close = %v, want ErrClosed", err)
		}
	}()
	deadline := time.Now().Add(wait)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d before, %d after Close:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A storm of garbage connections is counted one by one, but its warnings
// are rate-limited, the suppressed ones counted in the next warning.
func TestGarbageStormLogsLimited(t *testing.T) {
	var logs testutil.SyncBuffer
	b := newT(t, "b", nil, func(c *Config) { c.Logger = testLogger(t, &logs) })
	const n = 200
	start := time.Now()
	for range n {
		g := dialRaw(t, b.Addr())
		g.Write([]byte("GET / HTTP/1.0\r\n\r\n........................................"))
		g.Close()
	}
	testutil.WaitFor(t, wait, "all counted", func() bool { return b.Stats().HandshakeFailures == n })
	lines := strings.Count(logs.String(), "inbound handshake failed")
	if limit := warnRate + int(time.Since(start).Seconds()*warnRate) + 1; lines > limit || lines >= n {
		t.Errorf("%d warnings for %d bad connections (limit %d)", lines, n, limit)
	}
	testutil.WaitFor(t, wait, "a warning counting the suppressed ones", func() bool {
		g := dialRaw(t, b.Addr())
		g.Write([]byte("garbage garbage garbage garbage garbage garbage"))
		expectClosed(t, g)
		return strings.Contains(logs.String(), "suppressed=")
	})
}

// TestQueueOverflowReconnects: a message dropped because its peer's queue is
// full can only be recovered by the driver's re-send on Connected, so an
// overflow must lead to a new connection. The overflow is forced: a proxy
// in front of b stops reading a's first connection after the hello, so a's
// writer blocks once the socket buffers are full and its queue of one
// fills.
func TestQueueOverflowReconnects(t *testing.T) {
	b := newT(t, "b", nil)
	stall := make(chan struct{})
	px := newProxy(t, b.Addr(), func(i int, frame []byte) [][]byte {
		if i >= 1 {
			<-stall // the writer is blocked on purpose
		}
		return [][]byte{frame}
	})
	t.Cleanup(func() { close(stall) }) // before the proxy's cleanup waits for it
	a := newT(t, "a", nil, func(c *Config) { c.QueueLen = 1 })
	a.AddPeer("b", b.cfg.Incarnation, px.Addr())
	expectConnected(t, a, "b")
	// Bounded: the kernel buffers of one loopback connection hold a few
	// MiB, far fewer than this many messages.
	const bound = 2_000_000
	deadline := time.Now().Add(wait)
	for i := 0; i < bound && a.Stats().DroppedQueueFull == 0 && time.Now().Before(deadline); i++ {
		a.Send(msg(a, b, "x", uint64(i+1)))
	}
	if a.Stats().DroppedQueueFull == 0 {
		t.Fatalf("no message dropped with the writer blocked (%+v)", a.Stats())
	}
	expectConnected(t, a, "b")
}

// A peer whose lock port cannot be reached while messages wait for it is
// a warning naming the peer and its address (Serf may call it alive, and
// every lock it is asked about stalls); one with nothing queued is not.
// PeerStates tells which peers are connected.
func TestUnreachablePeerWarns(t *testing.T) {
	deadAddr := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}
	zAddr, yAddr := deadAddr(), deadAddr()
	var logs testutil.SyncBuffer
	a := newT(t, "a", nil, func(c *Config) { c.Logger = testLogger(t, &logs) })
	a.AddPeer("y", 5, yAddr) // unreachable, nothing to send
	a.AddPeer("z", 7, zAddr) // unreachable, a message waits
	a.Send(mutex.Message{Type: mutex.MsgRequest, From: "a", FromIncarnation: a.cfg.Incarnation, To: "z", ToIncarnation: 7, Lock: "l", Time: 1})
	want := fmt.Sprintf("peer=z incarnation=7 addr=%s", zAddr)
	testutil.WaitFor(t, wait, "a warning about z", func() bool {
		for l := range strings.Lines(logs.String()) {
			if strings.Contains(l, "level=WARN") && strings.Contains(l, "unreachable") && strings.Contains(l, want) {
				return true
			}
		}
		return false
	})
	testutil.WaitFor(t, wait, "failed attempts to y", func() bool {
		for _, ps := range a.PeerStates() {
			if ps.Name == "y" {
				return ps.FailedAttempts >= 3
			}
		}
		return false
	})
	if strings.Contains(logs.String(), "peer=y") {
		t.Errorf("warned about a peer with nothing queued:\n%s", logs.String())
	}
	b := newT(t, "b", nil)
	a.AddPeer("b", b.cfg.Incarnation, b.Addr())
	expectConnected(t, a, "b")
	got := a.PeerStates()
	if len(got) != 3 || got[0].Name != "b" || got[1].Name != "y" || got[2].Name != "z" {
		t.Fatalf("PeerStates: %+v", got)
	}
	if b := got[0]; !b.Connected || b.FailedAttempts != 0 || b.Queued != 0 {
		t.Errorf("b: %+v", b)
	}
	if z := got[2]; z.Connected || z.Queued != 1 || z.FailedAttempts < 2 || z.Incarnation != 7 || z.Addr != zAddr {
		t.Errorf("z: %+v", z)
	}
}

// The welcome must come from the incarnation we were told to reach: a
// peer restarted at the same address is another peer.
func TestWelcomeIncarnation(t *testing.T) {
	a := newT(t, "a", key1)
	b := newT(t, "b", key1)
	a.AddPeer("b", b.cfg.Incarnation+1, b.Addr())
	testutil.WaitFor(t, wait, "the handshake to fail", func() bool { return a.Stats().HandshakeFailures >= 1 })
	if st := a.Stats(); st.Connects != 0 {
		t.Fatalf("connected to another incarnation: %+v", st)
	}
	a.AddPeer("b", b.cfg.Incarnation, b.Addr())
	expectConnected(t, a, "b")
	a.Send(msg(a, b, "x", 1))
	if in := recv(t, b); in.Msg.Lock != "x" {
		t.Fatalf("got %v", in.Msg)
	}
}
