package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Command is one entry of the command table.
type Command struct {
	Name    string
	Summary string // one line for the command list
	Help    string // full help text
	// Parse parses the arguments after the command's name and returns the
	// command bound to its options. A bad command line is a usage error
	// (Usagef); --help anywhere gives ErrHelp.
	Parse func(args []string) (Runner, error)
}

// Runner runs a parsed command.
type Runner func(ctx context.Context, e *Env) error

// NewCommand makes a Command of a parse function, which turns the
// arguments into the command's options O, and a run function, which runs
// the command with them.
func NewCommand[O any](name, summary, help string, parse func(args []string) (O, error),
	run func(context.Context, *Env, O) error) Command {
	return Command{Name: name, Summary: summary, Help: help,
		Parse: func(args []string) (Runner, error) {
			o, err := parse(args)
			if err != nil {
				return nil, err
			}
			return func(ctx context.Context, e *Env) error { return run(ctx, e, o) }, nil
		}}
}

// Env is what a command may touch besides its options: the standard streams.
type Env struct {
	Stdout, Stderr io.Writer
}

// lookup finds a command by name.
func lookup(cmds []Command, name string) (Command, bool) {
	for _, c := range cmds {
		if c.Name == name {
			return c, true
		}
	}
	return Command{}, false
}

// Parse parses a command line (after the program name) against the command
// table: it returns the command's name and its runner. A usage error is a
// *usageError; --help anywhere gives ErrHelp with the name set.
func Parse(cmds []Command, args []string) (string, Runner, error) {
	if len(args) == 0 {
		return "", nil, Usagef("no command given")
	}
	name, rest := args[0], args[1:]
	switch name {
	case "-h", "-help", "--help":
		name = "help"
	}
	c, ok := lookup(cmds, name)
	if !ok {
		return name, nil, Usagef("unknown command %q", name)
	}
	r, err := c.Parse(rest)
	return name, r, err
}

// Run executes one command line against the command table and returns the
// exit code.
func Run(ctx context.Context, cmds []Command, args []string, stdout, stderr io.Writer) int {
	e := &Env{Stdout: stdout, Stderr: stderr}
	name, r, err := Parse(cmds, args)
	if errors.Is(err, ErrHelp) {
		c, _ := lookup(cmds, name)
		fmt.Fprint(stdout, c.Help)
		return ExitOK
	}
	if err != nil {
		prefix := "dlockfs"
		if _, ok := lookup(cmds, name); ok {
			prefix += " " + name
		}
		fmt.Fprintf(stderr, "%s: %v\n", prefix, err)
		if name != "" && name != "help" && prefix != "dlockfs" {
			fmt.Fprintf(stderr, "Run 'dlockfs %s --help' for usage.\n", name)
		} else {
			fmt.Fprintf(stderr, "Run 'dlockfs help' for usage.\n")
		}
		return ExitCode(err)
	}
	if err := r(ctx, e); err != nil {
		if !errors.Is(err, ErrSilent) {
			fmt.Fprintf(stderr, "dlockfs %s: %s\n", name, OneLine(err.Error()))
		}
		return ExitCode(err)
	}
	return ExitOK
}

// OneLine folds a multi-line error message (memberlist's multierror) into
// one line.
func OneLine(s string) string {
	var parts []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, " ")
}

// ErrSilent marks an error that was already reported (or needs no message).
var ErrSilent = errors.New("already reported")

// Help is "dlockfs help [COMMAND]": the overview of the commands cmds
// returns, or one command's help.
func Help(cmds func() []Command) Command {
	return Command{Name: "help", Summary: "show help for dlockfs or a command", Help: helpHelp,
		Parse: func(args []string) (Runner, error) {
			pos, _, err := ParseInterspersed(NewFlagSet("help"), args, -1)
			if err != nil && !errors.Is(err, ErrHelp) {
				return nil, err
			}
			var topic string
			switch len(pos) {
			case 0:
			case 1:
				if _, ok := lookup(cmds(), pos[0]); !ok {
					return nil, Usagef("no help for unknown command %q", pos[0])
				}
				topic = pos[0]
			default:
				return nil, Usagef("help takes at most one COMMAND, got %q", pos)
			}
			return func(_ context.Context, e *Env) error {
				if topic != "" {
					c, _ := lookup(cmds(), topic)
					fmt.Fprint(e.Stdout, c.Help)
					return nil
				}
				fmt.Fprint(e.Stdout, Overview(cmds()))
				return nil
			}, nil
		}}
}

const helpHelp = `Usage: dlockfs help [COMMAND]

Show the overview of dlockfs, or the help of COMMAND (same as
'dlockfs COMMAND --help').
`
