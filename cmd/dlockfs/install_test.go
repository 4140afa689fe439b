package main

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dlockfs/dlockfs/cmd/dlockfs/internal/cli"
	"github.com/dlockfs/dlockfs/cmd/dlockfs/internal/install"
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
	hr := runCmd(t, exec.Command(filepath.Join(prefix, "sbin", install.HelperName), "helped", mnt, "-o",
		"bind="+freeAddr(t)+",lock-bind="+freeAddr(t)+",gossip=fast,_netdev,state_dir="+t.TempDir()+",log="+logFile))
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
	waitFor(t, startTimeout, "the helper's peer to leave after umount", func() bool {
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

// TestReadmeReference: the README's SYNOPSIS names every command and every
// flag that --help documents (the man page is generated from --help).
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
