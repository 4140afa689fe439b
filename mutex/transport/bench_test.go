package transport

import (
	"bytes"
	"encoding/gob"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/dlockfs/dlockfs/mutex"
)

var benchMsg = mutex.Message{
	Type: mutex.MsgRequest, From: "node-a", FromIncarnation: 0x5eed1234abcd, To: "node-b", ToIncarnation: 0x5eed9876fedc,
	Lock: "build-lock", Time: 123456, ReqTime: 123456,
}

// BenchmarkCodec measures the payload codec alone and the whole frame path
// (encode, seal, open, decode) with and without a key.
func BenchmarkCodec(b *testing.B) {
	buf := make([]byte, 0, 1024)
	b.Run("encode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf, _ = appendMessage(buf[:0], benchMsg)
		}
		b.ReportMetric(float64(len(buf)), "bytes/msg")
	})
	enc, _ := appendMessage(nil, benchMsg)
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodeMessage(enc, plainString); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode-interned", func(b *testing.B) {
		intern := func(p []byte) string {
			switch string(p) {
			case "node-a":
				return "node-a"
			case "node-b":
				return "node-b"
			case "build-lock":
				return "build-lock"
			}
			return string(p)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodeMessage(enc, intern); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encode+decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			buf, _ = appendMessage(buf[:0], benchMsg)
			if _, err := decodeMessage(buf, plainString); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, key := range [][]byte{nil, key3, key1} {
		b.Run("frame-"+keyName(key), func(b *testing.B) {
			var sk []byte
			if key != nil {
				sk = sessionKey(key, [nonceLen]byte{1}, [nonceLen]byte{2})
			}
			send, _ := newFrameCipher(sk, dirClientToServer)
			recv, _ := newFrameCipher(sk, dirClientToServer)
			b.ReportAllocs()
			for b.Loop() {
				buf, _ = appendMessage(append(buf[:0], 0, 0, 0, 0), benchMsg)
				frame := send.seal(buf)
				p, err := recv.open(frame[:headerLen], frame[headerLen:])
				if err != nil {
					b.Fatal(err)
				}
				if _, err := decodeMessage(p, plainString); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(buf)), "bytes/frame")
		})
	}
}

func reportLatency(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	q := func(f float64) float64 {
		return float64(lat[min(len(lat)-1, int(f*float64(len(lat))))].Nanoseconds()) / 1e3
	}
	b.ReportMetric(q(0.50), "p50-µs")
	b.ReportMetric(q(0.99), "p99-µs")
}

// BenchmarkRoundTrip measures a message going A→B and an answer B→A:
// through two transports (plaintext and keyed), and, for reference in the
// same run, over one raw loopback TCP connection pair echoing the same
// number of bytes.
func BenchmarkRoundTrip(b *testing.B) {
	frame, _ := appendMessage([]byte{0, 0, 0, 0}, benchMsg)
	size := len(frame)
	b.Run("raw-tcp", func(b *testing.B) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		done := make(chan struct{})
		go func() {
			defer close(done)
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			buf := make([]byte, size)
			for {
				if _, err := io.ReadFull(c, buf); err != nil {
					return
				}
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
		}()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		buf := make([]byte, size)
		lat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for range b.N {
			start := time.Now()
			if _, err := c.Write(frame); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, buf); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(start))
		}
		b.StopTimer()
		c.Close()
		<-done
		reportLatency(b, lat)
	})
	for _, key := range [][]byte{nil, key3, key1} {
		b.Run("transport-"+keyName(key), func(b *testing.B) {
			x, y := benchPair(b, key)
			go func() {
				for in := range y.Incoming() {
					m := in.Msg
					m.From, m.FromIncarnation, m.To, m.ToIncarnation = m.To, m.ToIncarnation, m.From, m.FromIncarnation
					m.Type = mutex.MsgReply
					y.Send(m)
				}
			}()
			m := benchMsg
			m.From, m.FromIncarnation, m.To, m.ToIncarnation = "a", 1, "b", 2
			// Warm up both connections.
			x.Send(m)
			<-x.Incoming()
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				x.Send(m)
				<-x.Incoming()
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			reportLatency(b, lat)
		})
	}
}

// BenchmarkThroughput measures one-way messages A→B, sent as fast as Send
// takes them (the writer batches them).
func BenchmarkThroughput(b *testing.B) {
	for _, key := range [][]byte{nil, key1} {
		b.Run(keyName(key), func(b *testing.B) {
			x, y := benchPair(b, key)
			m := benchMsg
			m.From, m.FromIncarnation, m.To, m.ToIncarnation = "a", 1, "b", 2
			x.Send(m)
			<-y.Incoming()
			b.ResetTimer()
			start := time.Now()
			go func() {
				for i := range b.N {
					x.Send(m)
					// Stay under the queue's bound instead of dropping.
					for i%256 == 0 && x.Stats().Queued > DefaultQueueLen/2 {
						time.Sleep(10 * time.Microsecond)
					}
				}
			}()
			for range b.N {
				<-y.Incoming()
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
			if d := x.Stats().DroppedQueueFull; d != 0 {
				b.Fatalf("%d dropped", d)
			}
		})
	}
}

func benchPair(b *testing.B, key []byte) (*Transport, *Transport) {
	b.Helper()
	mk := func(name string, inc uint64) *Transport {
		tr, err := Listen(Config{Name: name, Incarnation: inc, ListenAddr: "127.0.0.1:0", Key: key,
			MaxFrameRate: -1, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { tr.Close() })
		return tr
	}
	x, y := mk("a", 1), mk("b", 2)
	x.AddPeer("b", 2, y.Addr())
	y.AddPeer("a", 1, x.Addr())
	return x, y
}

// BenchmarkCodecAlternatives encodes and decodes the same message with the
// standard library's generic encoders, for comparison with BenchmarkCodec.
func BenchmarkCodecAlternatives(b *testing.B) {
	b.Run("json", func(b *testing.B) {
		b.ReportAllocs()
		var n int
		for b.Loop() {
			enc, err := json.Marshal(benchMsg)
			if err != nil {
				b.Fatal(err)
			}
			var m mutex.Message
			if err := json.Unmarshal(enc, &m); err != nil {
				b.Fatal(err)
			}
			n = len(enc)
		}
		b.ReportMetric(float64(n), "bytes/msg")
	})
	b.Run("gob-stream", func(b *testing.B) {
		// A gob stream sends the type once; each message after that is
		// just its values.
		var buf bytes.Buffer
		enc, dec := gob.NewEncoder(&buf), gob.NewDecoder(&buf)
		var m mutex.Message
		if err := enc.Encode(benchMsg); err != nil {
			b.Fatal(err)
		}
		if err := dec.Decode(&m); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		var n int
		for b.Loop() {
			if err := enc.Encode(benchMsg); err != nil {
				b.Fatal(err)
			}
			n = buf.Len()
			if err := dec.Decode(&m); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(n), "bytes/msg")
	})
}
