package install

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/dlockfs/dlockfs/cmd/dlockfs/internal/cli"
)

// installConfig holds the options of "dlockfs install" and "uninstall".
type installConfig struct {
	prefix string
}

const (
	defaultPrefix = "/usr/local"
	// ManifestPath (under the prefix) lists what install wrote, one path
	// relative to the prefix a line; uninstall removes exactly those.
	ManifestPath = "share/dlockfs/install-manifest"
)

const helpInstall = `Usage: dlockfs install [--prefix DIR]

Install dlockfs from the binary itself (everything is embedded). Writes, under
$DESTDIR/PREFIX (PREFIX default /usr/local; DESTDIR from the environment, for
packaging):

  bin/dlockfs                                a copy of this binary
  share/man/man1/dlockfs.1                   the man page (man dlockfs)
  lib/systemd/system/dlockfs@.service        systemd template unit, one
                                             instance per mount path
  sbin/mount.fuse.dlockfs                    mount helper, a symlink to
                                             ../bin/dlockfs
  share/dlockfs/install-manifest             the list of files written

Existing files are replaced. Nothing else is touched: the key and the unit's
environment file are yours to write. The unit runs
"PREFIX/bin/dlockfs mount $DLOCKFS_OPTS /PATH" with Type=notify (ready once
joined and mounted) for the instance dlockfs@ESCAPED-PATH, reading
DLOCKFS_OPTS from /etc/dlockfs/ESCAPED-PATH.env:

  mkdir -p /etc/dlockfs
  echo 'DLOCKFS_OPTS=--key-file /etc/dlockfs/cluster.key --join 10.0.0.11' \
      > /etc/dlockfs/run-dlockfs.env
  systemctl daemon-reload
  systemctl enable --now dlockfs@run-dlockfs    # mounts /run/dlockfs

The mount helper makes "mount -t fuse.dlockfs NAME MOUNTPOINT -o OPTIONS" and
the same fstab line work; mount(8) looks for helpers in /sbin only, so use
--prefix /usr (or link /sbin/mount.fuse.dlockfs to it). NAME is the node name
("dlockfs" or "none": the hostname). OPTIONS are mount's flags without the
dashes: join=IP (repeat for more members), key-file=FILE, gossip=PROFILE,
bind=, lock-bind=, advertise=, lock-advertise=, join-timeout=,
drain-timeout=, metrics=, quorum=, state-dir=, allow_other, fast-path, debug,
and log=FILE (the peer's log, default /var/log/dlockfs.log); generic options
(defaults, _netdev, nofail, noauto, x-systemd.*) are ignored. The helper starts the peer
in the background and returns once it has joined and mounted; "umount
MOUNTPOINT" stops it (it leaves the cluster):

  mount -t fuse.dlockfs "$(hostname)" /run/dlockfs \
      -o join=10.0.0.11,key-file=/etc/dlockfs/cluster.key,gossip=lan
  # /etc/fstab:
  # myhost  /run/dlockfs  fuse.dlockfs  join=10.0.0.11,key-file=/etc/dlockfs/cluster.key,_netdev  0 0

Flags:
  --prefix DIR    installation prefix (default /usr/local)

Examples:
  dlockfs install
  DESTDIR=/tmp/pkg dlockfs install --prefix /usr

Exit codes: 0 ok, 2 usage, 1 other.
`

const helpUninstall = `Usage: dlockfs uninstall [--prefix DIR]

Remove what "dlockfs install --prefix DIR" wrote, as listed in
$DESTDIR/PREFIX/share/dlockfs/install-manifest, then the manifest and the
directories install created that are now empty. Files not in the manifest are
left alone; a listed file already gone is skipped. Stop and disable the
dlockfs@ units first.

Flags:
  --prefix DIR    the prefix given to install (default /usr/local)

Exit codes: 0 ok, 2 usage, 1 other (no manifest under that prefix).
`

// Install is "dlockfs install"; manPage renders the man page it writes.
func Install(manPage func() string) cli.Command {
	return cli.NewCommand("install", "install the binary, man page and systemd unit", helpInstall,
		func(args []string) (installConfig, error) { return parseInstall("install", args) },
		func(ctx context.Context, e *cli.Env, cfg installConfig) error {
			return runInstall(ctx, e, cfg, manPage)
		})
}

// Uninstall is "dlockfs uninstall".
func Uninstall() cli.Command {
	return cli.NewCommand("uninstall", "remove what install wrote", helpUninstall,
		func(args []string) (installConfig, error) { return parseInstall("uninstall", args) }, runUninstall)
}

// parseInstall parses "install|uninstall [--prefix DIR]".
func parseInstall(cmd string, args []string) (installConfig, error) {
	var cfg installConfig
	fs := cli.NewFlagSet(cmd)
	fs.StringVar(&cfg.prefix, "prefix", defaultPrefix, "")
	pos, _, err := cli.ParseInterspersed(fs, args, -1)
	if err != nil {
		return cfg, err
	}
	if len(pos) > 0 {
		return cfg, cli.Usagef("unexpected argument %q", pos[0])
	}
	if !filepath.IsAbs(cfg.prefix) {
		return cfg, cli.Usagef("--prefix %q: must be an absolute path", cfg.prefix)
	}
	return cfg, nil
}

// systemdUnit is dlockfs@.service for a prefix.
func systemdUnit(prefix string) string {
	return `[Unit]
Description=dlockfs distributed lock peer on %f
Documentation=man:dlockfs(1)
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=main
EnvironmentFile=-/etc/dlockfs/%i.env
ExecStartPre=/bin/mkdir -p %f
ExecStart=` + filepath.Join(prefix, "bin/dlockfs") + ` mount $DLOCKFS_OPTS %f
ExecStopPost=-/bin/umount -l %f
KillSignal=SIGTERM
# Above the 30 s --drain-timeout plus the 15 s leave.
TimeoutStopSec=50
Restart=on-failure

[Install]
WantedBy=multi-user.target
`
}

// installFiles are the files install writes, relative to the prefix.
func installFiles(prefix string, manPage func() string) ([]struct {
	rel  string
	mode os.FileMode
	data func() ([]byte, error)
}, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("finding this binary: %w", err)
	}
	return []struct {
		rel  string
		mode os.FileMode
		data func() ([]byte, error)
	}{
		{"bin/dlockfs", 0o755, func() ([]byte, error) { return os.ReadFile(self) }},
		{"share/man/man1/dlockfs.1", 0o644, func() ([]byte, error) { return []byte(manPage()), nil }},
		{"lib/systemd/system/dlockfs@.service", 0o644, func() ([]byte, error) { return []byte(systemdUnit(prefix)), nil }},
	}, nil
}

// runInstall is "dlockfs install".
func runInstall(_ context.Context, e *cli.Env, cfg installConfig, manPage func() string) error {
	prefix := cfg.prefix
	root := filepath.Join(os.Getenv("DESTDIR"), prefix)
	files, err := installFiles(prefix, manPage)
	if err != nil {
		return err
	}
	var written []string
	for _, f := range files {
		data, err := f.data()
		if err != nil {
			return err
		}
		path := filepath.Join(root, f.rel)
		if err := writeFileAtomic(path, data, f.mode); err != nil {
			return err
		}
		written = append(written, f.rel)
		fmt.Fprintf(e.Stdout, "installed %s\n", path)
	}
	// The mount helper: the binary under the name mount(8) looks for.
	helper := filepath.Join(root, "sbin", HelperName)
	if err := os.MkdirAll(filepath.Dir(helper), 0o755); err != nil {
		return err
	}
	if err := os.Remove(helper); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := os.Symlink("../bin/dlockfs", helper); err != nil {
		return err
	}
	written = append(written, "sbin/"+HelperName)
	fmt.Fprintf(e.Stdout, "installed %s -> ../bin/dlockfs\n", helper)
	manifest := "# written by dlockfs install; dlockfs uninstall removes these\n" + strings.Join(written, "\n") + "\n"
	if err := writeFileAtomic(filepath.Join(root, ManifestPath), []byte(manifest), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(e.Stdout, "installed %s\n", filepath.Join(root, ManifestPath))
	return nil
}

// runUninstall is "dlockfs uninstall".
func runUninstall(_ context.Context, e *cli.Env, cfg installConfig) error {
	root := filepath.Join(os.Getenv("DESTDIR"), cfg.prefix)
	mpath := filepath.Join(root, ManifestPath)
	f, err := os.Open(mpath)
	if err != nil {
		return fmt.Errorf("no install manifest (was dlockfs installed with --prefix %s?): %w", cfg.prefix, err)
	}
	var rels []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if filepath.IsAbs(l) || strings.Contains("/"+l+"/", "/../") {
			f.Close()
			return fmt.Errorf("%s: refusing the path %q (not inside the prefix)", mpath, l)
		}
		rels = append(rels, l)
	}
	f.Close()
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", mpath, err)
	}
	for _, rel := range append(rels, ManifestPath) {
		path := filepath.Join(root, rel)
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		fmt.Fprintf(e.Stdout, "removed %s\n", path)
		// The directories install may have made, if now empty.
		for dir := filepath.Dir(rel); dir != "." && dir != "bin" && dir != "sbin" && dir != "share" && dir != "lib"; dir = filepath.Dir(dir) {
			if os.Remove(filepath.Join(root, dir)) != nil {
				break
			}
		}
	}
	return nil
}

// writeFileAtomic writes data to path through a temporary file and a
// rename (a running binary can be replaced), making the directories.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, strings.NewReader(string(data))); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
