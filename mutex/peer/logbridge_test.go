package peer

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// TestSerfLogOutsiderKey: memberlist's ERR lines about gossip we cannot
// decrypt become one WARN naming the address; repeats are counted, not
// logged, until the next window.
func TestSerfLogOutsiderKey(t *testing.T) {
	var buf bytes.Buffer
	l := newSerfLogger(slog.New(slog.NewTextHandler(&buf, nil)))
	for range 3 {
		l.Print("[ERR] memberlist: failed to receive: No installed keys could decrypt the message from=127.0.0.1:41234")
	}
	out := buf.String()
	if strings.Contains(out, "level=ERROR") {
		t.Fatalf("an outsider's key is logged as an error:\n%s", out)
	}
	if n := strings.Count(out, "level=WARN"); n != 1 {
		t.Fatalf("%d warnings for 3 lines in one window, want 1:\n%s", n, out)
	}
	if !strings.Contains(out, "from=127.0.0.1:41234") {
		t.Fatalf("the warning does not name the address:\n%s", out)
	}
}
