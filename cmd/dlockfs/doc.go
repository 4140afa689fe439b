// Command dlockfs is a peer-to-peer distributed lock exposed as files.
//
// Every node runs "dlockfs mount MOUNTPOINT": a Ricart–Agrawala peer
// (mutex/peer, membership by Serf) behind a FUSE mount (fs). Opening
// MOUNTPOINT/NAME blocks until every live member has granted lock NAME;
// the last close of that open file releases it.
//
// Synopsis:
//
//	dlockfs mount [flags] MOUNTPOINT
//	dlockfs status [--json] MOUNTPOINT
//	dlockfs lock [--try | --timeout DUR] MOUNTPOINT[/NAME] [--] CMD [ARGS...]
//	dlockfs check [-q] MOUNTPOINT
//	dlockfs keygen
//	dlockfs keys [--control PATH] [--json] list | install KEY | use KEY | remove KEY
//	dlockfs forget [--control PATH] [--force] NODE
//	dlockfs break [--control PATH] NAME
//	dlockfs install | uninstall [--prefix DIR]
//	dlockfs demo | bench [flags]
//	dlockfs help [COMMAND]
//
// "dlockfs help" and "dlockfs COMMAND --help" are the reference: flags,
// defaults, examples and the exit codes.
//
// This package is only the dispatch: main.go lists the commands in one
// table and hands the command line to internal/cli. The parts:
//
//   - internal/cli: the command line itself: dispatch, flag helpers, exit
//     codes and the errors that carry them, the help overview, the man page;
//   - internal/node: mount (the daemon) and the commands that talk to a
//     mount: status, lock, check, keys, forget, break,
//     keygen;
//   - internal/install: install, uninstall and the mount helper
//     (mount.fuse.dlockfs, which main runs when called by that name);
//   - internal/localcluster: the in-process cluster that demo and bench run;
//   - internal/demo and internal/bench: the demo and the benchmark.
//
// main_test.go, demo_test.go, bench_test.go and install_test.go build the
// binary once and drive it as a child process against real mounts; e2e
// holds the multi-node end-to-end suite.
package main
