package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// fuseSuperMagic is statfs(2)'s f_type of every FUSE filesystem.
const fuseSuperMagic = 0x65735546

// statusFile is the name of the status file at the root of a mount.
const statusFile = ".status"

// liveTimeout bounds reading .status when checking a mount: a hung daemon
// must not hang status, check or lock forever.
const liveTimeout = 10 * time.Second

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct {
	mountpoint string
	fstype     string
	source     string
}

// readMountinfo parses /proc/self/mountinfo (see proc(5)).
func readMountinfo(r io.Reader) ([]mountEntry, error) {
	var out []mountEntry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		// id parent maj:min root mountpoint options [optional...] - fstype source superopts
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if len(f) < 5 || sep < 0 || sep+2 >= len(f) {
			continue
		}
		out = append(out, mountEntry{
			mountpoint: unescapeMountinfo(f[4]),
			fstype:     f[sep+1],
			source:     unescapeMountinfo(f[sep+2]),
		})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading mountinfo: %w", err)
	}
	return out, nil
}

// unescapeMountinfo undoes the octal escapes (\040 for space...) of
// /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountsAt returns the mounts whose mount point is dir (an absolute,
// symlink-free path).
func mountsAt(dir string) ([]mountEntry, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("cannot check for existing mounts: %w", err)
	}
	defer f.Close()
	all, err := readMountinfo(f)
	if err != nil {
		return nil, err
	}
	var out []mountEntry
	for _, m := range all {
		if m.mountpoint == dir {
			out = append(out, m)
		}
	}
	return out, nil
}

// checkMountpoint refuses a directory that mount must not use, with the fix
// in the message (exit code 10). It returns the absolute, symlink-free path.
func checkMountpoint(dir string) (string, error) {
	abs, err := absPath(dir)
	if err != nil {
		return "", withCode(exitMountpoint, err)
	}
	fi, err := os.Stat(abs)
	switch {
	case errors.Is(err, syscall.ENOTCONN), errors.Is(err, syscall.ECONNABORTED):
		return "", codef(exitMountpoint,
			"%s is a dead FUSE mount (its daemon is gone): run 'umount -l %s', then mount again", abs, abs)
	case errors.Is(err, os.ErrNotExist):
		return "", codef(exitMountpoint, "mountpoint %s does not exist: create it with 'mkdir -p %s'", abs, abs)
	case err != nil:
		return "", codef(exitMountpoint, "mountpoint: %w", err)
	case !fi.IsDir():
		return "", codef(exitMountpoint, "mountpoint %s is not a directory", abs)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", codef(exitMountpoint, "mountpoint: %w", err)
	}
	ms, err := mountsAt(real)
	if err != nil {
		return "", withCode(exitMountpoint, err)
	}
	if len(ms) > 0 {
		m := ms[len(ms)-1] // the top of the stack is what a new mount would cover
		if m.fstype == "fuse.dlockfs" || (strings.HasPrefix(m.fstype, "fuse") && m.source == "dlockfs") {
			return "", codef(exitMountpoint,
				"%s is already a dlockfs mount (is another 'dlockfs mount' running? see 'dlockfs status %s'); "+
					"stop it, or run 'umount -l %s' if it is dead", real, real, real)
		}
		return "", codef(exitMountpoint,
			"%s is already a mount point (%s from %s): unmount it first ('umount %s') or choose another directory",
			real, m.fstype, m.source, real)
	}
	return real, nil
}

// liveMount is what checkLive found.
type liveMount struct {
	root   string // the mount's root directory
	status []byte // the raw .status JSON
}

// checkLive verifies that dir is the root of a live dlockfs mount: a FUSE
// filesystem (statfs) whose .status file reads as dlockfs status JSON. Its
// errors exit with code 16 and say what to do.
func checkLive(ctx context.Context, dir string) (liveMount, error) {
	abs, err := absPath(dir)
	if err != nil {
		return liveMount{}, withCode(exitNotMounted, err)
	}
	var sfs syscall.Statfs_t
	err = syscall.Statfs(abs, &sfs)
	switch {
	case errors.Is(err, syscall.ENOTCONN), errors.Is(err, syscall.ECONNABORTED):
		return liveMount{}, codef(exitNotMounted,
			"%s is a dead dlockfs mount (its daemon is gone): run 'umount -l %s' and start 'dlockfs mount' again", abs, abs)
	case errors.Is(err, syscall.ENOENT):
		return liveMount{}, codef(exitNotMounted, "%s does not exist", abs)
	case err != nil:
		return liveMount{}, codef(exitNotMounted, "%s: %w", abs, err)
	case sfs.Type != fuseSuperMagic:
		return liveMount{}, codef(exitNotMounted,
			"%s is not a dlockfs mount (not a FUSE filesystem): is 'dlockfs mount %s' running?", abs, abs)
	}
	st, err := readWithTimeout(ctx, filepath.Join(abs, statusFile), liveTimeout)
	switch {
	case errors.Is(err, syscall.ENOTCONN), errors.Is(err, syscall.ECONNABORTED):
		return liveMount{}, codef(exitNotMounted,
			"%s is a dead dlockfs mount (its daemon is gone): run 'umount -l %s' and start 'dlockfs mount' again", abs, abs)
	case errors.Is(err, os.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		return liveMount{}, codef(exitNotMounted,
			"%s is a FUSE filesystem but not the root of a dlockfs mount (no %s)", abs, statusFile)
	case err != nil:
		return liveMount{}, codef(exitNotMounted, "%s: reading %s: %w", abs, statusFile, err)
	}
	var probe struct {
		Node *string `json:"node"`
	}
	if err := json.Unmarshal(st, &probe); err != nil || probe.Node == nil {
		return liveMount{}, codef(exitNotMounted, "%s is not a dlockfs mount (%s is not dlockfs status)", abs, statusFile)
	}
	return liveMount{root: abs, status: st}, nil
}

// readWithTimeout reads a whole file, giving up after d (the read goes on in
// the background: a FUSE read cannot be abandoned, and the process is about
// to exit anyway).
func readWithTimeout(ctx context.Context, path string, d time.Duration) ([]byte, error) {
	type result struct {
		b   []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		b, err := os.ReadFile(path)
		ch <- result{b, err}
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case r := <-ch:
		return r.b, r.err
	case <-t.C:
		return nil, fmt.Errorf("no answer in %v (is the daemon hung?)", d)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
