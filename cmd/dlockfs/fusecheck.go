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
	// A non-root mount goes through the setuid helper, which opens
	// /dev/fuse itself; go-fuse and the fs package also check access.
	var missing []string
	if _, err := lookPathFallback("fusermount3"); err != nil {
		if _, err2 := lookPathFallback("fusermount"); err2 != nil {
			missing = append(missing, "fusermount3 is not installed (not in PATH or /bin): a non-root mount needs "+
				"this setuid helper; install package fuse3 (Debian/Ubuntu: apt install fuse3)")
		}
	}
	if f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0); err != nil {
		missing = append(missing, fmt.Sprintf("/dev/fuse cannot be opened by uid %d (%v): "+
			"it is usually mode crw-rw-rw-", os.Geteuid(), err))
	} else {
		f.Close()
	}
	if allowOther && !userAllowOther("/etc/fuse.conf") {
		missing = append(missing, "--allow-other as a non-root user needs a line 'user_allow_other' in /etc/fuse.conf")
	}
	if len(missing) > 0 {
		return codef(exitFUSE, "cannot mount as a non-root user (or run as root): %s", strings.Join(missing, "; "))
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
