package node

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/dlockfs/dlockfs/cmd/dlockfs/internal/cli"
)

// keyLen is the length of keys keygen makes (AES-256).
const keyLen = 32

// readKeyFile reads a base64 cluster key of 16, 24 or 32 bytes. Errors exit
// with code 15. A file readable by group or others is used, with a warning.
func readKeyFile(path string, log *slog.Logger) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, cli.Codef(cli.ExitKey, "--key-file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, cli.Codef(cli.ExitKey, "--key-file %s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o044 != 0 {
		log.Warn("key file is readable by other users: run 'chmod 600 "+path+"'",
			"file", path, "mode", fmt.Sprintf("%04o", perm))
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, cli.Codef(cli.ExitKey, "--key-file: %w", err)
	}
	return parseKey(string(data))
}

// parseKey decodes the key of a --key-file; its errors exit with code 15.
func parseKey(s string) ([]byte, error) {
	key, err := decodeKeyText("--key-file", s)
	if err != nil {
		return nil, cli.WithCode(cli.ExitKey, err)
	}
	return key, nil
}

// decodeKeyText decodes a base64 cluster key (standard alphabet, padding
// optional, surrounding white space ignored) and checks its length: the one
// check of a key on the command line, for --key-file and for keys. what
// names the key in the errors.
func decodeKeyText(what, s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, fmt.Errorf("%s is empty (make a key with 'dlockfs keygen')", what)
	}
	key, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		var err2 error
		if key, err2 = base64.RawStdEncoding.DecodeString(s); err2 != nil {
			return nil, fmt.Errorf("%s is not base64 (make a key with 'dlockfs keygen'): %w", what, err)
		}
	}
	switch len(key) {
	case 16, 24, 32:
		return key, nil
	}
	return nil, fmt.Errorf("%s is %d bytes: want 16, 24 or 32 bytes (AES-128/192/256) in base64", what, len(key))
}

// runKeygen prints a new random base64 key of keyLen bytes.
func runKeygen(_ context.Context, e *cli.Env, _ config) error {
	key := make([]byte, keyLen)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("reading random bytes: %w", err)
	}
	_, err := fmt.Fprintln(e.Stdout, base64.StdEncoding.EncodeToString(key))
	return err
}
