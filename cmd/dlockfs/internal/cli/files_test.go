package cli

import (
	"strings"
	"testing"
)

// TestFilesDocumented: the README's FILES section is FilesTable rendered by
// FilesMarkdown (the man page renders the same table), and the table names
// the files mount writes.
func TestFilesDocumented(t *testing.T) {
	sec, _, _ := strings.Cut(readmeSection(t, "FILES"), "\n\n") // the table, not the text after it
	if got, want := strings.TrimSpace(sec), strings.TrimSpace(FilesMarkdown()); got != want {
		t.Errorf("README's FILES differ from FilesTable; the table should read:\n%s\ngot:\n%s", want, got)
	}
	man := ManPage(nil)
	for _, f := range FilesTable() {
		if !strings.Contains(man, roffLine(f.Path)) {
			t.Errorf("the man page's FILES lack %s", f.Path)
		}
	}
	for _, p := range []string{"MOUNTPOINT.sock", "hardstate.json", "keyring.json", "MOUNTPOINT/.status"} {
		if !strings.Contains(FilesMarkdown(), p) {
			t.Errorf("FilesTable lacks %s", p)
		}
	}
}
