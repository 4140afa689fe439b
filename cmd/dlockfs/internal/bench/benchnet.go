package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/dlockfs/dlockfs/cmd/dlockfs/internal/localcluster"
	"github.com/dlockfs/dlockfs/mutex"
	"github.com/dlockfs/dlockfs/mutex/transport"
)

// netBench is a round trip and a fan-out measured in this process.
type netBench struct {
	RoundTrip   LatencyStats `json:"round_trip"`
	FanOut      LatencyStats `json:"fan_out"`
	FanOutPeers int          `json:"fan_out_peers"`
}

// benchNetWarmup is the round trips done before measuring.
const benchNetWarmup = 200

// benchTCP measures a loopback TCP round trip of a 64-byte message on a
// persistent connection to an echo server, and a fan-out: the same message
// written to fan echo servers, then every echo read.
func benchTCP(ops, fan int) (netBench, error) {
	nb := netBench{FanOutPeers: fan}
	var servers []*echoServer
	defer func() {
		for _, s := range servers {
			s.close()
		}
	}()
	conns := make([]net.Conn, max(fan, 1))
	for i := range conns {
		s, err := newEchoServer()
		if err != nil {
			return nb, err
		}
		servers = append(servers, s)
		c, err := net.Dial("tcp", s.ln.Addr().String())
		if err != nil {
			return nb, fmt.Errorf("tcp bench: %w", err)
		}
		s.track(c)
		conns[i] = c
	}
	msg := make([]byte, 64)
	buf := make([]byte, 64)
	round := func(cs []net.Conn) error {
		for _, c := range cs {
			if _, err := c.Write(msg); err != nil {
				return fmt.Errorf("tcp bench: %w", err)
			}
		}
		for _, c := range cs {
			if _, err := io.ReadFull(c, buf); err != nil {
				return fmt.Errorf("tcp bench: %w", err)
			}
		}
		return nil
	}
	var err error
	if nb.RoundTrip, err = timeRounds(ops, func() error { return round(conns[:1]) }); err != nil {
		return nb, err
	}
	if fan > 0 {
		if nb.FanOut, err = timeRounds(ops, func() error { return round(conns[:fan]) }); err != nil {
			return nb, err
		}
	}
	return nb, nil
}

// timeRounds runs round benchNetWarmup times untimed, then ops times timed.
func timeRounds(ops int, round func() error) (LatencyStats, error) {
	for range benchNetWarmup {
		if err := round(); err != nil {
			return LatencyStats{}, err
		}
	}
	ns := make([]int64, 0, ops)
	start := time.Now()
	for range ops {
		t0 := time.Now()
		if err := round(); err != nil {
			return LatencyStats{}, err
		}
		ns = append(ns, time.Since(t0).Nanoseconds())
	}
	return summarize(ns, time.Since(start)), nil
}

// echoServer answers every 64 bytes it reads with the same bytes.
type echoServer struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func newEchoServer() (*echoServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("tcp bench: %w", err)
	}
	s := &echoServer{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.track(c)
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				buf := make([]byte, 64)
				for {
					if _, err := io.ReadFull(c, buf); err != nil {
						return
					}
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	return s, nil
}

// track remembers a connection to close with the server.
func (s *echoServer) track(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conns = append(s.conns, c)
}

func (s *echoServer) close() {
	s.ln.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// benchTransport measures dlockfs's own lock channel (mutex/transport,
// with key if not nil) in this process: a request answered by an echoing
// peer, and a request to fan peers answered by all. This is the network
// part of one lock acquisition: goroutine hand-offs, framing, encryption
// and TCP.
func benchTransport(ctx context.Context, ops, fan int, key []byte) (netBench, error) {
	nb := netBench{FanOutPeers: fan}
	n := max(fan, 1)
	mk := func(name string, inc uint64) (*transport.Transport, error) {
		t, err := transport.Listen(transport.Config{Name: name, Incarnation: inc, ListenAddr: "127.0.0.1:0", Key: key})
		if err != nil {
			return nil, fmt.Errorf("transport bench: %w", err)
		}
		return t, nil
	}
	src, err := mk("bench-src", 1)
	if err != nil {
		return nb, err
	}
	var echoes []*transport.Transport
	var wg sync.WaitGroup
	defer func() {
		src.Close()
		for _, t := range echoes {
			t.Close()
		}
		wg.Wait()
	}()
	for i := range n {
		name := fmt.Sprintf("bench-echo-%d", i)
		t, err := mk(name, uint64(i+2))
		if err != nil {
			return nb, err
		}
		echoes = append(echoes, t)
		src.AddPeer(name, uint64(i+2), t.Addr())
		t.AddPeer("bench-src", 1, src.Addr())
		wg.Add(1)
		go func() {
			defer wg.Done()
			for in := range t.Incoming() {
				m := in.Msg
				t.Send(mutex.Message{Type: mutex.MsgReply, From: name, FromIncarnation: uint64(i + 2),
					To: m.From, ToIncarnation: m.FromIncarnation, Lock: m.Lock, Time: m.Time, ReqTime: m.ReqTime})
			}
		}()
	}
	// Wait until every outgoing connection is up, both ways.
	deadline := time.Now().Add(localcluster.FormTimeout)
	for {
		up := src.Stats().OutboundConns == n
		for _, t := range echoes {
			up = up && t.Stats().OutboundConns == 1
		}
		if up {
			break
		}
		if time.Now().After(deadline) {
			return nb, errors.New("transport bench: connections not up in time")
		}
		select {
		case <-ctx.Done():
			return nb, ctx.Err()
		case <-time.After(localcluster.Poll):
		}
	}
	var seq uint64
	round := func(k int) error {
		seq++
		for i := range k {
			src.Send(mutex.Message{Type: mutex.MsgRequest, From: "bench-src", FromIncarnation: 1,
				To: fmt.Sprintf("bench-echo-%d", i), ToIncarnation: uint64(i + 2), Lock: "bench", Time: seq, ReqTime: seq})
		}
		for range k {
			select {
			case _, ok := <-src.Incoming():
				if !ok {
					return errors.New("transport bench: closed")
				}
			case <-time.After(5 * time.Second):
				return errors.New("transport bench: no reply in 5 s")
			}
		}
		return nil
	}
	if nb.RoundTrip, err = timeRounds(ops, func() error { return round(1) }); err != nil {
		return nb, err
	}
	if fan > 0 {
		if nb.FanOut, err = timeRounds(ops, func() error { return round(fan) }); err != nil {
			return nb, err
		}
	}
	return nb, nil
}
