package cli

import (
	"context"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestSignals: the first signal cancels the context and is First; a later
// one, ForceAfter after it, arrives on Again; after Stop the context is
// done and Stop can be called again.
func TestSignals(t *testing.T) {
	s := NotifySignals(context.Background())
	defer s.Stop()
	if s.First() != nil {
		t.Fatalf("First before any signal: %v", s.First())
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Context().Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the first signal did not cancel the context")
	}
	if s.First() != syscall.SIGINT {
		t.Fatalf("First = %v, want SIGINT", s.First())
	}
	time.Sleep(ForceAfter) // the policy: a repeat within ForceAfter is the same request
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case sig := <-s.Again():
		if sig != syscall.SIGTERM {
			t.Fatalf("Again = %v, want SIGTERM", sig)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a signal ForceAfter after the first did not arrive on Again")
	}
	s.Stop()
	s.Stop()
}
