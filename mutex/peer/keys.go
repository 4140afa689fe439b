package peer

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/hashicorp/serf/serf"
)

// Key rotation. A peer has one keyring (a *memberlist.Keyring) that Serf
// encrypts gossip with and that the lock channel reads at each handshake:
// it accepts a connection sealed with any installed key and dials with the
// primary one. Serf's KeyManager applies InstallKey, UseKey and RemoveKey
// on every member through an internal query, each member changing its own
// keyring, so the lock channel follows on every member with no protocol of
// its own: there is no second, lock-channel broadcast that could reach some
// members and not others, or apply in another order. When the primary key
// changes (use), each member's established lock connections switch to it
// in band, without being dropped (transport's rekey.go; within 20 ms, at
// once on the member that ran the command), so the remove that follows
// closes nothing and no lock message waits for a reconnection. A
// connection still on a removed key (a member that missed the use) is
// closed and redialled with the primary key (see transport.CheckKeys).

// Errors of the key operations.
var (
	// ErrNotEncrypted: the peer runs without a cluster key, so it has no
	// keyring to change (a plaintext cluster cannot become encrypted
	// while it runs).
	ErrNotEncrypted = errors.New("peer: the cluster runs without a key (plaintext): no keyring to change")
	// ErrPrimaryKey: RemoveKey of the key in use; make another key
	// primary (UseKey) first.
	ErrPrimaryKey = errors.New("peer: refusing to remove the primary key: install and use another key first")
	// ErrKeyIncomplete: not every member confirmed the operation (see the
	// report's Messages); run it again once they are reachable.
	ErrKeyIncomplete = errors.New("peer: not every member applied the key operation")
)

// KeyOp is a keyring operation.
type KeyOp string

// The keyring operations, those of Serf's KeyManager.
const (
	KeyList    KeyOp = "list"    // every member's keys
	KeyInstall KeyOp = "install" // add a key (not used for sending yet)
	KeyUse     KeyOp = "use"     // make an installed key the primary one
	KeyRemove  KeyOp = "remove"  // remove a key that is not primary
)

// KeyReport is what the members answered to a keyring operation.
type KeyReport struct {
	Op KeyOp `json:"op"`
	// Nodes counts the members Serf knows alive; Responses those that
	// answered; Errors those that answered with an error.
	Nodes     int `json:"nodes"`
	Responses int `json:"responses"`
	Errors    int `json:"errors"`
	// Messages holds each member's error or warning, by node name.
	Messages map[string]string `json:"messages,omitempty"`
	// Keys and PrimaryKeys (list only) count, per base64 key, the members
	// that have it installed, or as their primary key.
	Keys        map[string]int `json:"keys,omitempty"`
	PrimaryKeys map[string]int `json:"primary_keys,omitempty"`
}

// Keys runs a keyring operation on every member of the cluster (key is
// ignored by KeyList). It returns [ErrNotEncrypted] on a plaintext peer,
// [ErrPrimaryKey] for a KeyRemove of this peer's primary key, and
// [ErrKeyIncomplete] (wrapped, with the report) when a member failed or did
// not answer within Serf's query timeout. It blocks for up to that timeout
// (GossipInterval × 16 × log10(N+1): 3.2 s with the lan profile); ctx is only
// checked before it starts.
func (p *Peer) Keys(ctx context.Context, op KeyOp, key []byte) (KeyReport, error) {
	rep := KeyReport{Op: op}
	if err := ctx.Err(); err != nil {
		return rep, fmt.Errorf("peer: keys %s: %w", op, err)
	}
	if p.keyring == nil || p.serf == nil {
		return rep, ErrNotEncrypted
	}
	if op != KeyList {
		switch len(key) {
		case 16, 24, 32:
		default:
			return rep, fmt.Errorf("peer: keys %s: the key is %d bytes, want 16, 24 or 32", op, len(key))
		}
	}
	if op == KeyRemove && bytes.Equal(key, p.keyring.GetPrimaryKey()) {
		return rep, ErrPrimaryKey
	}
	km := p.serf.KeyManager()
	b64 := base64.StdEncoding.EncodeToString(key)
	var (
		resp *serf.KeyResponse
		err  error
	)
	switch op {
	case KeyList:
		resp, err = km.ListKeys()
	case KeyInstall:
		resp, err = km.InstallKey(b64)
	case KeyUse:
		resp, err = km.UseKey(b64)
	case KeyRemove:
		resp, err = km.RemoveKey(b64)
	default:
		return rep, fmt.Errorf("peer: keys: unknown operation %q", op)
	}
	if resp != nil {
		rep.Nodes, rep.Responses, rep.Errors = resp.NumNodes, resp.NumResp, resp.NumErr
		rep.Messages, rep.Keys, rep.PrimaryKeys = resp.Messages, resp.Keys, resp.PrimaryKeys
	}
	if op == KeyUse {
		// Our own connections switch now; every other member's within
		// its transport's poll of the primary key.
		if r, ok := p.tr.(interface{ Rekey() }); ok {
			r.Rekey()
		}
	}
	if op == KeyRemove {
		// Our own connections on the removed key go now; every other
		// member's within its transport's KeyCheckInterval.
		if c, ok := p.tr.(interface{ CheckKeys() int }); ok {
			c.CheckKeys()
		}
	}
	if err != nil {
		if resp == nil {
			return rep, fmt.Errorf("peer: keys %s: %w", op, err)
		}
		return rep, fmt.Errorf("%w: keys %s: %w", ErrKeyIncomplete, op, err)
	}
	if op != KeyList {
		p.log.Info("keyring changed on every member", "op", string(op), "members", rep.Nodes)
	}
	return rep, nil
}
