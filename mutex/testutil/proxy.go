package testutil

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Proxy forwards the TCP connections made to it on 127.0.0.1 to a target.
// What the server sends goes back unchanged; what a client sends goes
// through the Proxy's forward function, which can stall, drop, swallow or
// rewrite it.
type Proxy struct {
	ln      net.Listener
	target  string
	forward func(conn int, client io.Reader, server io.Writer)

	mu    sync.Mutex
	n     int        // connections accepted
	conns []net.Conn // both ends of each, until Cut
	wg    sync.WaitGroup
}

// NewProxy listens on a free 127.0.0.1 port and forwards to target. For
// connection number conn (0 for the first), forward copies what the client
// sends to the server, returning when it should stop (the server side is
// closed then); nil forwards everything unchanged. The proxy is closed at
// the test's cleanup, which waits for every forward to return: a forward
// that stalls must be released by a cleanup registered after NewProxy.
func NewProxy(t testing.TB, target string, forward func(conn int, client io.Reader, server io.Writer)) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if forward == nil {
		forward = func(_ int, c io.Reader, s io.Writer) { _, _ = io.Copy(s, c) }
	}
	p := &Proxy{ln: ln, target: target, forward: forward}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// Addr returns the proxy's address, IP:PORT.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		n := p.n
		p.n++
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			defer c.Close()
			_, _ = io.Copy(c, s)
		}()
		go func() {
			defer p.wg.Done()
			defer s.Close()
			p.forward(n, c, s)
		}()
	}
}

// Cut closes every connection made so far, both ends.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *Proxy) close() {
	p.ln.Close()
	p.Cut()
	p.wg.Wait()
}
