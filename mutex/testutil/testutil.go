package testutil

import (
	"bytes"
	"net"
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
// needs both) at the time of the call.
func FreeAddr(t testing.TB) string {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		u, err := net.ListenPacket("udp", addr)
		l.Close()
		if err == nil {
			u.Close()
			return addr
		}
	}
	t.Fatal("no free TCP+UDP port on 127.0.0.1 in 50 tries")
	return ""
}
