// Package cli is the command line of dlockfs, apart from the commands
// themselves: the command table's type and its dispatch (Parse, Run), the
// flag helpers every command parses with (flags.go), the errors that decide
// the exit code (errors.go) and the exit codes themselves (exitcodes.go, the
// one table that help, the man page and the README show), the overview of
// "dlockfs help" (help.go), the man page rendered from the help texts
// (manpage.go), the logger (log.go) and the bounds of a graceful shutdown
// (shutdown.go).
//
// The commands live in node (mount, status, lock, check, keygen, keys,
// forget), install (install, uninstall, the mount helper), demo and bench;
// package main lists them in one table.
package cli
