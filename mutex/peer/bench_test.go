package peer

import (
	"bufio"
	"context"
	"io"
	"net"
	"os"
	"slices"
	"testing"
	"time"
)

// BenchmarkLockUnlock measures an uncontended Lock+Unlock on a 3-peer
// cluster (real Serf, real TCP lock channel, on 127.0.0.1) beside the
// floor it is built on, measured in the same run: a plain loopback TCP
// fan-out round trip to 2 peers over persistent connections (write 32 bytes
// to both, read 32 bytes back from both). Metrics: p50/p99 of each, and
// the ratio of the medians.
//
//	go test -run '^$' -bench LockUnlock -benchtime 5000x ./mutex/peer
func BenchmarkLockUnlock(b *testing.B) {
	for _, keep := range []bool{false, true} {
		name := "plain"
		if keep {
			name = "keep-permissions"
		}
		b.Run(name, func(b *testing.B) {
			tcp := tcpFanout(b, 2, 2000)
			c := newCluster(b, listenTCP)
			c.keep = keep
			// DLOCKFS_BENCH_QUORUM=none measures plain mode, for the
			// cost of majority mode (the default).
			c.quorum = os.Getenv("DLOCKFS_BENCH_QUORUM")
			if keep {
				c.quorum = QuorumNone // the fast path is plain mode only
			}
			c.profile = ProfileLAN // quiet gossip: less noise in the figures
			ps := c.startN(3)
			p := ps[0]
			ctx := context.Background()
			for range 100 { // warm up connections
				g, err := p.Lock(ctx, "bench")
				if err != nil {
					b.Fatal(err)
				}
				if err := p.Unlock(g); err != nil {
					b.Fatal(err)
				}
			}
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				t0 := time.Now()
				g, err := p.Lock(ctx, "bench")
				if err != nil {
					b.Fatal(err)
				}
				if err := p.Unlock(g); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			lp50, lp99 := percentiles(lat)
			tp50, tp99 := percentiles(tcp)
			b.ReportMetric(float64(lp50.Nanoseconds()), "lock-p50-ns")
			b.ReportMetric(float64(lp99.Nanoseconds()), "lock-p99-ns")
			b.ReportMetric(float64(tp50.Nanoseconds()), "tcp2-p50-ns")
			b.ReportMetric(float64(tp99.Nanoseconds()), "tcp2-p99-ns")
			b.ReportMetric(float64(lp50)/float64(tp50), "x-tcp-p50")
		})
	}
}

// tcpFanout measures n round trips of a 32-byte write to each of peers
// echo servers and the 32-byte answers, over persistent loopback
// connections.
func tcpFanout(b *testing.B, peers, n int) []time.Duration {
	b.Helper()
	var conns []net.Conn
	var readers []*bufio.Reader
	for range peers {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { ln.Close() })
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			_, _ = io.Copy(c, c)
		}()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		conns = append(conns, c)
		readers = append(readers, bufio.NewReader(c))
	}
	msg := make([]byte, 32)
	buf := make([]byte, 32)
	lat := make([]time.Duration, 0, n)
	for i := range n + 100 {
		t0 := time.Now()
		for _, c := range conns {
			if _, err := c.Write(msg); err != nil {
				b.Fatal(err)
			}
		}
		for _, r := range readers {
			if _, err := io.ReadFull(r, buf); err != nil {
				b.Fatal(err)
			}
		}
		if i >= 100 {
			lat = append(lat, time.Since(t0))
		}
	}
	return lat
}

func percentiles(d []time.Duration) (p50, p99 time.Duration) {
	if len(d) == 0 {
		return 0, 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2], s[min(len(s)-1, len(s)*99/100)]
}
