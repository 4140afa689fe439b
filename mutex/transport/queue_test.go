package transport

import (
	"fmt"
	"testing"
	"time"

	"github.com/dlockfs/dlockfs/mutex"
	"github.com/dlockfs/dlockfs/mutex/testutil"
)

// TestMsgQueue: first in, first out, at most max, its storage let go once
// drained.
func TestMsgQueue(t *testing.T) {
	q := msgQueue{max: 1000, ready: make(chan struct{}, 1)}
	if cap(q.buf) != 0 {
		t.Fatalf("a new queue holds room for %d messages", cap(q.buf))
	}
	for round := range 3 {
		pushed, popped := 0, 0
		push := func() {
			if !q.push(mutex.Message{Lock: fmt.Sprint(pushed)}) {
				t.Fatalf("round %d: push %d refused below the bound", round, pushed)
			}
			pushed++
		}
		for i := range 1000 {
			push()
			if i%3 == 2 { // take some on the way: the room is reused
				m, ok := q.pop()
				if want := fmt.Sprint(popped); !ok || m.Lock != want {
					t.Fatalf("round %d: pop = %q, %v; want %q", round, m.Lock, ok, want)
				}
				popped++
				push()
			}
		}
		if q.push(mutex.Message{Lock: "over"}) {
			t.Fatalf("round %d: push beyond the bound of %d accepted", round, q.max)
		}
		if n := q.len(); n != 1000 {
			t.Fatalf("round %d: len = %d, want 1000", round, n)
		}
		select {
		case <-q.ready:
		default:
			t.Fatalf("round %d: no ready token with messages waiting", round)
		}
		for range 1000 {
			m, ok := q.pop()
			if want := fmt.Sprint(popped); !ok || m.Lock != want {
				t.Fatalf("round %d: pop = %q, %v; want %q", round, m.Lock, ok, want)
			}
			popped++
		}
		if _, ok := q.pop(); ok || q.len() != 0 {
			t.Fatalf("round %d: pop of an empty queue succeeded", round)
		}
		if cap(q.buf) > queueKeep {
			t.Fatalf("round %d: a drained queue keeps room for %d messages (max %d)", round, cap(q.buf), queueKeep)
		}
	}
}

// TestNameCacheIdle: an inbound connection's interned names are dropped
// after it has looked none up for a while, and interning goes on after.
func TestNameCacheIdle(t *testing.T) {
	c := &nameCache{}
	c.start(10 * time.Millisecond)
	defer c.close()
	for i := range 100 {
		c.intern(fmt.Appendf(nil, "lock-%d", i))
	}
	if s := c.intern([]byte("lock-7")); s != "lock-7" {
		t.Fatalf("intern = %q", s)
	}
	testutil.WaitFor(t, 10*time.Second, "the cache of an idle connection to be dropped",
		func() bool { return c.m.Load() == nil })
	if s := c.intern([]byte("lock-8")); s != "lock-8" || c.len() != 1 {
		t.Fatalf("after the drop: intern = %q, %d cached; want lock-8, 1", s, c.len())
	}
}

// TestSendAfterWriteDeadline: a connection whose last batch's write
// deadline has passed (idle for longer than WriteTimeout) still carries
// the next message, written directly by Send, without a reconnection.
func TestSendAfterWriteDeadline(t *testing.T) {
	a := newT(t, "a", []byte("0123456789abcdef"))
	b := newT(t, "b", []byte("0123456789abcdef"))
	a.AddPeer("b", b.cfg.Incarnation, b.Addr())
	expectConnected(t, a, "b")
	a.mu.RLock()
	p := a.peers["b"]
	a.mu.RUnlock()
	for i := range 3 {
		// As writeBatch leaves it, once WriteTimeout has passed.
		testutil.WaitFor(t, wait, "writer up", func() bool {
			p.wmu.Lock()
			defer p.wmu.Unlock()
			return p.w != nil && p.w.conn.SetWriteDeadline(time.Now().Add(-time.Second)) == nil
		})
		for j := range 100 {
			a.Send(msg(a, b, fmt.Sprintf("l%d-%d", i, j), uint64(i*100+j+1)))
		}
		for j := range 100 {
			if in := recv(t, b); in.Msg.Lock != fmt.Sprintf("l%d-%d", i, j) {
				t.Fatalf("round %d: got %v, want l%d-%d (in order)", i, in.Msg, i, j)
			}
		}
	}
	if st := a.Stats(); st.Dials != 1 || st.Disconnects != 0 || st.DroppedUnsent != 0 {
		t.Fatalf("the connection did not carry every message: %+v", st)
	}
}
