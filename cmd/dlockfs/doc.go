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
//	dlockfs help [COMMAND]
//
// "dlockfs help" and "dlockfs COMMAND --help" are the reference: flags,
// defaults, examples and the exit codes (exitcodes.go holds the table).
//
// Layout: args.go parses the command line into one config (parseArgs,
// table-tested); main.go holds the command table and maps errors to exit
// codes (exitcodes.go); help.go holds the help texts; mount.go runs the
// daemon and fusecheck.go says what FUSE lacks; mountpoint.go checks
// mountpoints and live mounts; lock.go (lock, check), status.go and key.go
// (keygen, --key-file) are the other commands; keys.go holds the keys
// command and the mount's control socket it talks to. main_test.go builds the
// binary once and drives it as a child process against real mounts.
package main
