package transport

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"slices"
)

// Keyring is the set of cluster keys the lock channel accepts, and the
// primary one it dials with. *memberlist.Keyring (Serf's keyring) is one:
// give the transport the keyring Serf uses, and the lock channel follows
// every InstallKey, UseKey and RemoveKey that Serf's KeyManager applies on
// this peer, with no protocol of its own. Implementations must be safe for
// concurrent use; GetKeys returns the primary key first.
type Keyring interface {
	GetPrimaryKey() []byte
	GetKeys() [][]byte
}

// staticKeyring is the keyring of a [Config.Key]: one key, forever.
type staticKeyring struct{ key []byte }

func (s staticKeyring) GetPrimaryKey() []byte { return s.key }
func (s staticKeyring) GetKeys() [][]byte     { return [][]byte{s.key} }

// KeyID names a key in logs and listings without revealing it: the first
// 8 hex digits of its SHA-256.
func KeyID(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:4])
}

func hasKey(keys [][]byte, key []byte) bool {
	return slices.ContainsFunc(keys, func(k []byte) bool { return bytes.Equal(k, key) })
}

// CheckKeys closes every connection, inbound or outbound, whose handshake
// used a key that is no longer in the keyring: after a RemoveKey no channel
// stays open on the removed key. Outgoing connections are redialled at once
// with the primary key (and announced on Connected, so what they carried is
// sent again). The transport also calls it every [Config.KeyCheckInterval].
// It returns how many connections it closed.
func (t *Transport) CheckKeys() int {
	stale, kick := t.staleConns()
	for _, ic := range stale {
		t.mu.RLock()
		key := ic.key // a rekey (rekey.go) changes it under t.mu
		t.mu.RUnlock()
		t.log.Info("transport: closing an inbound connection on a removed key", "remote", ic.remote, "key", KeyID(key))
		ic.conn.Close()
	}
	for _, p := range kick {
		t.log.Info("transport: redialling a peer connected with a removed key", "peer", p.name)
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
	return len(stale) + len(kick)
}

// staleConns returns the established connections whose handshake used a
// key no longer in the keyring.
func (t *Transport) staleConns() (stale []*inConn, kick []*peer) {
	if t.keys == nil {
		return nil, nil
	}
	keys := t.keys.GetKeys()
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, ic := range t.inbound {
		if !hasKey(keys, ic.key) {
			stale = append(stale, ic)
		}
	}
	for _, p := range t.peers {
		p.mu.Lock()
		if p.conn != nil && !hasKey(keys, p.connKey) {
			kick = append(kick, p)
		}
		p.mu.Unlock()
	}
	return stale, kick
}
