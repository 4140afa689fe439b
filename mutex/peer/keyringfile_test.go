package peer

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestKeyringPersisted: 3 peers keep their keyrings in files. After a
// rotation from key1 to key2, a peer restarted with only key1 (its old
// key file) comes back with the file's keyring (key2) and rejoins; a new
// peer with key1 and no keyring file is refused; the file holds key2 alone.
func TestKeyringPersisted(t *testing.T) {
	key1, key2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	c := newCluster(t, listenTCP)
	c.key = key1
	files := map[string]string{}
	startWith := func(name string) (*Peer, error) {
		cfg := c.config(name, c.joinAddrs()...)
		if files[name] == "" {
			files[name] = filepath.Join(t.TempDir(), "keyring.json")
		}
		cfg.KeyringFile = files[name]
		return c.startCfg(cfg)
	}
	var ps []*Peer
	for _, n := range []string{"a", "b", "c"} {
		p, err := startWith(n)
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	c.waitConverged()
	if keys, err := readKeyringFile(files["c"]); err != nil || len(keys) != 1 || !bytes.Equal(keys[0], key1) {
		t.Fatalf("c's keyring file at start: %v, %v; want key1", keys, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, op := range []struct {
		op  KeyOp
		key []byte
	}{{KeyInstall, key2}, {KeyUse, key2}, {KeyRemove, key1}} {
		if _, err := ps[0].Keys(ctx, op.op, op.key); err != nil {
			t.Fatalf("keys %s: %v", op.op, err)
		}
	}
	for _, n := range []string{"a", "b", "c"} {
		keys, err := readKeyringFile(files[n])
		if err != nil || len(keys) != 1 || !bytes.Equal(keys[0], key2) {
			t.Fatalf("%s's keyring file after the rotation: %d keys, %v; want key2 alone", n, len(keys), err)
		}
	}

	if err := ps[2].Leave(ctx); err != nil {
		t.Fatal(err)
	}
	// c restarts with key1 (c.key): its keyring file says key2.
	p, err := startWith("c")
	if err != nil {
		t.Fatalf("restart of c with its keyring file: %v", err)
	}
	if !bytes.Equal(p.keyring.GetPrimaryKey(), key2) {
		t.Fatal("restarted c's primary key is not key2")
	}
	g := lockT(t, p, "x", 10*time.Second)
	if err := p.Unlock(g); err != nil {
		t.Fatal(err)
	}
	// A newcomer with key1 and no keyring file is refused.
	_, err = c.startCfg(c.config("d", c.joinAddrs()...))
	if !errors.Is(err, ErrKeyMismatch) {
		t.Fatalf("a peer with the old key alone: %v, want ErrKeyMismatch", err)
	}
}

func TestKeyringFileBad(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"garbage": "not json", "empty": "[]", "base64": `["%%%"]`, "short": `["AAAA"]`,
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := loadKeyring(Config{Key: bytes.Repeat([]byte{1}, 16), KeyringFile: path}, testLogger()); err == nil {
			t.Errorf("%s: a bad keyring file was accepted", name)
		}
	}
}
