package testutil

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// A Proxy forwards both ways through forward, numbers connections from 0,
// and Cut breaks the connections made so far while new ones still work.
func TestProxy(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() { // an echo server
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	px := NewProxy(t, ln.Addr().String(), func(conn int, c io.Reader, s io.Writer) {
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if _, err := fmt.Fprintf(s, "%d:%s", conn, line); err != nil {
				return
			}
		}
	})
	echo := func(c net.Conn, r *bufio.Reader, msg string) (string, error) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, msg+"\n"); err != nil {
			return "", err
		}
		return r.ReadString('\n')
	}
	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", px.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, bufio.NewReader(c)
	}
	c0, r0 := dial()
	if got, err := echo(c0, r0, "a"); err != nil || got != "0:a\n" {
		t.Fatalf("first connection: %q, %v", got, err)
	}
	px.Cut()
	if _, err := echo(c0, r0, "b"); err == nil {
		t.Fatal("a cut connection still echoes")
	}
	c1, r1 := dial()
	if got, err := echo(c1, r1, "c"); err != nil || got != "1:c\n" {
		t.Fatalf("second connection: %q, %v", got, err)
	}
}

func TestWaitFor(t *testing.T) {
	n := 0
	WaitFor(t, 10*time.Second, "three polls", func() bool { n++; return n == 3 })
	if n != 3 {
		t.Fatalf("%d polls", n)
	}
}

func TestFreeAddr(t *testing.T) {
	addr := FreeAddr(t)
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("%s not free: %v", addr, err)
	}
	l.Close()
}

// FreeAddr hands out an even port below the ephemeral range, and a port
// whose next one is taken (a peer's lock channel) is not free.
func TestFreeAddrPairs(t *testing.T) {
	a := FreeAddr(t)
	_, ps, err := net.SplitHostPort(a)
	if err != nil {
		t.Fatal(err)
	}
	var port int
	if _, err := fmt.Sscan(ps, &port); err != nil {
		t.Fatal(err)
	}
	if port%2 != 0 || port >= ephemeralLow() {
		t.Fatalf("FreeAddr gave %s: want an even port below %d", a, ephemeralLow())
	}
	if !portsFree(port) {
		t.Fatalf("%s and the port after it are not free", a)
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", fmt.Sprint(port+1)))
	if err != nil {
		t.Fatalf("the lock port after %s: %v", a, err)
	}
	defer l.Close()
	if portsFree(port) {
		t.Fatalf("portsFree(%d) while TCP port %d is taken", port, port+1)
	}
}

// FreeAddrs never hands out one port twice: drawn one by one, 500 ports
// out of the ~11,000 pairs below the ephemeral range would almost surely
// repeat one (the birthday bound), as a peer's --bind and --lock-bind once
// did in CI.
func TestFreeAddrsDistinct(t *testing.T) {
	addrs := FreeAddrs(t, 500)
	seen := make(map[string]bool, len(addrs))
	for _, a := range addrs {
		if seen[a] {
			t.Fatalf("FreeAddrs gave %s twice", a)
		}
		seen[a] = true
	}
	if len(addrs) != 500 {
		t.Fatalf("FreeAddrs gave %d addresses, want 500", len(addrs))
	}
}
