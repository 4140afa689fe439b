package cli

import (
	"bytes"
	"context"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// testCommands is a command table of help and one command, "lock", that
// takes no arguments.
func testCommands() []Command {
	return []Command{
		{Name: "lock", Summary: "take a lock", Help: "Usage: dlockfs lock\n",
			Parse: func(args []string) (Runner, error) {
				pos, _, err := ParseInterspersed(NewFlagSet("lock"), args, -1)
				if err != nil {
					return nil, err
				}
				if len(pos) > 0 {
					return nil, Usagef("lock takes no arguments")
				}
				return func(context.Context, *Env) error { return nil }, nil
			}},
		Help(testCommands),
	}
}

func TestParse(t *testing.T) {
	for _, tt := range []struct {
		name     string
		args     []string
		wantName string
		err      string // "" = success, "usage", "help"
	}{
		{"help", []string{"help"}, "help", ""},
		{"help topic", []string{"help", "lock"}, "help", ""},
		{"help --help", []string{"help", "--help"}, "help", ""},
		{"help unknown topic", []string{"help", "nope"}, "help", "usage"},
		{"help two topics", []string{"help", "lock", "help"}, "help", "usage"},
		{"--help", []string{"--help"}, "help", ""},
		{"-h", []string{"-h"}, "help", ""},
		{"command help", []string{"lock", "--help"}, "lock", "help"},
		{"command -h after args", []string{"lock", "x", "-h"}, "lock", "help"},
		{"command", []string{"lock"}, "lock", ""},
		{"command extra", []string{"lock", "x"}, "lock", "usage"},
		{"no command", nil, "", "usage"},
		{"unknown command", []string{"frobnicate"}, "frobnicate", "usage"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			name, r, err := Parse(testCommands(), tt.args)
			if name != tt.wantName {
				t.Errorf("Parse(%q) names %q, want %q", tt.args, name, tt.wantName)
			}
			switch tt.err {
			case "":
				if err != nil || r == nil {
					t.Fatalf("Parse(%q): %v", tt.args, err)
				}
			case "usage":
				var ue *usageError
				if !errors.As(err, &ue) || ExitCode(err) != ExitUsage {
					t.Fatalf("Parse(%q) = %v (exit %d); want a usage error", tt.args, err, ExitCode(err))
				}
			case "help":
				if !errors.Is(err, ErrHelp) || ExitCode(err) != ExitOK {
					t.Fatalf("Parse(%q) = %v; want ErrHelp", tt.args, err)
				}
			}
		})
	}
}

func TestRun(t *testing.T) {
	for _, tt := range []struct {
		args        []string
		code        int
		out, errOut string
	}{
		{[]string{"help"}, ExitOK, "  lock       take a lock\n", ""},
		{[]string{"help", "lock"}, ExitOK, "Usage: dlockfs lock\n", ""},
		{[]string{"lock", "--help"}, ExitOK, "Usage: dlockfs lock\n", ""},
		{[]string{"lock", "x"}, ExitUsage, "", "dlockfs lock: lock takes no arguments\nRun 'dlockfs lock --help' for usage.\n"},
		{[]string{"nope"}, ExitUsage, "", "dlockfs: unknown command \"nope\"\nRun 'dlockfs help' for usage.\n"},
		{[]string{"lock"}, ExitOK, "", ""},
	} {
		var out, errOut bytes.Buffer
		code := Run(context.Background(), testCommands(), tt.args, &out, &errOut)
		if code != tt.code || !strings.Contains(out.String(), tt.out) || (tt.errOut != "" && errOut.String() != tt.errOut) {
			t.Errorf("Run(%q) = %d, stdout %q, stderr %q; want %d, %q, %q", tt.args, code, out.String(), errOut.String(),
				tt.code, tt.out, tt.errOut)
		}
	}
}

// TestExitCodesDocumented: every Exit constant of exitcodes.go (read from
// the source, not from a copy here) has one row in ExitCodeTable, every row
// is such a constant, and the README's EXIT CODES section is the table as
// ExitCodesMarkdown renders it. (The help and the man page render the same
// table.)
func TestExitCodesDocumented(t *testing.T) {
	consts := exitConstants(t)
	rows := map[int]bool{}
	for _, r := range ExitCodeTable() {
		if rows[r.Code] {
			t.Errorf("exit code %d documented twice", r.Code)
		}
		rows[r.Code] = true
		if !slices.Contains(slices.Collect(maps.Values(consts)), r.Code) {
			t.Errorf("exit code %d is in ExitCodeTable but no Exit constant has it", r.Code)
		}
	}
	for name, code := range consts {
		if !rows[code] {
			t.Errorf("%s (%d) is not in ExitCodeTable", name, code)
		}
	}
	readme, err := os.ReadFile("../../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(readme), "\n### EXIT CODES\n\n")
	if !ok {
		t.Fatal("README has no ### EXIT CODES section")
	}
	sec, _, _ = strings.Cut(sec, "\n###")
	if got, want := strings.TrimSpace(sec), strings.TrimSpace(ExitCodesMarkdown()); got != want {
		t.Errorf("README's EXIT CODES differ from ExitCodeTable; the section should read:\n%s\ngot:\n%s", want, got)
	}
}

// exitConstants reads the Exit constants and their values from
// exitcodes.go.
func exitConstants(t *testing.T) map[string]int {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "exitcodes.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, n := range vs.Names {
				if !strings.HasPrefix(n.Name, "Exit") || i >= len(vs.Values) {
					continue
				}
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok {
					t.Fatalf("%s: want a literal code", n.Name)
				}
				v, err := strconv.Atoi(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				out[n.Name] = v
			}
		}
	}
	if len(out) < 10 {
		t.Fatalf("found only %d Exit constants in exitcodes.go: %v", len(out), out)
	}
	return out
}
