package transport

import (
	"context"
	"testing"
	"time"
)

// TestDeliver checks Config.Deliver: every message reaches it, one
// connection's in order, none comes on Incoming, and a Deliver that waits
// on its context is released by Close (so Close does not hang on it).
func TestDeliver(t *testing.T) {
	const n = 200
	got := make(chan Incoming, n)
	block, entered, released := make(chan struct{}), make(chan struct{}), make(chan struct{})
	b := newT(t, "b", key1, func(c *Config) {
		c.Deliver = func(ctx context.Context, in Incoming) {
			if in.Msg.Lock == "block" {
				close(entered)
				select {
				case <-block:
				case <-ctx.Done():
					close(released)
				}
				return
			}
			got <- in
		}
	})
	a := newT(t, "a", key1)
	link(a, b)
	expectConnected(t, a, "b")
	for i := range n {
		a.Send(msg(a, b, "l", uint64(i+1)))
	}
	for i := range n {
		select {
		case in := <-got:
			if in.Msg.Time != uint64(i+1) || in.Msg.From != "a" {
				t.Fatalf("message %d: got %v, want time %d from a", i, in.Msg, i+1)
			}
		case <-time.After(wait):
			t.Fatalf("message %d not delivered within %v", i, wait)
		}
	}
	expectNothing(t, b)

	a.Send(msg(a, b, "block", n+1))
	select {
	case <-entered:
	case <-time.After(wait):
		t.Fatalf("message not delivered within %v", wait)
	}
	closed := make(chan error, 1)
	go func() { closed <- b.Close() }()
	select {
	case <-released:
	case <-time.After(wait):
		t.Fatalf("Close did not end the Deliver waiting on its context within %v", wait)
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(wait):
		t.Fatalf("Close did not return within %v", wait)
	}
}
