package testutil

import (
	"bytes"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// WaitFor polls cond until it holds, and fails the test if timeout passes
// first. The polls start 1 ms apart and back off to 20 ms. It returns how
// long the wait took.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for i := 1; !cond(); i++ {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(min(time.Duration(i)*time.Millisecond, 20*time.Millisecond))
	}
	return time.Since(start)
}

// SyncBuffer is a bytes.Buffer safe for concurrent writers and readers: a
// log sink a test reads while the code under test writes.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what has been written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// FreeAddr returns 127.0.0.1:PORT with PORT free for both TCP and UDP (Serf
// needs both) and PORT+1 free for TCP (a peer's lock channel defaults to the
// next port) at the time of the call.
//
// PORT is even and lies below the kernel's ephemeral range, so no two calls
// hand out overlapping pairs and no outgoing connection elsewhere on the
// machine takes PORT+1 between the check and the test's bind: asking the
// kernel for port 0 did both, and a peer then found its lock port taken.
//
// Two calls made before either port is bound may return the same port:
// take addresses that are bound together (a peer's --bind and
// --lock-bind) from one FreeAddrs call instead.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return FreeAddrs(t, 1)[0]
}

// FreeAddrs returns n distinct addresses, each as FreeAddr gives. CI once
// saw a peer's --bind and --lock-bind drawn as the same port by two
// FreeAddr calls, and the peer then failed to bind its own second socket.
func FreeAddrs(t testing.TB, n int) []string {
	t.Helper()
	lo, hi := 10000, ephemeralLow()
	taken := make(map[int]bool, n)
	addrs := make([]string, 0, n)
	for range 200 * n {
		if len(addrs) == n {
			break
		}
		port := lo + 2*rand.IntN((hi-lo)/2)
		if !taken[port] && portsFree(port) {
			taken[port] = true
			addrs = append(addrs, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		}
	}
	if len(addrs) < n {
		t.Fatalf("only %d of %d free TCP+UDP port pairs on 127.0.0.1 in [%d, %d) in %d tries", len(addrs), n, lo, hi, 200*n)
	}
	return addrs
}

// portsFree says whether TCP and UDP port and TCP port+1 can be bound on
// 127.0.0.1 now.
func portsFree(port int) bool {
	addr := func(p int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)) }
	l, err := net.Listen("tcp", addr(port))
	if err != nil {
		return false
	}
	defer l.Close()
	u, err := net.ListenPacket("udp", addr(port))
	if err != nil {
		return false
	}
	defer u.Close()
	l1, err := net.Listen("tcp", addr(port+1))
	if err != nil {
		return false
	}
	return l1.Close() == nil
}

// ephemeralLow is the first port of the kernel's ephemeral range, or 32768
// (Linux's default) when /proc does not say.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n < 12000 {
		return 32768
	}
	return n
}
