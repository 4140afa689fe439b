package node

import (
	"context"

	"github.com/dlockfs/dlockfs/cmd/dlockfs/internal/cli"
)

// command makes a cli.Command of one of this package's commands: parse
// fills the command's part of a config, run runs it.
func command(name, summary, help string, parse func(*config, []string) error,
	run func(context.Context, *cli.Env, config) error) cli.Command {
	return cli.NewCommand(name, summary, help, func(args []string) (config, error) {
		cfg := config{cmd: name}
		err := parse(&cfg, args)
		return cfg, err
	}, run)
}

// Mount is "dlockfs mount".
func Mount() cli.Command {
	return command("mount", "run a peer and mount its lock directory (foreground)", helpMount, parseMount, runMount)
}

// Status is "dlockfs status".
func Status() cli.Command {
	return command("status", "show a mount's members, locks and counters", helpStatus, parseStatus, runStatus)
}

// Lock is "dlockfs lock".
func Lock() cli.Command {
	return command("lock", "run a command holding a lock (a safe flock(1))", helpLock, parseLock, runLock)
}

// Check is "dlockfs check".
func Check() cli.Command {
	return command("check", "exit 0 iff a path is a live dlockfs mount", helpCheck, parseCheck, runCheck)
}

// Keygen is "dlockfs keygen".
func Keygen() cli.Command {
	return command("keygen", "print a new random cluster key", helpKeygen, parseKeygen, runKeygen)
}

// Keys is "dlockfs keys".
func Keys() cli.Command {
	return command("keys", "list, install, use or remove cluster keys on every member (rotation)",
		helpKeys, parseKeys, runKeys)
}

// Forget is "dlockfs forget".
func Forget() cli.Command {
	return command("forget", "remove a dead node from the voters (majority mode)", helpForget, parseForget, runForget)
}
