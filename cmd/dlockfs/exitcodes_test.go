package main

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/dlockfs/dlockfs/cmd/dlockfs/internal/cli"
)

// TestCommandExitCodes: every code that a command's help names in its
// "Exit codes:" paragraph is in cli.ExitCodeTable (the table that the
// overview, the man page and the README show; see the cli package's
// TestExitCodesDocumented).
func TestCommandExitCodes(t *testing.T) {
	known := map[int]bool{}
	for _, r := range cli.ExitCodeTable() {
		known[r.Code] = true
	}
	checked := 0
	for _, c := range commands() {
		_, para, ok := strings.Cut(c.Help, "\nExit codes:")
		if !ok {
			continue
		}
		para, _, _ = strings.Cut(para, "\n\n")
		for _, m := range regexp.MustCompile(`\b\d+\b`).FindAllString(para, -1) {
			n, _ := strconv.Atoi(m)
			if !known[n] && n != 128 { // 128+N: a signal killed CMD
				t.Errorf("%s --help names exit code %d, which is not in cli.ExitCodeTable:%s", c.Name, n, para)
			}
			checked++
		}
	}
	if checked < 20 {
		t.Fatalf("only %d exit codes named in the commands' help: is the \"Exit codes:\" paragraph gone?", checked)
	}
}
