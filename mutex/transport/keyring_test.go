package transport

import (
	"testing"

	"github.com/hashicorp/memberlist"
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
// Serf keyrings: the established connections carry on through install and
// use; new connections use the primary key; a remove closes the
// connections made with the removed key, which are redialled with the new
// one at once; and afterwards a client with only the old key is refused.
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
	// a switches first: its connection to b stays on key1 meanwhile; a new
	// connection b->a (b still dials with key1) is accepted by a.
	if err := ka.UseKey(key2); err != nil {
		t.Fatal(err)
	}
	exchange("after use on a", 3)
	killOutbound(t, b, "a")
	expectConnected(t, b, "a")
	exchange("b redialled a with key1", 4)
	if err := kb.UseKey(key2); err != nil {
		t.Fatal(err)
	}
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
	// a->b and b->a (redialled by b) were made with key1.
	if n := a.CheckKeys() + b.CheckKeys(); n == 0 {
		t.Error("CheckKeys closed nothing after key1 was removed")
	}
	expectConnected(t, a, "b")
	expectConnected(t, b, "a")
	exchange("after remove", 6)

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
