package main

import (
	"strings"
	"testing"

	"github.com/dlockfs/dlockfs/cmd/dlockfs/internal/cli"
	"github.com/dlockfs/dlockfs/mutex/testutil"
)

// TestJoinTimeoutZero: --join-timeout 0 tries each address once. With
// nobody there mount exits 11 after one attempt (the message says so) and
// mounts nothing; with a live member the one attempt joins.
func TestJoinTimeoutZero(t *testing.T) {
	dir := t.TempDir()
	addrs := testutil.FreeAddrs(t, 2)
	nobody := addrs[0]
	r := dlockfs(t, "mount", "--state-dir", t.TempDir(), "--bind", addrs[1], "--gossip", "fast",
		"--join", nobody, "--join-timeout", "0", dir)
	wantCode(t, r, cli.ExitJoin, "one join attempt to nobody")
	for _, want := range []string{"after 1 attempt(s)", "--join-timeout 0 tries each address once"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	if isMountpoint(t, dir) {
		t.Fatal("mounted although the join failed")
	}

	a := startNode(t, "a")
	b := startNode(t, "b", "--join", a.bind, "--join-timeout", "0")
	if !strings.Contains(b.line, "cluster of 2") {
		t.Fatalf("b joined with one attempt, but its line is %q", b.line)
	}
}
