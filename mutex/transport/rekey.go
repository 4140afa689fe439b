package transport

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"
)

// In-band rekeying. When the keyring's primary key changes (a key
// rotation's "use"), each outgoing lock connection switches to it without
// being dropped: the client sends a rekey frame, sealed with the current
// session key,
//
//	header (kind 13) | byte op (4 = rekey) | byte queryVersion (1) |
//	32 random bytes (the new client nonce) | 4 bytes KeyID of the new key
//
// and seals every later frame with the session key
// HMAC-SHA256(newKey, "dlockfs-v1" || serverChallenge || newNonce) cut to
// the key's length, its counter starting again at 0. The server, on
// reading it, finds the installed key with that KeyID and opens what
// follows with the same derivation (a KeyID it does not know closes the
// connection, and the client redials with its primary key). The
// connection's key is then the new one, so the later "remove" of the old
// key closes nothing: no lock message waits for a reconnection, and no
// hand-over takes more than its own round. A server that predates
// rekeying closes the connection on the unknown frame; the client redials
// with the primary key, as it did before rekeying existed. A "use" of a
// key that some member lacks (its install failed there) therefore breaks
// the lock connections to that member at once, as it breaks Serf's gossip
// to it: install on every member first ('dlockfs keys' says when one
// failed).
const (
	queryRekey = 4

	keyIDLen = 4

	// primaryCheckEvery is how often the transport looks for a new
	// primary key (a memberlist keyring has no change notification): the
	// idle connections are rekeyed within it, busy ones at their next
	// batch.
	primaryCheckEvery = 20 * time.Millisecond
)

// keyIDBytes is the raw form of KeyID.
func keyIDBytes(key []byte) [keyIDLen]byte {
	var id [keyIDLen]byte
	b, _ := hex.DecodeString(KeyID(key))
	copy(id[:], b)
	return id
}

// watchPrimary tells every outgoing connection when the primary key
// changes, until Close.
func (t *Transport) watchPrimary() {
	defer t.wg.Done()
	tick := time.NewTicker(primaryCheckEvery)
	defer tick.Stop()
	last := t.keys.GetPrimaryKey()
	for {
		select {
		case <-tick.C:
		case <-t.ctx.Done():
			return
		}
		if k := t.keys.GetPrimaryKey(); !bytes.Equal(k, last) {
			last = k
			t.Rekey()
		}
	}
}

// Rekey makes every established outgoing connection whose key is not the
// keyring's primary key switch to it in band (see rekey.go), without
// dropping it. The transport also does so by itself within 20 ms of a
// change of the primary key.
func (t *Transport) Rekey() {
	if t.keys == nil {
		return
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, p := range t.peers {
		select {
		case p.rekey <- struct{}{}:
		default:
		}
	}
}

// rekeyIfNeeded switches the connection's send cipher to the primary key
// if it is not the one the connection uses, by writing a rekey frame to bw
// (not flushed). It returns the cipher to seal the next frames with.
func (t *Transport) rekeyIfNeeded(p *peer, bw interface{ Write([]byte) (int, error) }, send *frameCipher) (*frameCipher, error) {
	if t.keys == nil || send.aead == nil {
		return send, nil
	}
	key := t.keys.GetPrimaryKey()
	p.mu.Lock()
	cur := p.connKey
	p.mu.Unlock()
	if bytes.Equal(key, cur) {
		return send, nil
	}
	var nonce [nonceLen]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return send, fmt.Errorf("transport: rekey nonce: %w", err)
	}
	id := keyIDBytes(key)
	buf := append([]byte{0, 0, 0, 0}, wireVersion<<4|kindQuery, queryRekey, queryVersion)
	buf = append(buf, nonce[:]...)
	buf = append(buf, id[:]...)
	if _, err := bw.Write(send.seal(buf)); err != nil {
		return send, err
	}
	next, err := newFrameCipher(sessionKey(key, send.challenge, nonce), dirClientToServer)
	if err != nil {
		return send, err
	}
	next.challenge = send.challenge
	p.mu.Lock()
	p.connKey = key
	p.mu.Unlock()
	t.st.rekeys.Add(1)
	t.log.Debug("transport: connection rekeyed in band", "peer", p.name, "key", KeyID(key), "old_key", KeyID(cur))
	return next, nil
}

// serverRekey handles a control frame on an inbound lock connection: a
// rekey switches fr to the key it names. Anything else is an error (the
// caller closes the connection).
func (t *Transport) serverRekey(fr *frameReader, ic *inConn, payload []byte) error {
	d := newDecoder(payload)
	d.header()
	if op := d.byte(); !d.bad && op != queryRekey {
		d.setBad(fmt.Sprintf("control op %d on a lock connection", op))
	}
	if v := d.byte(); !d.bad && v != queryVersion {
		d.setBad(fmt.Sprintf("control version %d", v))
	}
	var nonce [nonceLen]byte
	var id [keyIDLen]byte
	if !d.bad && len(d.b) != nonceLen+keyIDLen {
		d.setBad("rekey length")
	}
	if !d.bad {
		copy(nonce[:], d.b[:nonceLen])
		copy(id[:], d.b[nonceLen:])
		d.b = nil
	}
	if err := d.end(); err != nil {
		return err
	}
	if t.keys == nil || fr.c.aead == nil {
		return fmt.Errorf("%w: rekey on a plaintext connection", errMalformed)
	}
	var key []byte
	for _, k := range t.keys.GetKeys() {
		if keyIDBytes(k) == id {
			key = k
			break
		}
	}
	if key == nil {
		return fmt.Errorf("%w: rekey to key %x, which is not installed here", errAuth, id)
	}
	next, err := newFrameCipher(sessionKey(key, fr.c.challenge, nonce), dirClientToServer)
	if err != nil {
		return err
	}
	next.challenge = fr.c.challenge
	fr.c = next
	t.mu.Lock()
	old := ic.key
	ic.key = key
	t.mu.Unlock()
	t.log.Debug("transport: inbound connection rekeyed in band", "remote", ic.remote, "key", KeyID(key), "old_key", KeyID(old))
	return nil
}
