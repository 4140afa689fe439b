package peer

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/hashicorp/memberlist"

	"github.com/dlockfs/dlockfs/mutex/transport"
)

// The persisted keyring. With [Config.KeyringFile] set, Serf writes the
// peer's keyring to that file (a JSON array of base64 keys, the primary
// first, mode 0600) each time a key operation changes it on this member,
// before it answers the operation: once 'dlockfs keys' reports a change
// applied on every member, every member has it on disk. At start the file,
// when it exists, is the keyring, and Config.Key (the --key-file) is only
// used to create it: a peer restarted after a rotation comes back with the
// cluster's current keys, not with the key it was first given.

// loadKeyring returns the peer's keyring: the keyring file's keys when it
// exists, else cfg.Key alone (then written to the file, if one is set);
// nil without a key.
func loadKeyring(cfg Config, log *slog.Logger) (*memberlist.Keyring, error) {
	if len(cfg.Key) == 0 {
		return nil, nil
	}
	if cfg.KeyringFile == "" {
		kr, err := memberlist.NewKeyring(nil, append([]byte(nil), cfg.Key...))
		if err != nil {
			return nil, fmt.Errorf("peer: keyring: %w", err)
		}
		return kr, nil
	}
	keys, err := readKeyringFile(cfg.KeyringFile)
	if err != nil {
		return nil, err
	}
	if keys == nil {
		keys = [][]byte{append([]byte(nil), cfg.Key...)}
		if err := writeKeyringFile(cfg.KeyringFile, keys); err != nil {
			return nil, fmt.Errorf("peer: keyring file: %w", err)
		}
	} else {
		primary := transport.KeyID(keys[0])
		switch {
		case bytes.Equal(keys[0], cfg.Key):
		case containsKey(keys, cfg.Key):
			log.Info("the keyring file's primary key is not the given key (rotated since): using the keyring file",
				"file", cfg.KeyringFile, "primary", primary, "keys", len(keys))
		default:
			log.Warn("the given key is not in the keyring file (rotated away): using the keyring file; put its primary key in the key file",
				"file", cfg.KeyringFile, "primary", primary, "keys", len(keys))
		}
	}
	kr, err := memberlist.NewKeyring(keys[1:], keys[0])
	if err != nil {
		return nil, fmt.Errorf("peer: keyring file %s: %w", cfg.KeyringFile, err)
	}
	return kr, nil
}

func containsKey(keys [][]byte, key []byte) bool {
	for _, k := range keys {
		if bytes.Equal(k, key) {
			return true
		}
	}
	return false
}

// readKeyringFile reads a keyring file; nil, nil when there is none.
func readKeyringFile(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("peer: keyring file: %w", err)
	}
	hint := "(move it away to start from the key file's key alone)"
	var enc []string
	if err := json.Unmarshal(b, &enc); err != nil {
		return nil, fmt.Errorf("peer: keyring file %s: %w %s", path, err, hint)
	}
	if len(enc) == 0 {
		return nil, fmt.Errorf("peer: keyring file %s: no keys %s", path, hint)
	}
	keys := make([][]byte, 0, len(enc))
	for i, e := range enc {
		k, err := base64.StdEncoding.DecodeString(e)
		if err != nil {
			return nil, fmt.Errorf("peer: keyring file %s: key %d: %w %s", path, i, err, hint)
		}
		switch len(k) {
		case 16, 24, 32:
		default:
			return nil, fmt.Errorf("peer: keyring file %s: key %d is %d bytes, want 16, 24 or 32 %s", path, i, len(k), hint)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// writeKeyringFile writes keys in Serf's format, atomically and durably.
func writeKeyringFile(path string, keys [][]byte) error {
	enc := make([]string, len(keys))
	for i, k := range keys {
		enc[i] = base64.StdEncoding.EncodeToString(k)
	}
	b, err := json.MarshalIndent(enc, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}
