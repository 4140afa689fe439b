// Package install is "dlockfs install" and "dlockfs uninstall" (install.go:
// the binary, the man page, the systemd unit and the mount helper, written
// under a prefix and listed in a manifest that uninstall reads), and the
// mount helper mount.fuse.dlockfs itself (mounthelper.go), which mount(8)
// runs for "mount -t fuse.dlockfs" and fstab lines.
package install
