package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
)

// NewFlagSet returns a silent flag set: usage and errors are ours to print.
func NewFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// ParseInterspersed parses args with fs, allowing flags before, between and
// after the positional arguments (the stdlib flag package stops at the first
// positional). "--" ends the flags. With stop >= 0, the positional after the
// first stop positionals begins the tail: it and everything after it are
// returned unparsed (a command and its own arguments).
func ParseInterspersed(fs *flag.FlagSet, args []string, stop int) (pos, tail []string, err error) {
	var flags []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest := args[i+1:]
			for len(rest) > 0 && (stop < 0 || len(pos) < stop) {
				pos, rest = append(pos, rest[0]), rest[1:]
			}
			tail = rest
			break
		}
		if len(a) > 1 && a[0] == '-' {
			flags = append(flags, a)
			name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
			if f := fs.Lookup(name); f != nil && !hasValue && !isBoolFlag(f) && i+1 < len(args) {
				i++
				flags = append(flags, args[i])
			}
			continue
		}
		if stop >= 0 && len(pos) == stop {
			tail = args[i:]
			break
		}
		pos = append(pos, a)
	}
	if err := fs.Parse(flags); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, nil, ErrHelp
		}
		return nil, nil, &usageError{err: err}
	}
	return pos, tail, nil
}

// isBoolFlag reports whether f takes no value (like -debug).
func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// OnePositional checks that exactly one positional argument, what, is given.
func OnePositional(pos []string, what string) error {
	switch len(pos) {
	case 0:
		return Usagef("missing %s", what)
	case 1:
		if pos[0] == "" {
			return Usagef("empty %s", what)
		}
		return nil
	}
	return Usagef("want one %s, got %d arguments: %q", what, len(pos), pos)
}

// CheckHostPort accepts IP:PORT or HOST:PORT with a numeric port.
func CheckHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("want IP:PORT: %w", err)
	}
	if host == "" {
		return errors.New("want IP:PORT: missing IP")
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("want IP:PORT: bad port %q", port)
	}
	return nil
}

// ListFlag is a repeatable flag whose values may also be comma-separated.
type ListFlag []string

func (l *ListFlag) String() string { return strings.Join(*l, ",") }

func (l *ListFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// AbsPath makes p absolute and clean, without following symlinks.
func AbsPath(p string) (string, error) {
	a, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("%s: %w", p, err)
	}
	return a, nil
}

// ParseOne parses args with fs (flags interspersed) and returns the one
// positional argument, what, that the command takes.
func ParseOne(fs *flag.FlagSet, args []string, what string) (string, error) {
	pos, _, err := ParseInterspersed(fs, args, -1)
	if err != nil {
		return "", err
	}
	if err := OnePositional(pos, what); err != nil {
		return "", err
	}
	return pos[0], nil
}
