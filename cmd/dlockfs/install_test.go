package main

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dlockfs/dlockfs/cmd/dlockfs/internal/cli"
	"github.com/dlockfs/dlockfs/cmd/dlockfs/internal/install"
	"github.com/dlockfs/dlockfs/mutex/testutil"
)

// helpFlags returns the --flags of a command's Flags block.
func helpFlags(c cli.Command) []string {
	_, flags := cli.HelpParts(c.Help)
	var out []string
	for _, m := range regexp.MustCompile(`(?m)^\s+(--[a-z][a-z-]*)`).FindAllStringSubmatch(flags, -1) {
		out = append(out, m[1])
	}
	return out
}

func TestInstallUninstall(t *testing.T) {
	for _, tool := range []string{"man", "systemd-analyze"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (.ci/run installs it): %v", tool, err)
		}
	}
	prefix := t.TempDir()
	stray := filepath.Join(prefix, "bin", "other-tool")
	if err := os.MkdirAll(filepath.Dir(stray), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stray, []byte("not ours"), 0o755); err != nil {
		t.Fatal(err)
	}
	r := dlockfs(t, "install", "--prefix", prefix)
	wantCode(t, r, cli.ExitOK, "install")
	want := []string{"bin/dlockfs", "share/man/man1/dlockfs.1", "lib/systemd/system/dlockfs@.service",
		"sbin/" + install.HelperName, install.ManifestPath}
	for _, rel := range want {
		if !strings.Contains(r.stdout, "installed "+filepath.Join(prefix, rel)) {
			t.Errorf("install did not say it wrote %s:\n%s", rel, r.stdout)
		}
	}
	self, _ := os.ReadFile(binary)
	if got, err := os.ReadFile(filepath.Join(prefix, "bin/dlockfs")); err != nil || !bytes.Equal(got, self) {
		t.Errorf("bin/dlockfs is not a copy of the binary (%v)", err)
	}

	// The man page renders without warnings, has every section, and
	// documents every flag that --help documents.
	man := exec.Command("man", "--warnings", "-l", filepath.Join(prefix, "share/man/man1/dlockfs.1"))
	man.Env = append(os.Environ(), "MANWIDTH=120", "MAN_KEEP_FORMATTING=0", "MANPAGER=cat", "PAGER=cat")
	mr := runCmd(t, man)
	wantCode(t, mr, cli.ExitOK, "man -l")
	mr.stdout = regexp.MustCompile(".\x08").ReplaceAllString(mr.stdout, "") // overstrike bold
	if strings.TrimSpace(mr.stderr) != "" {
		t.Errorf("man --warnings: %s", mr.stderr)
	}
	for _, sec := range []string{"NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "OPTIONS", "FILES", "EXIT CODES", "EXAMPLES", "SEE ALSO"} {
		if !regexp.MustCompile(`(?m)^` + sec + `$`).MatchString(mr.stdout) {
			t.Errorf("the man page lacks section %s", sec)
		}
	}
	for _, c := range commands() {
		for _, u := range cli.UsageLines(c.Help) {
			if !strings.Contains(mr.stdout, u) {
				t.Errorf("man page SYNOPSIS lacks %q", u)
			}
		}
		for _, f := range helpFlags(c) {
			if !strings.Contains(mr.stdout, f) {
				t.Errorf("man page lacks %s %s", c.Name, f)
			}
		}
	}

	// The unit is clean under systemd-analyze verify (its man: link
	// resolves through MANPATH).
	unit := filepath.Join(prefix, "lib/systemd/system/dlockfs@.service")
	body, _ := os.ReadFile(unit)
	for _, w := range []string{"Type=notify", "ExecStart=" + filepath.Join(prefix, "bin/dlockfs") + " mount $DLOCKFS_OPTS %f"} {
		if !strings.Contains(string(body), w) {
			t.Errorf("unit lacks %q:\n%s", w, body)
		}
	}
	va := exec.Command("systemd-analyze", "verify", unit)
	va.Env = append(os.Environ(), "MANPATH="+filepath.Join(prefix, "share/man"))
	vr := runCmd(t, va)
	if vr.code != 0 || strings.TrimSpace(vr.stdout+vr.stderr) != "" {
		t.Errorf("systemd-analyze verify: exit %d\n%s%s", vr.code, vr.stdout, vr.stderr)
	}

	// The mount helper, called as mount(8) calls it: the peer runs in
	// the background once the helper returns; umount stops it.
	mnt := filepath.Join(t.TempDir(), "m")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	logFile := filepath.Join(t.TempDir(), "peer.log")
	addrs := testutil.FreeAddrs(t, 2)
	hr := runCmd(t, exec.Command(filepath.Join(prefix, "sbin", install.HelperName), "helped", mnt, "-o",
		"bind="+addrs[0]+",lock-bind="+addrs[1]+",gossip=fast,_netdev,state_dir="+t.TempDir()+",log="+logFile))
	wantCode(t, hr, cli.ExitOK, "mount helper")
	t.Cleanup(func() { killByCmdline(t, mnt) })
	sr := dlockfs(t, "status", mnt)
	wantCode(t, sr, cli.ExitOK, "status of the helper's mount")
	if !strings.Contains(sr.stdout, "node helped at "+mnt) {
		t.Errorf("status of the helper's mount:\n%s", sr.stdout)
	}
	if err := syscall.Unmount(mnt, 0); err != nil {
		t.Fatalf("umount: %v", err)
	}
	testutil.WaitFor(t, startTimeout, "the helper's peer to leave after umount", func() bool {
		b, _ := os.ReadFile(logFile)
		return strings.Contains(string(b), "unmounted from outside; leaving the cluster") && !peerRunning(mnt)
	})
	wantCode(t, runCmd(t, exec.Command(filepath.Join(prefix, "sbin", install.HelperName), "x", mnt, "-o", "frobnicate")),
		1, "mount helper with an unknown option")

	// uninstall removes exactly what install wrote.
	r = dlockfs(t, "uninstall", "--prefix", prefix)
	wantCode(t, r, cli.ExitOK, "uninstall")
	for _, rel := range want {
		if _, err := os.Stat(filepath.Join(prefix, rel)); !os.IsNotExist(err) {
			t.Errorf("%s still there after uninstall (%v)", rel, err)
		}
	}
	if _, err := os.Stat(stray); err != nil {
		t.Errorf("uninstall removed a file it did not write: %v", err)
	}
	for _, dir := range []string{"share/dlockfs", "share/man/man1", "lib/systemd/system"} {
		if _, err := os.Stat(filepath.Join(prefix, dir)); !os.IsNotExist(err) {
			t.Errorf("empty directory %s left after uninstall", dir)
		}
	}
	wantCode(t, dlockfs(t, "uninstall", "--prefix", prefix), cli.ExitError, "uninstall with no manifest")

	// DESTDIR: the files go under it, the unit names the final paths.
	dest := t.TempDir()
	cmd := exec.Command(binary, "install", "--prefix", "/usr")
	cmd.Env = append(os.Environ(), "DESTDIR="+dest)
	wantCode(t, runCmd(t, cmd), cli.ExitOK, "DESTDIR install")
	body, err := os.ReadFile(filepath.Join(dest, "usr/lib/systemd/system/dlockfs@.service"))
	if err != nil || !strings.Contains(string(body), "ExecStart=/usr/bin/dlockfs mount") {
		t.Errorf("DESTDIR unit: %v\n%s", err, body)
	}
	cmd = exec.Command(binary, "uninstall", "--prefix", "/usr")
	cmd.Env = append(os.Environ(), "DESTDIR="+dest)
	wantCode(t, runCmd(t, cmd), cli.ExitOK, "DESTDIR uninstall")
	if _, err := os.Stat(filepath.Join(dest, "usr/bin/dlockfs")); !os.IsNotExist(err) {
		t.Errorf("DESTDIR uninstall left bin/dlockfs (%v)", err)
	}
}

// TestMountHelperByMount8: the installed helper works through mount(8)
// itself, both as "mount -t fuse.dlockfs NAME DIR -o OPTIONS" and as an
// fstab line ("mount -T FSTAB DIR"), and umount stops the peer cleanly.
// mount(8) looks for helpers in /sbin only, so the test runs mount in a
// private mount namespace (unshare -m) where an overlay adds a link to the
// helper installed in a temporary prefix to /usr/sbin; the host's /sbin is
// untouched, and the namespace goes with the last of its processes.
func TestMountHelperByMount8(t *testing.T) {
	for _, tool := range []string{"unshare", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed: %v", tool, err)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (a mount namespace and an overlay)")
	}
	tmp := t.TempDir()
	prefix := filepath.Join(tmp, "prefix")
	wantCode(t, dlockfs(t, "install", "--prefix", prefix), cli.ExitOK, "install")
	links := filepath.Join(tmp, "sbin")
	if err := os.Mkdir(links, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(prefix, "sbin", install.HelperName), filepath.Join(links, install.HelperName)); err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(tmp, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(tmp, "cluster.key")
	kr := dlockfs(t, "keygen")
	if err := os.WriteFile(key, []byte(kr.stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { killByCmdline(t, mnt) })
	opts := func(log string) string {
		addrs := testutil.FreeAddrs(t, 2)
		return "bind=" + addrs[0] + ",lock-bind=" + addrs[1] + ",gossip=fast,key-file=" + key +
			",state-dir=" + t.TempDir() + ",log=" + log + ",_netdev"
	}
	logCmd, logFstab := filepath.Join(tmp, "cmd.log"), filepath.Join(tmp, "fstab.log")
	fstab := filepath.Join(tmp, "fstab")
	if err := os.WriteFile(fstab, []byte("fromfstab "+mnt+" fuse.dlockfs "+opts(logFstab)+" 0 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dl := filepath.Join(prefix, "bin", "dlockfs")
	script := `set -eu
mount -t overlay overlay -o lowerdir="$LINKS":/usr/sbin /usr/sbin
mount -t fuse.dlockfs fromcmd "$MNT" -o "$OPTS"
findmnt -n -o FSTYPE "$MNT"
"$DL" status "$MNT" | head -1
umount "$MNT"
mount -T "$FSTAB" "$MNT"
findmnt -n -o FSTYPE "$MNT"
"$DL" status "$MNT" | head -1
umount "$MNT"
`
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "bash", "-c", script)
	cmd.Env = append(os.Environ(), "LINKS="+links, "MNT="+mnt, "OPTS="+opts(logCmd), "FSTAB="+fstab, "DL="+dl)
	r := runCmd(t, cmd)
	wantCode(t, r, cli.ExitOK, "mount(8) with the helper, then umount")
	for _, want := range []string{"fuse.dlockfs\nnode fromcmd at " + mnt, "fuse.dlockfs\nnode fromfstab at " + mnt} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("mount(8) output lacks %q:\n%s", want, r.stdout)
		}
	}
	for _, log := range []string{logCmd, logFstab} {
		testutil.WaitFor(t, startTimeout, "the peer of "+filepath.Base(log)+" to leave after umount", func() bool {
			b, _ := os.ReadFile(log)
			return strings.Contains(string(b), "unmounted from outside; leaving the cluster") && !peerRunning(mnt)
		})
		if b, _ := os.ReadFile(log); strings.Contains(string(b), "level=ERROR") {
			t.Errorf("%s has errors:\n%s", log, b)
		}
	}
}

// TestHelpSaysWhatItWrites: every command's --help has a "Writes" sentence
// (what it writes and where). bench is left out while its help is another
// branch's; it names its files (--cpuprofile, --trace, the temporary
// directory) in its own words.
func TestHelpSaysWhatItWrites(t *testing.T) {
	writes := regexp.MustCompile(`(?m)(^|[.] )Writes[,:]`)
	for _, c := range commands() {
		if c.Name == "bench" {
			continue
		}
		if !writes.MatchString(c.Help) {
			t.Errorf("dlockfs %s --help does not say what it writes (no \"Writes:\" sentence)", c.Name)
		}
	}
}

// TestReadmeReference: the README's SYNOPSIS names every command and every
// flag that --help documents (the man page is generated from --help), and
// every flag of its OPTIONS table is one that mount --help documents.
func TestReadmeReference(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, syn, ok := strings.Cut(string(readme), "### SYNOPSIS\n")
	if !ok {
		t.Fatal("README has no ### SYNOPSIS")
	}
	syn, _, _ = strings.Cut(syn, "\n###")
	for _, c := range commands() {
		if !strings.Contains(syn, "dlockfs "+c.Name) {
			t.Errorf("README SYNOPSIS lacks dlockfs %s", c.Name)
		}
		for _, f := range helpFlags(c) {
			if !strings.Contains(syn, f) {
				t.Errorf("README SYNOPSIS lacks %s %s", c.Name, f)
			}
		}
	}
	_, opts, ok := strings.Cut(string(readme), "### OPTIONS\n")
	if !ok {
		t.Fatal("README has no ### OPTIONS")
	}
	opts, _, _ = strings.Cut(opts, "\n###")
	var mount cli.Command
	for _, c := range commands() {
		if c.Name == "mount" {
			mount = c
		}
	}
	rows := regexp.MustCompile("(?m)^\\| `(--[a-z-]+)` \\|").FindAllStringSubmatch(opts, -1)
	if len(rows) < 10 {
		t.Fatalf("README OPTIONS: only %d flag rows found", len(rows))
	}
	for _, m := range rows {
		if !slices.Contains(helpFlags(mount), m[1]) {
			t.Errorf("README OPTIONS lists %s, which mount --help does not document", m[1])
		}
	}
}

// TestNotifyReady: under a NOTIFY_SOCKET, mount says READY=1 once joined
// and mounted (systemd Type=notify), and STOPPING=1 at SIGTERM.
func TestNotifyReady(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	a := startNode(t, "notified")
	read := func() string {
		t.Helper()
		buf := make([]byte, 4096)
		_ = conn.SetReadDeadline(time.Now().Add(startTimeout))
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("reading NOTIFY_SOCKET: %v", err)
		}
		return string(buf[:n])
	}
	if got := read(); !strings.HasPrefix(got, "READY=1\n") || !strings.Contains(got, "mounted at "+a.dir) {
		t.Errorf("first notification %q, want READY=1 and a STATUS", got)
	}
	a.signal(t, syscall.SIGTERM)
	if got := read(); got != "STOPPING=1" {
		t.Errorf("notification at SIGTERM %q, want STOPPING=1", got)
	}
	a.wait(t)
}

// peerRunning reports whether a process runs with dir as an argument.
func peerRunning(dir string) bool {
	return len(pidsWithArg(dir)) > 0
}

// pidsWithArg lists the processes that have arg among their arguments.
func pidsWithArg(arg string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		for _, a := range strings.Split(string(b), "\x00") {
			if a == arg {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// killByCmdline kills, by PID, a peer left running on the test's unique
// mount directory, and detaches the mount.
func killByCmdline(t *testing.T, dir string) {
	for _, pid := range pidsWithArg(dir) {
		t.Logf("killing PID %d left on %s", pid, dir)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	_ = syscall.Unmount(dir, syscall.MNT_DETACH)
}
