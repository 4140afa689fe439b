package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dlockfs/dlockfs/mutex"
)

// manyLocks makes n locks with long names and lists, so that an answer
// spans several frames.
func manyLocks(n int) []mutex.LockStatus {
	locks := make([]mutex.LockStatus, n)
	for i := range locks {
		locks[i] = mutex.LockStatus{
			Name: fmt.Sprintf("lock-%04d-%s", i, strings.Repeat("x", 200)), Phase: mutex.Phase(i % 3),
			Token: uint64(i) * 7, ReqTime: uint64(i) + 1, Try: i%5 == 0, Shared: i%3 == 1, Waiting: i % 4,
			Queued: []string{"b", "c"}, Awaiting: []string{strings.Repeat("n", 255)},
		}
	}
	return locks
}

func TestAnswerCodecRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 300} {
		in := StatusAnswer{Node: "a", Incarnation: 42, Lamport: 9, Majority: true, LeaseValid: n > 0, Locks: manyLocks(n)}
		frames := appendAnswerFrames(in)
		if n == 300 && len(frames) < 2 {
			t.Fatalf("%d locks in %d frame(s): want several", n, len(frames))
		}
		var out StatusAnswer
		for i, f := range frames {
			if len(f)-headerLen > answerBudget {
				t.Fatalf("frame %d: %d bytes, over %d", i, len(f)-headerLen, answerBudget)
			}
			more, err := decodeAnswer(f[headerLen:], &out)
			if err != nil {
				t.Fatalf("frame %d: %v", i, err)
			}
			if more != (i < len(frames)-1) {
				t.Fatalf("frame %d of %d: more = %v", i, len(frames), more)
			}
		}
		if out.Locks == nil {
			out.Locks = []mutex.LockStatus{}
		}
		if in.Locks == nil {
			in.Locks = []mutex.LockStatus{}
		}
		if !reflect.DeepEqual(in, out) {
			t.Fatalf("%d locks: round trip differs:\n in %+v\nout %+v", n, in.Locks[:min(n, 1)], out.Locks[:min(n, 1)])
		}
	}
}

func TestAnswerCodecRejectsMalformed(t *testing.T) {
	good := appendAnswerFrames(StatusAnswer{Node: "a", Locks: manyLocks(2)})[0][headerLen:]
	cases := map[string][]byte{
		"empty":       {},
		"truncated":   good[:len(good)-3],
		"trailing":    append(append([]byte{}, good...), 0),
		"kind":        append([]byte{wireVersion<<4 | kindHello}, good[1:]...),
		"version":     append([]byte{good[0], good[1], queryVersion + 1}, good[3:]...),
		"flags":       append([]byte{good[0], good[1], good[2], 0x80}, good[4:]...),
		"huge counts": {wireVersion<<4 | kindQuery, queryAnswer, queryVersion, 0, 1, 'a', 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f},
	}
	for name, b := range cases {
		var ans StatusAnswer
		if _, err := decodeAnswer(b, &ans); !errors.Is(err, errMalformed) {
			t.Errorf("%s: err = %v, want malformed", name, err)
		}
	}
	var ans StatusAnswer
	buf := appendStr([]byte{wireVersion<<4 | kindQuery, queryError, queryVersion}, "no")
	if _, err := decodeAnswer(buf, &ans); !errors.Is(err, ErrQueryRefused) {
		t.Errorf("error frame: err = %v, want ErrQueryRefused", err)
	}
}

func TestQueryOpenRoundTrip(t *testing.T) {
	h := hello{Name: "a", Incarnation: 7, ToName: "b"}
	b := appendQueryOpen(nil, h, queryStatus)
	got, what, err := decodeClientOpen(b)
	if err != nil || what != queryStatus || got.Name != "a" || got.Incarnation != 7 || got.ToName != "b" {
		t.Fatalf("decode = %+v, %d, %v", got, what, err)
	}
	if _, what, err := decodeClientOpen(appendHello(nil, kindHello, h)); err != nil || what != 0 {
		t.Fatalf("a hello: what %d, err %v", what, err)
	}
	bad := appendQueryOpen(nil, h, 9)
	if _, _, err := decodeClientOpen(bad); !errors.Is(err, errMalformed) {
		t.Fatalf("unknown query: err = %v", err)
	}
}

// TestQueryStatus runs status queries between real transports on
// 127.0.0.1, encrypted: a multi-frame answer arrives whole, the lock
// connections are untouched (messages still flow, no reconnection), a
// peer without a handler refuses, and an unknown peer is an error.
func TestQueryStatus(t *testing.T) {
	a := newT(t, "a", key1)
	b := newT(t, "b", key1)
	link(a, b)
	expectConnected(t, a, "b")
	expectConnected(t, b, "a")
	locks := manyLocks(200)
	asked := make(chan string, 1)
	b.HandleStatus(func(ctx context.Context, from string) (StatusAnswer, error) {
		asked <- from
		return StatusAnswer{Lamport: 5, Locks: locks}, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	ans, err := a.QueryStatus(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	if from := <-asked; from != "a" {
		t.Errorf("handler saw from = %q", from)
	}
	if ans.Node != "b" || ans.Incarnation != b.cfg.Incarnation || ans.Lamport != 5 || len(ans.Locks) != len(locks) {
		t.Fatalf("answer: node %q inc %d lamport %d, %d locks", ans.Node, ans.Incarnation, ans.Lamport, len(ans.Locks))
	}
	if !reflect.DeepEqual(ans.Locks, locks) {
		t.Fatal("locks differ")
	}
	// The lock channel is as it was.
	a.Send(msg(a, b, "x", 1))
	if in := recv(t, b); in.Msg.Lock != "x" {
		t.Fatalf("got %v", in.Msg)
	}
	if s := a.Stats(); s.Connects != 1 || s.Disconnects != 0 {
		t.Fatalf("a's lock connection was redialled: %+v", s)
	}
	if s := b.Stats(); s.Accepts != 1 {
		t.Fatalf("b: accepts %d, want 1 (a query connection is not a lock connection)", s.Accepts)
	}

	if _, err := b.QueryStatus(ctx, "a"); !errors.Is(err, ErrQueryRefused) {
		t.Fatalf("a has no handler: err = %v", err)
	}
	if _, err := a.QueryStatus(ctx, "nobody"); err == nil {
		t.Fatal("query of an unknown peer succeeded")
	}
}

// TestQueryStatusSilentPeer: a peer that accepts but never answers (as a
// SIGSTOPped one does: the kernel completes the TCP handshake) makes the
// query return when its context ends.
func TestQueryStatusSilentPeer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	held := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held <- c
		}
	}()
	defer func() {
		for len(held) > 0 {
			(<-held).Close()
		}
	}()
	a := newT(t, "a", key1, func(c *Config) { c.HandshakeTimeout = time.Minute })
	a.AddPeer("b", 1, ln.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = a.QueryStatus(ctx, "b")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the deadline", err)
	}
}

// TestRekeyMalformed: a rekey frame that is truncated, too long, of
// another version or on a plaintext connection is refused (the caller
// closes the connection); one naming an unknown key is refused as
// unauthenticated.
func TestRekeyMalformed(t *testing.T) {
	tr := newT(t, "a", nil, withKeyring(newKeyring(t, key1)))
	sess, err := newFrameCipher(sessionKey(key1, [nonceLen]byte{1}, [nonceLen]byte{2}), dirClientToServer)
	if err != nil {
		t.Fatal(err)
	}
	good := func() []byte {
		b := []byte{wireVersion<<4 | kindQuery, queryRekey, queryVersion}
		b = append(b, make([]byte, nonceLen)...)
		id := keyIDBytes(key1)
		return append(b, id[:]...)
	}
	unknown := good()
	id2 := keyIDBytes(key2)
	copy(unknown[len(unknown)-keyIDLen:], id2[:])
	for name, tc := range map[string]struct {
		payload []byte
		plain   bool
		want    error
	}{
		"truncated": {payload: good()[:10], want: errMalformed},
		"trailing":  {payload: append(good(), 0), want: errMalformed},
		"version":   {payload: append([]byte{wireVersion<<4 | kindQuery, queryRekey, 9}, good()[3:]...), want: errMalformed},
		"query op":  {payload: append([]byte{wireVersion<<4 | kindQuery, queryAnswer}, good()[2:]...), want: errMalformed},
		"plaintext": {payload: good(), plain: true, want: errMalformed},
		"unknown":   {payload: unknown, want: errAuth},
	} {
		fr := &frameReader{c: sess}
		if tc.plain {
			fr.c = &frameCipher{}
		}
		ic := &inConn{key: key1}
		if err := tr.serverRekey(fr, ic, tc.payload); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", name, err, tc.want)
		}
	}
	fr, ic := &frameReader{c: sess}, &inConn{key: key1}
	if err := tr.serverRekey(fr, ic, good()); err != nil || fr.c == sess {
		t.Fatalf("a good rekey: err %v, cipher switched %v", err, fr.c != sess)
	}
}
