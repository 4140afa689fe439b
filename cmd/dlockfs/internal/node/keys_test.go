package node

import (
	"bytes"
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dlockfs/dlockfs/cmd/dlockfs/internal/cli"
	"github.com/dlockfs/dlockfs/mutex/peer"
	"github.com/dlockfs/dlockfs/mutex/transport"
)

func TestParseKeys(t *testing.T) {
	k32 := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	for _, tc := range []struct {
		args []string
		want keysConfig // zero: a usage error
	}{
		{[]string{"list"}, keysConfig{control: defaultControl, op: peer.KeyList}},
		{[]string{"--control", "/tmp/a.sock", "--json", "list"}, keysConfig{control: "/tmp/a.sock", json: true, op: peer.KeyList}},
		{[]string{"install", k32}, keysConfig{control: defaultControl, op: peer.KeyInstall, key: k32}},
		{[]string{"use", "-", "--control=/x.sock"}, keysConfig{control: "/x.sock", op: peer.KeyUse, key: "-"}},
		{[]string{"remove", k32}, keysConfig{control: defaultControl, op: peer.KeyRemove, key: k32}},
		{[]string{}, keysConfig{}},
		{[]string{"list", k32}, keysConfig{}},
		{[]string{"rotate", k32}, keysConfig{}},
		{[]string{"install"}, keysConfig{}},
		{[]string{"install", "not base64!"}, keysConfig{}},
		{[]string{"install", base64.StdEncoding.EncodeToString(make([]byte, 20))}, keysConfig{}},
		{[]string{"use", k32, k32}, keysConfig{}},
		{[]string{"--control", "", "list"}, keysConfig{}},
	} {
		var cfg config
		err := parseKeys(&cfg, tc.args)
		if tc.want == (keysConfig{}) {
			if cli.ExitCode(err) != cli.ExitUsage {
				t.Errorf("%q: %v (exit %d), want a usage error", tc.args, err, cli.ExitCode(err))
			}
			continue
		}
		if err != nil || cfg.keys != tc.want {
			t.Errorf("%q: %+v, %v; want %+v", tc.args, cfg.keys, err, tc.want)
		}
	}
}

// TestKeysControl runs 'dlockfs keys' against the control socket of a real
// in-process peer in a 2-peer cluster (no FUSE): a full rotation exits 0,
// remove of the primary key is refused, bad keys exit 2, list shows the new
// key alone.
func TestKeysControl(t *testing.T) {
	oldKey, newKey := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 16)
	ob, nb := base64.StdEncoding.EncodeToString(oldKey), base64.StdEncoding.EncodeToString(newKey)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var ps []*peer.Peer
	for _, name := range []string{"a", "b"} {
		cfg := peer.Config{Name: name, BindAddr: "127.0.0.1:0", LockAddr: "127.0.0.1:0", Profile: peer.ProfileFast, Key: oldKey}
		if len(ps) > 0 {
			cfg.Join = []string{ps[0].GossipAddr()}
		}
		p, err := peer.Start(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Leave(context.Background()) })
		ps = append(ps, p)
	}
	sock := filepath.Join(t.TempDir(), "a.sock")
	var logs bytes.Buffer
	srv, err := serveControl(sock, ps[0], cli.NewLogger(&cli.Env{Stderr: &logs}, false))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.close()
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("control socket mode: %v %v, want 0600", fi.Mode(), err)
	}
	if _, err := serveControl(sock, ps[1], cli.NewLogger(&cli.Env{Stderr: &logs}, false)); err == nil {
		t.Error("a second server took over a live control socket")
	}
	keys := func(args ...string) (int, string, string) {
		return run3(ctx, append([]string{"keys", "--control", sock}, args...)...)
	}
	for _, step := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"install", nb}, cli.ExitOK, "installed on all 2 members"},
		{[]string{"use", nb}, cli.ExitOK, "made primary on all 2 members"},
		{[]string{"remove", nb}, cli.ExitError, "refusing to remove the primary key"},
		{[]string{"remove", ob}, cli.ExitOK, "removed on all 2 members"},
		{[]string{"install", "AAAA"}, cli.ExitUsage, "KEY is 3 bytes"},
		{[]string{"install", "@@@@"}, cli.ExitUsage, "not base64"},
		{[]string{"list"}, cli.ExitOK, nb},
	} {
		code, out, errOut := keys(step.args...)
		if code != step.code || !strings.Contains(out+errOut, step.out) {
			t.Errorf("keys %q: exit %d, want %d with %q\nstdout: %s\nstderr: %s", step.args, code, step.code, step.out, out, errOut)
		}
	}
	_, out, _ := keys("list")
	if strings.Contains(out, ob) || !strings.Contains(out, nb+"  "+transport.KeyID(newKey)+"  2/2           2/2") {
		t.Errorf("list after the rotation, want the new key alone, on both members, primary on both:\n%s", out)
	}
	t.Logf("keys list:\n%s", out)
	code, _, errOut := run3(ctx, "keys", "--control", filepath.Join(t.TempDir(), "none.sock"), "list")
	if code != cli.ExitNotMounted {
		t.Errorf("keys on a missing socket: exit %d, want %d: %s", code, cli.ExitNotMounted, errOut)
	}
}

func run3(ctx context.Context, args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := cli.Run(ctx, []cli.Command{Keys()}, args, &out, &errOut)
	return code, out.String(), errOut.String()
}
