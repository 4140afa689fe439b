package peer

import (
	"os"
	"path/filepath"
)

// writeFileDurable replaces the file at path with b (mode 0600, its
// directory made 0700 if missing), atomically and durably: through
// path.tmp, synced, renamed over path, and the directory synced so that the
// rename survives a crash. It is the one writer of the state directory's
// files (hardstate.json, keyring.json).
func writeFileDurable(path string, b []byte) error {
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
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
