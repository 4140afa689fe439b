package fs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// mountpointError is a sentinel error about the mount point; every one
// also matches [ErrMountpoint].
type mountpointError struct{ msg string }

func (e *mountpointError) Error() string { return e.msg }

// Is makes every mount point sentinel match ErrMountpoint.
func (e *mountpointError) Is(target error) bool { return target == ErrMountpoint }

// Errors of [CheckMountpoint] and [CheckFUSE] (and so of [Mount]). They are
// wrapped with the path and the fix in the message; test them with
// errors.Is. Each of ErrMountpointMissing, ErrNotDirectory,
// ErrAlreadyMounted and ErrDeadMount also matches ErrMountpoint.
var (
	// ErrMountpoint: the mount point cannot be used (any reason,
	// including the specific ones below).
	ErrMountpoint = errors.New("cannot use mountpoint")
	// ErrMountpointMissing: the mount point does not exist.
	ErrMountpointMissing error = &mountpointError{"mountpoint does not exist"}
	// ErrNotDirectory: the mount point is not a directory.
	ErrNotDirectory error = &mountpointError{"mountpoint is not a directory"}
	// ErrAlreadyMounted: something (dlockfs or another file system) is
	// mounted on the mount point.
	ErrAlreadyMounted error = &mountpointError{"already a mount point"}
	// ErrDeadMount: a FUSE mount whose daemon is gone is on the mount
	// point (stat fails with ENOTCONN).
	ErrDeadMount error = &mountpointError{"dead FUSE mount (its daemon is gone)"}
	// ErrNoFUSE: this process cannot mount a FUSE file system (no
	// /dev/fuse, or as non-root no access to it, no fusermount3, or
	// AllowOther without user_allow_other).
	ErrNoFUSE = errors.New("FUSE is not available")
)

// CheckMountpoint checks that dir can be mounted on: an existing directory
// that is not a mount point, live or dead. It returns dir's absolute,
// symlink-free path, or an error that matches [ErrMountpoint] (and the
// specific sentinel) and says what to do.
func CheckMountpoint(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("%w %s: %w", ErrMountpoint, dir, err)
	}
	fi, err := os.Stat(abs)
	switch {
	case errors.Is(err, syscall.ENOTCONN), errors.Is(err, syscall.ECONNABORTED):
		return "", fmt.Errorf("%s: %w: run 'umount -l %s', then mount again", abs, ErrDeadMount, abs)
	case errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("%s: %w: create it with 'mkdir -p %s'", abs, ErrMountpointMissing, abs)
	case err != nil:
		return "", fmt.Errorf("%w %s: %w", ErrMountpoint, abs, err)
	case !fi.IsDir():
		return "", fmt.Errorf("%s: %w", abs, ErrNotDirectory)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", fmt.Errorf("%w %s: %w", ErrMountpoint, abs, err)
	}
	ms, err := mountsAt(real)
	if err != nil {
		return "", fmt.Errorf("%w %s: %w", ErrMountpoint, real, err)
	}
	if len(ms) == 0 {
		return real, nil
	}
	m := ms[len(ms)-1] // the top of the stack is what a new mount would cover
	if m.fstype == "fuse.dlockfs" || (strings.HasPrefix(m.fstype, "fuse") && m.source == "dlockfs") {
		return "", fmt.Errorf("%s: %w (%s: is another 'dlockfs mount' running? see 'dlockfs status %s'): "+
			"stop it, or run 'umount -l %s' if it is dead", real, ErrAlreadyMounted, m.fstype, real, real)
	}
	return "", fmt.Errorf("%s: %w (%s from %s): unmount it first ('umount %s') or choose another directory",
		real, ErrAlreadyMounted, m.fstype, m.source, real)
}

// CheckFUSE checks that this process can mount a FUSE file system, with
// allowOther as in [Options]: /dev/fuse exists and, for a non-root user,
// it is accessible, the setuid helper fusermount3 is installed and, for
// allowOther, /etc/fuse.conf has user_allow_other. Its error matches
// [ErrNoFUSE] and says exactly what is missing.
func CheckFUSE(allowOther bool) error {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("%w: /dev/fuse is missing: load the kernel module ('modprobe fuse'), "+
			"or in a container pass '--device /dev/fuse' (%w)", ErrNoFUSE, err)
	}
	if os.Geteuid() == 0 {
		return nil
	}
	// A non-root mount goes through the setuid helper, which opens
	// /dev/fuse itself; go-fuse looks for it in PATH, then in /bin.
	var missing []string
	if !haveFusermount() {
		missing = append(missing, "fusermount3 is not installed (not in PATH or /bin): a non-root mount needs "+
			"this setuid helper; install package fuse3 (Debian/Ubuntu: apt install fuse3)")
	}
	if f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0); err != nil {
		missing = append(missing, fmt.Sprintf("/dev/fuse cannot be opened by uid %d (%v): "+
			"it is usually mode crw-rw-rw-", os.Geteuid(), err))
	} else {
		f.Close()
	}
	if allowOther && !userAllowOther("/etc/fuse.conf") {
		missing = append(missing, "allow_other (--allow-other) as a non-root user needs a line "+
			"'user_allow_other' in /etc/fuse.conf")
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: cannot mount as a non-root user (or run as root): %s",
			ErrNoFUSE, strings.Join(missing, "; "))
	}
	return nil
}

// fusermountPath finds the setuid helper as go-fuse does: fusermount3,
// then fusermount, each in PATH and then in /bin.
func fusermountPath() (string, error) {
	var first error
	for _, bin := range []string{"fusermount3", "fusermount"} {
		for _, name := range []string{bin, "/bin/" + bin} {
			p, err := exec.LookPath(name)
			if err == nil {
				return p, nil
			}
			if first == nil {
				first = err
			}
		}
	}
	return "", first
}

// haveFusermount reports whether the setuid helper is installed.
func haveFusermount() bool {
	_, err := fusermountPath()
	return err == nil
}

// userAllowOther reports whether the fuse.conf at path enables
// user_allow_other.
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

// Detach unmounts dir lazily (umount -l): the mount disappears at once and
// ends when its last open file is closed. As root it calls umount2(2) with
// MNT_DETACH, otherwise fusermount3 -u -z.
func Detach(dir string) error {
	if os.Geteuid() == 0 {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			return fmt.Errorf("umount -l %s: %w", dir, err)
		}
		return nil
	}
	path, err := fusermountPath()
	if err != nil {
		return fmt.Errorf("umount -l %s: %w: %w", dir, ErrNoFUSE, err)
	}
	out, err := exec.Command(path, "-u", "-z", dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s -u -z %s: %w: %s", path, dir, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// MountsUnder lists the mount points at or below dir (an absolute,
// symlink-free path) in this process's mount namespace, in mount order.
func MountsUnder(dir string) ([]string, error) {
	prefix := strings.TrimSuffix(dir, "/") + "/"
	ms, err := mounts(func(p string) bool { return p == dir || strings.HasPrefix(p, prefix) })
	var out []string
	for _, m := range ms {
		out = append(out, m.mountpoint)
	}
	return out, err
}

// mountsAt returns the mounts whose mount point is dir (an absolute,
// symlink-free path), bottom of the stack first.
func mountsAt(dir string) ([]mountEntry, error) {
	return mounts(func(p string) bool { return p == dir })
}

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct {
	mountpoint string
	fstype     string
	source     string
}

// mounts returns the entries of this process's /proc/self/mountinfo whose
// mount point keep accepts, in mount order.
func mounts(keep func(mountpoint string) bool) ([]mountEntry, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("reading the mount table: %w", err)
	}
	defer f.Close()
	all, err := readMountinfo(f)
	if err != nil {
		return nil, err
	}
	var out []mountEntry
	for _, m := range all {
		if keep(m.mountpoint) {
			out = append(out, m)
		}
	}
	return out, nil
}

// readMountinfo parses the format of /proc/self/mountinfo (see proc(5)),
// skipping malformed lines.
func readMountinfo(r io.Reader) ([]mountEntry, error) {
	var out []mountEntry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [TAGS...] - FSTYPE SOURCE SUPER
		f := strings.Fields(sc.Text())
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+2 >= len(f) {
			continue
		}
		out = append(out, mountEntry{
			mountpoint: unescapeMountinfo(f[4]),
			fstype:     f[sep+1],
			source:     unescapeMountinfo(f[sep+2]),
		})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading the mount table: %w", err)
	}
	return out, nil
}

// unescapeMountinfo undoes the octal escapes (\040 for space, ...) of
// /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
