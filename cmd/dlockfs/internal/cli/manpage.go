package cli

import (
	"fmt"
	"strings"
)

// ManPage renders dlockfs(1) in roff from the same texts as --help (the
// command table, each command's help, the exit code table), so the man
// page and the help cannot drift; TestManPage renders it with man -l and
// TestReadmeReference compares the README's reference with the same texts.
func ManPage(cmds []Command) string {
	var b strings.Builder
	b.WriteString(".TH DLOCKFS 1 \"\" \"dlockfs\" \"User Commands\"\n")
	b.WriteString(".SH NAME\ndlockfs \\- a peer\\-to\\-peer distributed lock you open like a file\n")

	b.WriteString(".SH SYNOPSIS\n.nf\n")
	for _, c := range cmds {
		for _, u := range UsageLines(c.Help) {
			b.WriteString(roffLine(u) + "\n")
		}
	}
	b.WriteString(".fi\n")

	desc, _, _ := strings.Cut(Overview(cmds), "\nUsage:")
	_, desc, _ = strings.Cut(desc, "\n\n")
	b.WriteString(".SH DESCRIPTION\n" + roffText(desc) + "\n")

	b.WriteString(".SH COMMANDS\n")
	for _, c := range cmds {
		body, _ := HelpParts(c.Help)
		fmt.Fprintf(&b, ".SS %s\n%s\n.PP\n%s\n", roffLine("dlockfs "+c.Name), roffLine(c.Summary+"."), roffBlock(body))
	}

	b.WriteString(".SH OPTIONS\n")
	for _, c := range cmds {
		if _, flags := HelpParts(c.Help); flags != "" {
			fmt.Fprintf(&b, ".SS %s\n%s\n", roffLine("dlockfs "+c.Name), roffBlock(flags))
		}
	}

	b.WriteString(".SH FILES\n")
	for _, f := range FilesTable() {
		fmt.Fprintf(&b, ".TP\n.I %s\n%s\n", roffLine(f.Path), roffLine(f.Text()))
	}

	b.WriteString(".SH EXIT CODES\n")
	for _, r := range ExitCodeTable() {
		fmt.Fprintf(&b, ".TP\n.B %d\n%s\n", r.Code, roffLine(r.Text()))
	}
	b.WriteString(".PP\n" + roffLine(plainText(exitCodesNote)) + "\n")

	b.WriteString(".SH EXAMPLES\n.nf\n")
	_, quick, _ := strings.Cut(Overview(cmds), "Quick start")
	quick, _, _ = strings.Cut(quick, "\nExit codes:")
	b.WriteString(roffBlockRaw("Quick start" + quick))
	b.WriteString(".fi\n")

	b.WriteString(".SH SEE ALSO\n.BR flock (1),\n.BR fusermount3 (1),\n.BR mount (8),\n.BR systemd.service (5)\n")
	return b.String()
}

// UsageLines returns a help text's usage lines without "Usage: ".
func UsageLines(help string) []string {
	var out []string
	for i, l := range strings.Split(help, "\n") {
		switch {
		case i == 0:
			out = append(out, strings.TrimPrefix(l, "Usage: "))
		case strings.HasPrefix(l, "       ") && len(out) == i:
			out = append(out, strings.TrimSpace(l))
		default:
			return out
		}
	}
	return out
}

// HelpParts splits a help text after its usage lines into the description
// and the "Flags:" block (without its heading).
func HelpParts(help string) (body, flags string) {
	lines := strings.Split(help, "\n")
	rest := strings.Join(lines[len(UsageLines(help)):], "\n")
	body, after, ok := strings.Cut(rest, "\nFlags:\n")
	if !ok {
		return strings.TrimSpace(rest), ""
	}
	flagBlock, tail, _ := strings.Cut(after, "\n\n")
	return strings.TrimSpace(body + "\n\n" + tail), flagBlock
}

// roffLine escapes one line of text for roff.
func roffLine(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

// roffText escapes paragraphs of running text (filled).
func roffText(s string) string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if strings.TrimSpace(l) == "" {
			out = append(out, ".PP")
			continue
		}
		out = append(out, roffLine(l))
	}
	return strings.Join(out, "\n")
}

// roffBlock keeps a help block's layout (no filling), in a .nf block.
func roffBlock(s string) string {
	return ".nf\n" + roffBlockRaw(s) + ".fi"
}

func roffBlockRaw(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.Trim(s, "\n"), "\n") {
		b.WriteString(roffLine(l) + "\n")
	}
	return b.String()
}
