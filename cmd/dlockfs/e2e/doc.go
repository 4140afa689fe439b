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
// Environment:
//
//	DLOCKFS_E2E_BINARY=/path/to/dlockfs  test a prebuilt binary instead of
//	                                     building one
//	DLOCKFS_E2E_RACE=1                   build it with the race detector
//	                                     (a race report fails the test)
//	DLOCKFS_E2E_NO_LAN=1                 skip the partition test with the
//	                                     lan profile (about 40 s, run in
//	                                     parallel with the fast one)
package e2e
