// Package node holds the commands of one dlockfs node: "dlockfs mount", the
// daemon that runs a peer behind a FUSE mount, and the commands that talk to
// a running mount: status, lock, check, keys and forget (and keygen, which
// makes the key a mount reads).
//
// Layout: commands.go lists the commands; args.go parses their flags into a
// config and help.go holds their help texts. mount.go runs the daemon:
// drain.go is the Locker it serves (the draining stop at SIGTERM),
// metrics.go its Prometheus endpoint, notify.go the systemd readiness
// message, and keys.go the control socket that keys and forget (forget.go)
// talk to. mountpoint.go checks that a path is a live mount, for status
// (status.go), lock and check (lock.go). key.go reads --key-file and is
// keygen.
package node
