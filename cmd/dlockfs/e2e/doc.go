// Package e2e holds dlockfs's end-to-end tests: real "dlockfs mount"
// processes forming Serf clusters on 127.0.0.1 (or in network namespaces
// for partitions), real FUSE mounts, and real bash workers taking the lock
// by opening MOUNT/lock.
//
// The package has no code of its own, only tests. TestMain builds the
// dlockfs binary once. The tests need root and /dev/fuse and skip with a
// message otherwise. They measure and log figures (takeover delays,
// failure detection, partition behaviour) without asserting timing: every
// wait is a bounded poll on a condition.
//
// Run them with
//
//	go test -v -count=1 ./cmd/dlockfs/e2e
//
// Set DLOCKFS_E2E_BINARY=/path/to/dlockfs to test a prebuilt binary
// instead of building one. Set DLOCKFS_E2E_LAN=1 to also run the partition test with the lan gossip
// profile (about 5 s failure detection; adds tens of seconds).
package e2e
