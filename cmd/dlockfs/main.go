package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// command is one entry of the command table.
type command struct {
	name    string
	summary string // one line for the command list
	help    string // full help text (see help.go)
	parse   func(*config, []string) error
	run     func(context.Context, *env, config) error
}

// env is what a command may touch besides its config: the standard streams.
type env struct {
	stdout, stderr io.Writer
}

// commands returns the command table, in the order help lists it. A command
// with a nil run is reserved: it is parsed as unknown-in-this-build and not
// listed.
func commands() []command {
	return []command{
		{name: "mount", summary: "run a peer and mount its lock directory (foreground)",
			help: helpMount, parse: parseMount, run: runMount},
		{name: "status", summary: "show a mount's members, locks and counters",
			help: helpStatus, parse: parseStatus, run: runStatus},
		{name: "lock", summary: "run a command holding a lock (a safe flock(1))",
			help: helpLock, parse: parseLock, run: runLock},
		{name: "check", summary: "exit 0 iff a path is a live dlockfs mount",
			help: helpCheck, parse: parseCheck, run: runCheck},
		{name: "keygen", summary: "print a new random cluster key",
			help: helpKeygen, parse: parseKeygen, run: runKeygen},
		{name: "install", summary: "install the binary, man page and systemd unit",
			help: helpInstall, parse: parseInstall, run: runInstall},
		{name: "uninstall", summary: "remove what install wrote",
			help: helpUninstall, parse: parseInstall, run: runUninstall},
		{name: "keys", summary: "list, install, use or remove cluster keys on every member (rotation)",
			help: helpKeys, parse: parseKeys, run: runKeys},
		{name: "forget", summary: "remove a dead node from the voters (majority mode)",
			help: helpForget, parse: parseForget, run: runForget},
		{name: "help", summary: "show help for dlockfs or a command",
			help: helpHelp, parse: parseHelp, run: runHelp},
		// Reserved for the lead: a self-contained multi-node demo and
		// a benchmark. Give them parse and run functions (in demo.go,
		// bench.go) and help texts; nothing else needs to change.
		{name: "demo", summary: "run a local demo cluster",
			help: helpDemo, parse: parseDemo, run: runDemo},
		{name: "bench", summary: "measure lock throughput and latency",
			help: helpBench, parse: parseBench, run: runBench},
	}
}

// lookupCommand finds a command by name.
func lookupCommand(name string) (command, bool) {
	for _, c := range commands() {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

func main() {
	if filepath.Base(os.Args[0]) == helperName {
		os.Exit(runMountHelper(os.Args[1:], os.Stderr))
	}
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command line and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	e := &env{stdout: stdout, stderr: stderr}
	cfg, err := parseArgs(args)
	if errors.Is(err, errHelp) {
		c, _ := lookupCommand(cfg.cmd)
		fmt.Fprint(stdout, c.help)
		return exitOK
	}
	if err != nil {
		prefix := "dlockfs"
		if _, ok := lookupCommand(cfg.cmd); ok {
			prefix += " " + cfg.cmd
		}
		fmt.Fprintf(stderr, "%s: %v\n", prefix, err)
		if cfg.cmd != "" && cfg.cmd != "help" && prefix != "dlockfs" {
			fmt.Fprintf(stderr, "Run 'dlockfs %s --help' for usage.\n", cfg.cmd)
		} else {
			fmt.Fprintf(stderr, "Run 'dlockfs help' for usage.\n")
		}
		return exitCode(err)
	}
	c, _ := lookupCommand(cfg.cmd)
	if err := c.run(ctx, e, cfg); err != nil {
		if !errors.Is(err, errSilent) {
			fmt.Fprintf(stderr, "dlockfs %s: %s\n", cfg.cmd, oneLine(err.Error()))
		}
		return exitCode(err)
	}
	return exitOK
}

// oneLine folds a multi-line error message (memberlist's multierror) into
// one line.
func oneLine(s string) string {
	var parts []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, " ")
}

// errSilent marks an error that was already reported (or needs no message).
var errSilent = errors.New("already reported")

// runHelp prints the overview or a command's help.
func runHelp(_ context.Context, e *env, cfg config) error {
	if cfg.topic != "" {
		c, _ := lookupCommand(cfg.topic)
		if c.help == "" {
			return codef(exitError, "%s: no help yet (not in this build)", cfg.topic)
		}
		fmt.Fprint(e.stdout, c.help)
		return nil
	}
	fmt.Fprint(e.stdout, overview())
	return nil
}
