package install

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// HelperName is the mount helper's name: mount(8) runs
// /sbin/mount.fuse.dlockfs SPEC DIR [-sfnv] [-o OPTIONS] for
// "mount -t fuse.dlockfs" and the same fstab line. install makes it a
// symlink to the binary, which acts as the helper when called by that name.
const HelperName = "mount.fuse.dlockfs"

// defaultHelperLog is where a peer started by the helper logs.
const defaultHelperLog = "/var/log/dlockfs.log"

// helperFlagOpts are the -o options that become "dlockfs mount" flags
// (OPTION=VALUE -> --OPTION VALUE; "_" may stand for "-").
var helperFlagOpts = map[string]bool{"name": true, "bind": true, "advertise": true, "lock-bind": true,
	"lock-advertise": true, "join": true, "join-timeout": true, "gossip": true, "key-file": true,
	"drain-timeout": true, "metrics": true, "quorum": true, "state-dir": true}

// helperBoolOpts are the -o options that become boolean flags.
var helperBoolOpts = map[string]bool{"allow-other": true, "fast-path": true, "debug": true}

// helperIgnored are generic mount options with no meaning here.
var helperIgnored = map[string]bool{"rw": true, "defaults": true, "auto": true, "noauto": true, "user": true,
	"nouser": true, "users": true, "_netdev": true, "nofail": true, "exec": true, "noexec": true, "suid": true,
	"nosuid": true, "dev": true, "nodev": true, "async": true, "atime": true, "noatime": true, "relatime": true}

// helperArgs turns the helper's command line into "dlockfs mount"
// arguments and the log file. SPEC is the node name ("dlockfs" or "none":
// the hostname).
func helperArgs(args []string) (mountArgs []string, logFile string, fake bool, err error) {
	var pos, opts []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-o" && i+1 < len(args):
			i++
			opts = append(opts, strings.Split(args[i], ",")...)
		case strings.HasPrefix(a, "-o") && len(a) > 2:
			opts = append(opts, strings.Split(a[2:], ",")...)
		case a == "-f":
			fake = true
		case a == "-s" || a == "-n" || a == "-v":
		case strings.HasPrefix(a, "-"):
			return nil, "", false, fmt.Errorf("unknown flag %q", a)
		default:
			pos = append(pos, a)
		}
	}
	if len(pos) != 2 {
		return nil, "", false, fmt.Errorf("want SPEC MOUNTPOINT, got %q", pos)
	}
	logFile = defaultHelperLog
	if spec := pos[0]; spec != "dlockfs" && spec != "none" && spec != "" {
		mountArgs = append(mountArgs, "--name", spec)
	}
	for _, o := range opts {
		k, v, hasV := strings.Cut(o, "=")
		k = strings.ReplaceAll(k, "_", "-")
		switch {
		case o == "" || helperIgnored[o] || strings.HasPrefix(o, "x-"):
		case k == "log" && hasV:
			logFile = v
		case helperFlagOpts[k] && hasV:
			mountArgs = append(mountArgs, "--"+k, v)
		case helperBoolOpts[k] && !hasV:
			mountArgs = append(mountArgs, "--"+k)
		default:
			return nil, "", false, fmt.Errorf("unknown mount option %q", o)
		}
	}
	return append(mountArgs, pos[1]), logFile, fake, nil
}

// RunMountHelper is the binary called as mount.fuse.dlockfs: it starts
// "dlockfs mount" in the background (its own session, logging to the log=
// file) and returns once the peer has joined and mounted (READY=1 on a
// NOTIFY_SOCKET of its own), or with the peer's failure. umount DIR stops
// the peer: it leaves the cluster and exits. Exit codes as mount(8)'s
// helpers: 0 mounted, 1 bad invocation, 32 mount failure.
func RunMountHelper(args []string, stderr io.Writer) int {
	margs, logFile, fake, err := helperArgs(args)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\nUsage: %s NAME MOUNTPOINT [-o join=IP,key-file=FILE,gossip=lan,...]\n", HelperName, err, HelperName)
		return 1
	}
	if fake {
		return 0
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", HelperName, err)
		return 32
	}
	dir, err := os.MkdirTemp("", "dlockfs-helper-")
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", HelperName, err)
		return 32
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", HelperName, err)
		return 32
	}
	defer conn.Close()
	logf, err := os.OpenFile(logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		fmt.Fprintf(stderr, "%s: log file: %v (choose one with -o log=FILE)\n", HelperName, err)
		return 32
	}
	defer logf.Close()
	cmd := exec.Command(self, append([]string{"mount"}, margs...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(withoutEnv(os.Environ(), "NOTIFY_SOCKET"), "NOTIFY_SOCKET="+sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", HelperName, err)
		return 32
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	ready := make(chan struct{})
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			if strings.HasPrefix(string(buf[:n]), "READY=1") {
				close(ready)
				return
			}
		}
	}()
	select {
	case <-ready:
		return 0
	case err := <-exited:
		code := -1
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		fmt.Fprintf(stderr, "%s: dlockfs mount exited %d before mounting; see %s\n", HelperName, code, logFile)
		return 32
	}
}

// withoutEnv drops the variable key from an environment.
func withoutEnv(env []string, key string) []string {
	out := env[:0:0]
	for _, e := range env {
		if !strings.HasPrefix(e, key+"=") {
			out = append(out, e)
		}
	}
	return out
}
