package fs

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// TestMountErrors: bad options and mount points are refused with the
// sentinel and the fix in the message, by CheckMountpoint and by Mount.
func TestMountErrors(t *testing.T) {
	if _, err := Mount(t.TempDir(), Options{}); err == nil || !strings.Contains(err.Error(), "Locker") {
		t.Errorf("nil Locker: %v", err)
	}

	missing := filepath.Join(t.TempDir(), "nope")
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	fk := newFake()
	live, _ := testMount(t, fk)
	dead := deadMount(t)
	tmpfs := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "tmpfs-test", tmpfs).CombinedOutput(); err != nil {
		t.Fatalf("mount a tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(tmpfs, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount tmpfs: %v", err)
		}
	})

	for _, tc := range []struct {
		name, dir string
		want      error
		text      []string
	}{
		{"missing", missing, ErrMountpointMissing, []string{"does not exist", "mkdir -p " + missing}},
		{"file", file, ErrNotDirectory, []string{file, "not a directory"}},
		{"live dlockfs", live, ErrAlreadyMounted, []string{"already a mount point (fuse.dlockfs", "dlockfs status " + live, "umount -l " + live}},
		{"dead", dead, ErrDeadMount, []string{"dead FUSE mount", "umount -l " + dead}},
		{"tmpfs", tmpfs, ErrAlreadyMounted, []string{"already a mount point (tmpfs from tmpfs-test)", "umount " + tmpfs}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := CheckMountpoint(tc.dir)
			_, merr := Mount(tc.dir, Options{Locker: newFake(), Logger: quietLogger(t)})
			for what, err := range map[string]error{"CheckMountpoint": err, "Mount": merr} {
				if !errors.Is(err, tc.want) || !errors.Is(err, ErrMountpoint) || errors.Is(err, ErrNoFUSE) {
					t.Errorf("%s: %v; want %v, which is an ErrMountpoint", what, err, tc.want)
					continue
				}
				for _, text := range tc.text {
					if !strings.Contains(err.Error(), text) {
						t.Errorf("%s: %q lacks %q", what, err, text)
					}
				}
			}
		})
	}
	// The sentinels are distinct.
	if errors.Is(ErrDeadMount, ErrAlreadyMounted) || errors.Is(ErrMountpoint, ErrDeadMount) {
		t.Error("sentinels match each other")
	}
}

// TestCheckMountpointPath: the path returned is absolute and symlink-free.
func TestCheckMountpointPath(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := CheckMountpoint(link); err != nil || got != real {
		t.Errorf("CheckMountpoint(%s) = %q, %v; want %q", link, got, err, real)
	}
	if err := CheckFUSE(false); err != nil {
		t.Errorf("CheckFUSE: %v", err)
	}
}

// TestMountsUnder: mounts at or below a directory are listed, not those
// beside it.
func TestMountsUnder(t *testing.T) {
	fk := newFake()
	mnt, _ := testMount(t, fk)
	parent := filepath.Dir(mnt)
	for dir, want := range map[string]bool{mnt: true, parent: true, parent + "/": true, mnt + "x": false, filepath.Join(mnt, "lock"): false} {
		got, err := MountsUnder(dir)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(got, mnt) != want {
			t.Errorf("MountsUnder(%s) = %q; want %s listed: %v", dir, got, mnt, want)
		}
	}
}

// TestReadMountinfo: the fields are found after the optional tags, escapes
// are decoded and malformed lines skipped.
func TestReadMountinfo(t *testing.T) {
	in := `22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
61 22 0:52 / /tmp/with\040space rw,nosuid,nodev,relatime shared:33 - fuse.dlockfs dlockfs rw,user_id=0,group_id=0
62 22 0:53 / /mnt/x rw master:2 shared:3 - tmpfs none rw
63 22 0:54 / /mnt/y rw - tmpfs
broken line
`
	got, err := readMountinfo(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []mountEntry{
		{"/", "ext4", "/dev/sda1"},
		{"/tmp/with space", "fuse.dlockfs", "dlockfs"},
		{"/mnt/x", "tmpfs", "none"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
}

// TestMountpointUnescape: mountinfo escapes are decoded.
func TestMountpointUnescape(t *testing.T) {
	for in, want := range map[string]string{`/a\040b`: "/a b", `/plain`: "/plain", `/x\134y`: `/x\y`, `/t\01`: `/t\01`, `/e\040`: "/e "} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

// deadMount mounts a fresh directory in a helper process and kills it,
// leaving a dead FUSE mount (detached at cleanup).
func deadMount(t *testing.T) string {
	t.Helper()
	dead := t.TempDir()
	p := startHelper(t, "mount", dead, "0")
	p.expect("mounted")
	p.signal(syscall.SIGKILL)
	p.wait()
	t.Cleanup(func() {
		if err := syscall.Unmount(dead, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount dead mount: %v", err)
		}
	})
	return dead
}
