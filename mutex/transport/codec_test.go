package transport

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/dlockfs/dlockfs/mutex"
)

func sampleMessages() []mutex.Message {
	long := strings.Repeat("n", mutex.MaxNameLen)
	return []mutex.Message{
		{Type: mutex.MsgRequest, From: "a", FromIncarnation: 1, To: "b", ToIncarnation: 2, Lock: "lock", Time: 12, ReqTime: 12, Try: true},
		{Type: mutex.MsgReply, From: "node-1", FromIncarnation: 0x1234567890abcdef, To: "node-2", ToIncarnation: 99, Lock: "x", Time: 1 << 40, ReqTime: 7},
		{Type: mutex.MsgBusy, From: "a", To: "b", Lock: "ü-ñ", Time: 3, ReqTime: 2},
		{Type: mutex.MsgRequest, From: "a", FromIncarnation: 1, To: "b", ToIncarnation: 2, Lock: "lock", Time: 13, ReqTime: 13, Shared: true},
		{Type: mutex.MsgRequest, From: "a", FromIncarnation: 1, To: "b", ToIncarnation: 2, Lock: "lock", Time: 14, ReqTime: 14, Try: true, Shared: true},
		{Type: mutex.MsgCancel, From: "a", To: "b", Lock: "l", ReqTime: ^uint64(0), Time: ^uint64(0)},
		{Type: mutex.MsgHello, From: "a", FromIncarnation: 5, To: "b", ToIncarnation: 6, Time: 1},
		{Type: mutex.MsgRequest, From: long, FromIncarnation: ^uint64(0), To: long, ToIncarnation: ^uint64(0), Lock: long, Time: ^uint64(0), ReqTime: ^uint64(0), Try: true},
		{Type: mutex.MsgLease, From: "a", To: "b", ReqTime: 3, Config: 9, Session: 2, Reserve: 1 << 50},
		{Type: mutex.MsgLeaseGrant, From: "a", To: "b", ReqTime: 3, Config: 9, TargetInc: 2, Reserve: 7},
		{Type: mutex.MsgEvicted, From: "a", To: "b", Target: "c", TargetInc: ^uint64(0), ReqTime: 4, Reserve: 8, Config: 9},
		{Type: mutex.MsgConfig, From: "a", To: "b", Config: ^uint64(0), Voters: []string{"a", "b", long}},
		{Type: mutex.MsgConfig, From: "a", To: "b", Config: 1, Voters: fullVoters()},
		{Type: mutex.MsgConfigAck, From: "a", To: "b", Config: 1},
		{Type: mutex.MsgDeferred, From: "a", To: "b", Lock: "l", ReqTime: 5, Time: 6, Seen: ^uint64(0)},
		{Type: mutex.MsgSuspect, From: "a", To: "b", Target: "c", Lock: "l", ReqTime: 5, Config: 2, Session: 1},
		{Type: mutex.MsgProbe, From: "a", To: "b", Target: "c", Lock: "l", ReqTime: 5, Try: true},
		{Type: mutex.MsgBreak, From: "a", To: "b", Target: "c", Lock: "l", ReqTime: 5, Reserve: 9},
		{Type: mutex.MsgBreak, From: "a", To: "b", Lock: "l", ReqTime: 5, Try: true, TargetInc: 1, Reserve: 9},
	}
}

func fullVoters() []string {
	vs := make([]string, mutex.MaxVoters)
	for i := range vs {
		vs[i] = fmt.Sprintf("%03d", i) + strings.Repeat("v", mutex.MaxNameLen-3)
	}
	return vs
}

func TestCodecRoundTrip(t *testing.T) {
	for _, m := range sampleMessages() {
		b, err := appendMessage(nil, m)
		if err != nil {
			t.Fatalf("encode %v: %v", m, err)
		}
		if len(b) > maxPayload {
			t.Errorf("encoding of %v is %d bytes, over maxPayload %d", m, len(b), maxPayload)
		}
		got, err := decodeMessage(b, plainString)
		if err != nil {
			t.Fatalf("decode %v: %v", m, err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Errorf("round trip: got %v, want %v", got, m)
		}
	}
	// The typical request is small.
	b, _ := appendMessage(nil, sampleMessages()[0])
	if len(b) > 24 {
		t.Errorf("request encodes to %d bytes: %x", len(b), b)
	}
}

func TestCodecRejectsUnencodable(t *testing.T) {
	long := strings.Repeat("n", mutex.MaxNameLen+1)
	for _, m := range []mutex.Message{
		{Type: 0, From: "a", To: "b"},
		{Type: mutex.MaxMsgType + 1, From: "a", To: "b"},
		{Type: mutex.MsgConfig, From: "a", To: "b", Voters: []string{long}},
		{Type: mutex.MsgConfig, From: "a", To: "b", Voters: make([]string, mutex.MaxVoters+1)},
		{Type: mutex.MsgRequest, From: long, To: "b"},
		{Type: mutex.MsgRequest, From: "a", To: "b", Lock: long},
	} {
		if _, err := appendMessage(nil, m); err == nil {
			t.Errorf("encode %v: no error", m)
		}
	}
}

// TestCodecSharedFlagCompatible: an exclusive request encodes exactly as
// before shared locks (flags byte 0 or 1), so older peers still read it; the
// Shared flag is bit 1 of the flags byte, and a bit above it is refused.
func TestCodecSharedFlagCompatible(t *testing.T) {
	m := mutex.Message{Type: mutex.MsgRequest, From: "a", To: "b", Lock: "l", Time: 1, ReqTime: 1}
	b, err := appendMessage(nil, m)
	if err != nil {
		t.Fatal(err)
	}
	if b[1] != 0 {
		t.Fatalf("exclusive request flags %#x, want 0", b[1])
	}
	m.Shared = true
	b, _ = appendMessage(nil, m)
	if b[1] != flagShared {
		t.Fatalf("shared request flags %#x, want %#x", b[1], flagShared)
	}
	b[1] |= 4
	if _, err := decodeMessage(b, plainString); !errors.Is(err, errMalformed) {
		t.Fatalf("unknown flag bit 2: %v, want errMalformed", err)
	}
}

func TestCodecRejectsMalformed(t *testing.T) {
	good, _ := appendMessage(nil, sampleMessages()[0])
	mutate := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	cases := map[string][]byte{
		"empty":          {},
		"version 0":      mutate(func(b []byte) []byte { b[0] = 0x01; return b }),
		"version 1":      mutate(func(b []byte) []byte { b[0] = 0x11; return b }),
		"version 2":      mutate(func(b []byte) []byte { b[0] = 0x21; return b }),
		"version 4":      mutate(func(b []byte) []byte { b[0] = 0x41; return b }),
		"kind 0":         mutate(func(b []byte) []byte { b[0] = 0x30; return b }),
		"hello kind":     mutate(func(b []byte) []byte { b[0] = 0x30 | kindHello; return b }),
		"unknown flag":   mutate(func(b []byte) []byte { b[1] = 0x08; return b }),
		"truncated":      good[:len(good)-1],
		"header only":    good[:1],
		"trailing byte":  append(append([]byte(nil), good...), 0),
		"string too big": mutate(func(b []byte) []byte { b[2] = 200; return b }),
		"varint overflow": append(append([]byte{0x31, 0, 1, 'a'},
			0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01), 1, 'b', 0, 0, 0, 0),
	}
	for name, b := range cases {
		if m, err := decodeMessage(b, plainString); !errors.Is(err, errMalformed) {
			t.Errorf("%s (%x): got %v, %v; want errMalformed", name, b, m, err)
		}
	}
}

func TestHelloRoundTrip(t *testing.T) {
	h := hello{Name: "a", Incarnation: 42, ToName: "b"}
	got, err := decodeHello(appendHello(nil, kindHello, h), kindHello)
	if err != nil || got != h {
		t.Fatalf("hello: got %v, %v", got, err)
	}
	w := hello{Name: "b", Incarnation: 7}
	got, err = decodeHello(appendHello(nil, kindWelcome, w), kindWelcome)
	if err != nil || got != w {
		t.Fatalf("welcome: got %v, %v", got, err)
	}
	if _, err := decodeHello(appendHello(nil, kindHello, h), kindWelcome); err == nil {
		t.Error("a hello decoded as a welcome")
	}
	if _, err := decodeHello(appendHello(nil, kindHello, hello{}), kindHello); err == nil {
		t.Error("a hello with an empty name was accepted")
	}
}

// FuzzDecodeMessage checks that the decoder never panics, and that what it
// accepts survives an encode/decode round trip unchanged. Run it with
// go test -fuzz=FuzzDecodeMessage ./mutex/transport; the seeds run in every
// go test.
func FuzzDecodeMessage(f *testing.F) {
	for _, m := range sampleMessages() {
		b, _ := appendMessage(nil, m)
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0x11})
	f.Add([]byte{0x11, 0, 255})
	f.Add(appendHello(nil, kindHello, hello{Name: "a", Incarnation: 1, ToName: "b"}))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMessage(b, plainString)
		if err != nil {
			if !errors.Is(err, errMalformed) {
				t.Fatalf("error does not wrap errMalformed: %v", err)
			}
			return
		}
		enc, err := appendMessage(nil, m)
		if err != nil {
			t.Fatalf("re-encode %v: %v", m, err)
		}
		m2, err := decodeMessage(enc, plainString)
		if err != nil || !reflect.DeepEqual(m2, m) {
			t.Fatalf("round trip of %v: got %v, %v", m, m2, err)
		}
		if len(enc) > len(b) {
			t.Fatalf("re-encoding %x grew to %x", b, enc)
		}
		_, _ = decodeHello(b, kindHello)
		_, _ = decodeHello(b, kindWelcome)
	})
}

// FuzzFrameReader feeds arbitrary bytes to the frame reader of a keyed and
// a plaintext connection: no panic, no frame over the limit accepted.
func FuzzFrameReader(f *testing.F) {
	f.Add([]byte{0, 0, 0, 3, 0x11, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 0, 0})
	f.Add(bytes.Repeat([]byte{0, 0, 0, 16}, 5))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, key := range [][]byte{nil, bytes.Repeat([]byte{7}, 16)} {
			var sk []byte
			if key != nil {
				sk = sessionKey(key, [nonceLen]byte{1}, [nonceLen]byte{2})
			}
			c, err := newFrameCipher(sk, dirClientToServer)
			if err != nil {
				t.Fatal(err)
			}
			fr := newTestFrameReader(b, c, minFrameSize)
			for range 100 {
				p, err := fr.read(true)
				if err != nil {
					break
				}
				if len(p) > minFrameSize {
					t.Fatalf("accepted a %d-byte payload", len(p))
				}
				_, _ = decodeMessage(p, plainString)
			}
		}
	})
}
