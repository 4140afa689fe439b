package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// checkFuse says exactly what is missing to mount (exit code 14): the
// /dev/fuse device, and for a non-root user access to it, the setuid helper
// fusermount3 and, for --allow-other, user_allow_other in /etc/fuse.conf.
func checkFuse(allowOther bool) error {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return codef(exitFUSE, "/dev/fuse is missing: load the kernel module ('modprobe fuse'), "+
			"or in a container pass '--device /dev/fuse' (%w)", err)
	}
	if os.Geteuid() == 0 {
		return nil
	}
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		return codef(exitFUSE, "/dev/fuse cannot be opened by this user (%w): "+
			"check its mode (crw-rw-rw- is usual) or run as root", err)
	}
	f.Close()
	if _, err := lookPathFallback("fusermount3"); err != nil {
		if _, err2 := lookPathFallback("fusermount"); err2 != nil {
			return codef(exitFUSE, "fusermount3 is not installed (not in PATH or /bin): a non-root mount needs "+
				"this setuid helper; install package fuse3 (Debian/Ubuntu: apt install fuse3) or run as root")
		}
	}
	if allowOther && !userAllowOther("/etc/fuse.conf") {
		return codef(exitFUSE, "--allow-other as a non-root user needs a line 'user_allow_other' in /etc/fuse.conf")
	}
	return nil
}

// lookPathFallback looks for bin in PATH, then in /bin (as go-fuse does).
func lookPathFallback(bin string) (string, error) {
	if p, err := exec.LookPath(bin); err == nil {
		return p, nil
	}
	return exec.LookPath("/bin/" + bin)
}

// userAllowOther reports whether fuse.conf enables user_allow_other.
func userAllowOther(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "user_allow_other" {
			return true
		}
	}
	return false
}

// runQuiet runs a helper program, returning its stderr in the error.
func runQuiet(bin string, args ...string) error {
	path, err := lookPathFallback(bin)
	if err != nil {
		return err
	}
	out, err := exec.Command(path, args...).CombinedOutput()
	if err != nil {
		return errors.Join(err, fmt.Errorf("%s", strings.TrimSpace(string(out))))
	}
	return nil
}
