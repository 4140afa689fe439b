package main

import (
	"errors"
	"fmt"
)

// codedError is an error that decides the process's exit code.
type codedError struct {
	code int
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

// withCode wraps err so that the command exits with code.
func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &codedError{code: code, err: err}
}

// codef is fmt.Errorf (with %w) whose result exits with code.
func codef(code int, format string, args ...any) error {
	return withCode(code, fmt.Errorf(format, args...))
}

// usageError is a bad command line: exit code 2 and a hint to read --help.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// usagef returns a usageError.
func usagef(format string, args ...any) error {
	return &usageError{err: fmt.Errorf(format, args...)}
}

// errHelp asks for the command's help on stdout and exit code 0.
var errHelp = errors.New("help requested")

// exitCode maps an error returned by a command to the process exit code.
func exitCode(err error) int {
	var ce *codedError
	var ue *usageError
	switch {
	case err == nil, errors.Is(err, errHelp):
		return exitOK
	case errors.As(err, &ue):
		return exitUsage
	case errors.As(err, &ce):
		return ce.code
	}
	return exitError
}
