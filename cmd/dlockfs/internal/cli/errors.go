package cli

import (
	"errors"
	"fmt"

	"github.com/dlockfs/dlockfs/fs"
	"github.com/dlockfs/dlockfs/mutex/peer"
)

// codedError is an error that decides the process's exit code.
type codedError struct {
	code int
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

// WithCode wraps err so that the command exits with code.
func WithCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &codedError{code: code, err: err}
}

// Codef is fmt.Errorf (with %w) whose result exits with code.
func Codef(code int, format string, args ...any) error {
	return WithCode(code, fmt.Errorf(format, args...))
}

// usageError is a bad command line: exit code 2 and a hint to read --help.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// Usagef returns a usage error (exit code 2).
func Usagef(format string, args ...any) error {
	return &usageError{err: fmt.Errorf(format, args...)}
}

// Usage makes err a usage error (exit code 2).
func Usage(err error) error { return &usageError{err: err} }

// ErrHelp asks for the command's help on stdout and exit code 0.
var ErrHelp = errors.New("help requested")

// ExitCode maps an error returned by a command to the process exit code.
func ExitCode(err error) int {
	var ce *codedError
	var ue *usageError
	switch {
	case err == nil, errors.Is(err, ErrHelp):
		return ExitOK
	case errors.As(err, &ue):
		return ExitUsage
	case errors.As(err, &ce):
		return ce.code
	}
	return ExitError
}

// MountError gives an error of fs.CheckMountpoint, fs.CheckFUSE or
// fs.Mount its exit code: ExitMountpoint for the mountpoint, ExitFUSE when
// FUSE is unavailable or the mount failed otherwise.
func MountError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, fs.ErrMountpoint):
		return WithCode(ExitMountpoint, err)
	default: // fs.ErrNoFUSE, or the mount itself failed
		return WithCode(ExitFUSE, err)
	}
}

// JoinError gives an error of peer.Start its exit code, ExitJoin, with a
// hint where one helps.
func JoinError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, peer.ErrNotGossipPort):
		return Codef(ExitJoin, "%w", err)
	case errors.Is(err, peer.ErrKeyMismatch):
		return Codef(ExitJoin, "%w (every member needs the same --key-file)", err)
	}
	return Codef(ExitJoin, "starting the peer: %w", err)
}
