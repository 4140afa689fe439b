package transport

import (
	"testing"

	"github.com/hashicorp/memberlist"

	"github.com/dlockfs/dlockfs/mutex/testutil"
)

func newKeyring(t *testing.T, primary []byte, others ...[]byte) *memberlist.Keyring {
	t.Helper()
	kr, err := memberlist.NewKeyring(others, primary)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

func withKeyring(kr Keyring) func(*Config) {
	return func(c *Config) { c.Key = nil; c.Keyring = kr }
}

// TestKeyRotation follows Serf's rotation (install everywhere, use
// everywhere, remove the old key everywhere) on two transports sharing
// Serf keyrings: the established connections carry on through install; at
// use each outgoing connection switches to the new primary key in band
// (rekey.go), without being dropped; so the remove of the old key closes
// nothing and no connection is redialled; new connections use the primary
// key; and afterwards a client with only the old key is refused.
func TestKeyRotation(t *testing.T) {
	ka, kb := newKeyring(t, key1), newKeyring(t, key1)
	a, b := newT(t, "a", nil, withKeyring(ka)), newT(t, "b", nil, withKeyring(kb))
	link(a, b)
	expectConnected(t, a, "b")
	expectConnected(t, b, "a")
	exchange := func(step string, time uint64) {
		t.Helper()
		a.Send(msg(a, b, "l", time))
		b.Send(msg(b, a, "l", time))
		if in := recv(t, b); in.Msg.Time != time {
			t.Fatalf("%s: b got %v", step, in.Msg)
		}
		if in := recv(t, a); in.Msg.Time != time {
			t.Fatalf("%s: a got %v", step, in.Msg)
		}
	}
	exchange("before", 1)

	for _, kr := range []*memberlist.Keyring{ka, kb} {
		if err := kr.AddKey(key2); err != nil {
			t.Fatal(err)
		}
	}
	exchange("after install", 2)
	if n := a.Stats().Rekeys + b.Stats().Rekeys; n != 0 {
		t.Errorf("%d rekeys after install, want 0 (the primary key did not change)", n)
	}
	// a switches first: its connection to b moves to key2 in band; a new
	// connection b->a (b still dials with key1) is accepted by a.
	if err := ka.UseKey(key2); err != nil {
		t.Fatal(err)
	}
	exchange("after use on a", 3)
	testutil.WaitFor(t, wait, "a's connection to b to be rekeyed", func() bool { return a.Stats().Rekeys == 1 })
	killOutbound(t, b, "a")
	expectConnected(t, b, "a")
	exchange("b redialled a with key1", 4)
	if err := kb.UseKey(key2); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, wait, "b's connection to a to be rekeyed", func() bool { return b.Stats().Rekeys == 1 })
	exchange("after use everywhere", 5)
	if n := a.Stats().Connects + b.Stats().Connects; n != 3 {
		t.Errorf("%d connects before the remove, want 3 (install and use redial nothing)", n)
	}
	if n := a.CheckKeys() + b.CheckKeys(); n != 0 {
		t.Errorf("CheckKeys closed %d connections with every key still installed", n)
	}

	for _, kr := range []*memberlist.Keyring{ka, kb} {
		if err := kr.RemoveKey(key1); err != nil {
			t.Fatal(err)
		}
	}
	// Both connections were rekeyed: nothing is on key1 any more.
	if n := a.CheckKeys() + b.CheckKeys(); n != 0 {
		t.Errorf("CheckKeys closed %d connections after key1 was removed, want 0 (all rekeyed)", n)
	}
	if n := a.Stats().OldKeyConns + b.Stats().OldKeyConns; n != 0 {
		t.Errorf("%d connections on the removed key", n)
	}
	exchange("after remove", 6)
	sa, sb := a.Stats(), b.Stats()
	if sa.Connects+sb.Connects != 3 || sa.Disconnects+sb.Disconnects != 1 || sa.Accepts+sb.Accepts != 3 {
		t.Errorf("connections were redialled: connects %d, disconnects %d, accepts %d; want 3, 1 (the one killed), 3",
			sa.Connects+sb.Connects, sa.Disconnects+sb.Disconnects, sa.Accepts+sb.Accepts)
	}

	// A peer with the old key only is refused both ways.
	if _, err := rawHandshake(t, a.Addr(), key1, "b", b.cfg.Incarnation, "a"); err == nil {
		t.Error("handshake with the removed key succeeded")
	}
	if _, err := rawHandshake(t, a.Addr(), key2, "b", b.cfg.Incarnation, "a"); err != nil {
		t.Errorf("handshake with the new primary key: %v", err)
	}
	if err := ka.RemoveKey(key2); err == nil {
		t.Error("memberlist let the primary key be removed")
	}
}

// TestRekeyToUnknownKey: a client whose new primary key the server does
// not have sends its rekey; the server closes the connection (a bad
// frame) and refuses the redial with that key: nothing is accepted on a
// key the server lacks.
func TestRekeyToUnknownKey(t *testing.T) {
	ka := newKeyring(t, key1)
	a := newT(t, "a", nil, withKeyring(ka))
	b := newT(t, "b", key1)
	link(a, b)
	expectConnected(t, a, "b")
	a.Send(msg(a, b, "l", 1))
	recv(t, b)
	if err := ka.AddKey(key2); err != nil {
		t.Fatal(err)
	}
	if err := ka.UseKey(key2); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, wait, "b to close the connection rekeyed to a key it lacks", func() bool {
		return b.Stats().BadFrames == 1 && a.Stats().Disconnects == 1
	})
	testutil.WaitFor(t, wait, "a's redial with key2 to be refused", func() bool { return b.Stats().HandshakeFailures > 0 })
	a.Send(msg(a, b, "l", 2))
	expectNothing(t, b)
}

// TestKeyringAnyInstalledKey: a server accepts a hello sealed with any of
// its keys, not only its primary one.
func TestKeyringAnyInstalledKey(t *testing.T) {
	b := newT(t, "b", nil, withKeyring(newKeyring(t, key1, key2, key3)))
	for _, k := range [][]byte{key1, key2, key3} {
		if _, err := rawHandshake(t, b.Addr(), k, "a", 1, "b"); err != nil {
			t.Errorf("hello sealed with key %s: %v", KeyID(k), err)
		}
	}
	if _, err := rawHandshake(t, b.Addr(), make([]byte, 32), "a", 1, "b"); err == nil {
		t.Error("hello sealed with a key not installed was accepted")
	}
}

func TestKeyringConfig(t *testing.T) {
	cfg := Config{Name: "a", ListenAddr: "127.0.0.1:0", Key: key1, Keyring: newKeyring(t, key1)}
	if err := cfg.Validate(); err == nil {
		t.Error("Key and Keyring together validated")
	}
}
