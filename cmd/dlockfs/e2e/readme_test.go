package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dlockfs/dlockfs/mutex/testutil"
)

// The README walk: the shell blocks of README.md are extracted at test
// time and run, as written, with bash on a real 3-peer cluster, and what
// the README claims of each line is checked.
//
// A block is walked when an HTML comment starting "<!-- walk" comes right
// before its fence (invisible on GitHub). "<!-- walk: skip REASON -->"
// skips it, saying why. Otherwise each further line of the comment, up to
// "-->", is an entry:
//
//	"KEY" EXPECTATION...
//
// KEY is a substring naming exactly one line of the block (comment-only
// and blank lines are not steps). The lines run in order in one bash, in
// a directory of stub programs standing in for the README's placeholders,
// with /run/dlockfs replaced by peer a's mount and dlockfs on PATH the
// binary under test. A line with no entry runs once and must exit 0; a
// line with several entries runs once per entry, in order. EXPECTATIONs
// (a VALUE may be a Go double-quoted string):
//
//	exit=N          the line's exit status (default 0)
//	stdout=S        its standard output, exactly
//	stdout~=RE      its standard output matches RE
//	$VAR~=RE        shell variable VAR matches RE after the line
//	ran=A,B|none    exactly these stubs ran during the line
//	in=NAME         each stub that ran found lock NAME busy from peer c
//	                (lock --try exits 12): the lock was held around it
//	token=set       each stub that ran had a numeric $DLOCKFS_TOKEN
//	args=S, args~=RE  each stub's arguments (joined by spaces)
//	held=NAME       after the line, NAME is busy from peer c
//	free=NAME       after the line, NAME becomes free from peer c
//	busy=NAME       a shell on peer b holds NAME while the line runs
//	wait=NAME       a shell on peer b holds NAME when the line starts and
//	                releases it once peer a has an opener waiting for it
//	withdrawn=NAME  with busy: once the line is done, no request is left
//	                on NAME on any peer while b still holds it, and NAME
//	                is idle everywhere once b releases it
//	sub=OLD/NEW     run the line with OLD replaced by NEW (shortens the
//	                README's waits)
//	M=unmounted     run the line in a subshell with M an empty directory
//	                where nothing is mounted
//
// Every ```sh block of the sections in walkSections must have a marker.

// walkSections are the README sections whose every shell block is walked
// (or skipped with a reason).
var walkSections = []string{"## Using it from the shell", "## flock(1) and legacy programs"}

// readmePlaceholder is the mountpoint the README's blocks use.
const readmePlaceholder = "/run/dlockfs"

// walkBlock is a marked shell block of the README.
type walkBlock struct {
	line    int    // of the fence, 1-based
	section string // "## ..." it is under ("" before the first)
	skip    string // why it is skipped ("" if walked)
	lines   []string
	entries []walkEntry
}

func (b walkBlock) String() string {
	sec := b.section
	if sec == "" {
		sec = "the introduction"
	}
	return fmt.Sprintf("README.md:%d (block under %q)", b.line, sec)
}

// walkEntry is one line of a walk marker.
type walkEntry struct {
	line int // in README.md
	key  string
	kv   [][2]string // in order; key "stdout~", "$token~", ...
}

func (e walkEntry) get(k string) (string, bool) {
	for _, p := range e.kv {
		if p[0] == k {
			return p[1], true
		}
	}
	return "", false
}

// walkStep is one run of a block's line.
type walkStep struct {
	text  string // the line as the README has it
	entry walkEntry
	n     int // runs of this line so far, 1-based
}

func (s walkStep) String() string {
	var kv []string
	for _, p := range s.entry.kv {
		op := "="
		k := p[0]
		if strings.HasSuffix(k, "~") {
			k, op = strings.TrimSuffix(k, "~"), "~="
		}
		kv = append(kv, k+op+strconv.Quote(p[1]))
	}
	cond := ""
	if len(kv) > 0 {
		cond = " [" + strings.Join(kv, " ") + "]"
	}
	return fmt.Sprintf("line %q, run %d%s", strings.TrimSpace(s.text), s.n, cond)
}

// walkKeys are the expectations an entry may have.
var walkKeys = map[string]bool{
	"exit": true, "stdout": true, "stdout~": true, "ran": true, "in": true, "token": true,
	"args": true, "args~": true, "held": true, "free": true, "busy": true, "wait": true,
	"withdrawn": true, "sub": true, "M": true,
}

// walkSplitFields splits an entry line on blanks outside double quotes.
func walkSplitFields(s string) ([]string, error) {
	var out []string
	var cur strings.Builder
	inQ, esc, have := false, false, false
	for _, r := range s {
		switch {
		case esc:
			cur.WriteRune(r)
			esc = false
		case inQ && r == '\\':
			cur.WriteRune(r)
			esc = true
		case r == '"':
			cur.WriteRune(r)
			inQ, have = !inQ, true
		case !inQ && (r == ' ' || r == '\t'):
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if inQ {
		return nil, errors.New("unterminated quote")
	}
	if have {
		out = append(out, cur.String())
	}
	return out, nil
}

// unquote returns a value, unquoting a Go double-quoted string.
func walkUnquote(v string) (string, error) {
	if strings.HasPrefix(v, `"`) {
		return strconv.Unquote(v)
	}
	return v, nil
}

// parseWalkEntry parses `"KEY" k=v ...`.
func parseWalkEntry(line int, s string) (walkEntry, error) {
	f, err := walkSplitFields(s)
	if err != nil {
		return walkEntry{}, err
	}
	if len(f) == 0 || !strings.HasPrefix(f[0], `"`) {
		return walkEntry{}, errors.New(`an entry starts with a quoted "KEY"`)
	}
	e := walkEntry{line: line}
	if e.key, err = strconv.Unquote(f[0]); err != nil || e.key == "" {
		return walkEntry{}, fmt.Errorf("bad key %s", f[0])
	}
	for _, kv := range f[1:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return walkEntry{}, fmt.Errorf("%q: want KEY=VALUE or KEY~=RE", kv)
		}
		if !walkKeys[k] && !(strings.HasPrefix(k, "$") && strings.HasSuffix(k, "~") && len(k) > 2) {
			return walkEntry{}, fmt.Errorf("%q: unknown expectation %q", kv, k)
		}
		if v, err = walkUnquote(v); err != nil {
			return walkEntry{}, fmt.Errorf("%q: %v", kv, err)
		}
		if strings.HasSuffix(k, "~") {
			if _, err := regexp.Compile(v); err != nil {
				return walkEntry{}, fmt.Errorf("%q: %v", kv, err)
			}
		}
		if k == "exit" {
			if _, err := strconv.Atoi(v); err != nil {
				return walkEntry{}, fmt.Errorf("%q: exit is a number", kv)
			}
		}
		if k == "sub" && !strings.Contains(v, "/") {
			return walkEntry{}, fmt.Errorf("%q: sub is OLD/NEW", kv)
		}
		if k == "M" && v != "unmounted" {
			return walkEntry{}, fmt.Errorf("%q: M=unmounted is the only one", kv)
		}
		e.kv = append(e.kv, [2]string{k, v})
	}
	return e, nil
}

// readmeBlocks extracts the README's marked shell blocks, and reports (as
// errors) unmarked ones in walkSections and malformed markers.
func readmeBlocks(readme string) ([]walkBlock, []error) {
	var blocks []walkBlock
	var errs []error
	lines := strings.Split(readme, "\n")
	section := ""
	var marker *walkBlock
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		switch {
		case strings.HasPrefix(l, "## "):
			section = l
		case strings.HasPrefix(l, "<!-- walk"):
			b := walkBlock{section: section}
			head := strings.TrimSpace(strings.TrimPrefix(l, "<!-- walk"))
			closed := strings.HasSuffix(head, "-->")
			head = strings.TrimSpace(strings.TrimSuffix(head, "-->"))
			if r, ok := strings.CutPrefix(head, ": skip"); ok {
				b.skip = strings.TrimSpace(r)
				if b.skip == "" {
					errs = append(errs, fmt.Errorf("README.md:%d: a skip needs a reason", i+1))
				}
			}
			for !closed {
				i++
				if i == len(lines) {
					errs = append(errs, errors.New("README.md: a walk marker is never closed by -->"))
					return blocks, errs
				}
				t := strings.TrimSpace(lines[i])
				if closed = strings.HasSuffix(t, "-->"); closed {
					t = strings.TrimSpace(strings.TrimSuffix(t, "-->"))
				}
				if t == "" || strings.HasPrefix(t, "#") {
					continue
				}
				e, err := parseWalkEntry(i+1, t)
				if err != nil {
					errs = append(errs, fmt.Errorf("README.md:%d: walk entry: %v", i+1, err))
					continue
				}
				b.entries = append(b.entries, e)
			}
			if i+1 >= len(lines) || !strings.HasPrefix(lines[i+1], "```") {
				errs = append(errs, fmt.Errorf("README.md:%d: a walk marker must come right before a ``` fence", i+1))
				continue
			}
			marker = &b
		case strings.HasPrefix(l, "```"):
			fence := i + 1
			lang := strings.TrimPrefix(l, "```")
			var body []string
			for i++; i < len(lines) && !strings.HasPrefix(lines[i], "```"); i++ {
				body = append(body, lines[i])
			}
			if marker != nil {
				marker.line, marker.lines = fence, body
				blocks = append(blocks, *marker)
				marker = nil
			} else if lang == "sh" && slices.Contains(walkSections, section) {
				errs = append(errs, fmt.Errorf("README.md:%d: the shell block under %q has no <!-- walk --> marker "+
					"(see cmd/dlockfs/e2e/readme_test.go)", fence, section))
			}
		}
	}
	return blocks, errs
}

// isWalkStep reports whether a block's line is run (not blank or a comment).
func isWalkStep(l string) bool {
	t := strings.TrimSpace(l)
	return t != "" && !strings.HasPrefix(t, "#")
}

// steps matches a block's entries to its lines: the runs, in order.
func (b walkBlock) steps() ([]walkStep, []error) {
	var errs []error
	byLine := map[int][]walkEntry{}
	for _, e := range b.entries {
		var at []int
		for i, l := range b.lines {
			if isWalkStep(l) && strings.Contains(l, e.key) {
				at = append(at, i)
			}
		}
		if len(at) != 1 {
			errs = append(errs, fmt.Errorf("%v: README.md:%d: key %q names %d lines of the block, want 1", b, e.line, e.key, len(at)))
			continue
		}
		if sub, ok := e.get("sub"); ok {
			old, _, _ := strings.Cut(sub, "/")
			if !strings.Contains(b.lines[at[0]], old) {
				errs = append(errs, fmt.Errorf("%v: README.md:%d: sub: %q is not in the line %q", b, e.line, old, b.lines[at[0]]))
			}
		}
		_, busy := e.get("busy")
		_, wait := e.get("wait")
		ran, _ := e.get("ran")
		_, in := e.get("in")
		_, withdrawn := e.get("withdrawn")
		switch {
		case busy && wait:
			errs = append(errs, fmt.Errorf("%v: README.md:%d: busy and wait together", b, e.line))
		case withdrawn && !busy:
			errs = append(errs, fmt.Errorf("%v: README.md:%d: withdrawn goes with busy", b, e.line))
		case in && ran == "none":
			errs = append(errs, fmt.Errorf("%v: README.md:%d: in needs a stub that runs", b, e.line))
		}
		byLine[at[0]] = append(byLine[at[0]], e)
	}
	var out []walkStep
	for i, l := range b.lines {
		if !isWalkStep(l) {
			continue
		}
		es := byLine[i]
		if len(es) == 0 {
			es = []walkEntry{{}}
		}
		for n, e := range es {
			out = append(out, walkStep{text: l, entry: e, n: n + 1})
		}
	}
	return out, errs
}

// readmeText returns README.md's text.
func readmeText(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestReadmeWalkMarkers: the README's walk markers parse, each names
// lines of its block, and every shell block of the walked sections has
// one. It needs no cluster (and runs without root).
func TestReadmeWalkMarkers(t *testing.T) {
	blocks, errs := readmeBlocks(readmeText(t))
	for _, err := range errs {
		t.Error(err)
	}
	for _, b := range blocks {
		if b.skip != "" {
			continue
		}
		_, errs := b.steps()
		for _, err := range errs {
			t.Error(err)
		}
	}
	for _, sec := range walkSections {
		if !slices.ContainsFunc(blocks, func(b walkBlock) bool { return b.section == sec }) {
			t.Errorf("README has no walked block under %q", sec)
		}
	}
}

// walkStubScript stands in for a README placeholder (./deploy.sh, make...): it
// records its name, its arguments, $DLOCKFS_TOKEN and, if $WALK_PROBE is
// set, the exit code of "dlockfs lock --try" on that lock from another
// peer (12: held around the stub).
const walkStubScript = `#!/bin/bash
probe=-
if [ -n "${WALK_PROBE-}" ]; then
	"$WALK_BIN" lock --try "$WALK_PEER/$WALK_PROBE" -- true </dev/null >/dev/null 2>&1
	probe=$?
fi
printf '%s\t%s\t%s\t%s\n' "${0##*/}" "$*" "${DLOCKFS_TOKEN-}" "$probe" >>"$WALK_LOG"
`

// walkPrelude starts the generated script: __walk reports to the test on
// fd 3 and waits for its "go" on fd 4.
const walkPrelude = `__walk() { printf '%s\n' "$*" >&3; local ack; read -r ack <&4 && [ "$ack" = go ] || exit 99; }
cd "$WALK_STUBS" || exit 98
`

// walker runs the README's blocks on a cluster.
type walker struct {
	nodes   []*node
	a, b, c *node // a runs the blocks, b holds, c probes
	stubs   string
	plain   string
}

// TestReadmeWalk runs the README's marked shell blocks on a 3-peer
// cluster and checks each line's entries (see the comment at the top of
// this file).
func TestReadmeWalk(t *testing.T) {
	needEnv(t)
	blocks, errs := readmeBlocks(readmeText(t))
	for _, err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	nodes := startCluster(t, 3, nodeOpts{})
	w := &walker{nodes: nodes, a: nodes[0], b: nodes[1], c: nodes[2],
		stubs: filepath.Join(t.TempDir(), "stubs"), plain: t.TempDir()}
	if err := os.Mkdir(w.stubs, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(suite.binary, filepath.Join(w.stubs, "dlockfs")); err != nil {
		t.Fatal(err)
	}
	for _, b := range blocks {
		for _, e := range b.entries {
			if ran, ok := e.get("ran"); ok && ran != "none" {
				for _, s := range strings.Split(ran, ",") {
					if err := os.WriteFile(filepath.Join(w.stubs, s), []byte(walkStubScript), 0o755); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
	}
	for _, b := range blocks {
		t.Run(fmt.Sprintf("README.md:%d", b.line), func(t *testing.T) {
			if b.skip != "" {
				t.Skipf("%v: %s", b, b.skip)
			}
			w.walk(t, b)
		})
	}
}

// walk runs one block.
func (w *walker) walk(t *testing.T, b walkBlock) {
	steps, errs := b.steps()
	for _, err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	dir := t.TempDir()
	var script strings.Builder
	script.WriteString(walkPrelude)
	locks := map[string]bool{"lock": true}
	for i, s := range steps {
		line := strings.ReplaceAll(s.text, readmePlaceholder, w.a.dir)
		if sub, ok := s.entry.get("sub"); ok {
			old, repl, _ := strings.Cut(sub, "/")
			line = strings.Replace(line, old, repl, 1)
		}
		probe, _ := s.entry.get("in")
		for _, p := range s.entry.kv {
			switch p[0] {
			case "in", "held", "free", "busy", "wait", "withdrawn":
				locks[p[1]] = true
			}
		}
		fmt.Fprintf(&script, "__walk begin %d\nexport WALK_PROBE=%q WALK_LOG=%q\n", i, probe, filepath.Join(dir, fmt.Sprintf("ran.%d", i)))
		open, closing := "{", "}"
		if m, _ := s.entry.get("M"); m == "unmounted" {
			open, closing = "( M="+strconv.Quote(w.plain), ")"
		}
		fmt.Fprintf(&script, "%s\n%s\n%s >%q 2>%q 3>&- 4<&-\n__rc=$?\n", open, line, closing,
			filepath.Join(dir, fmt.Sprintf("out.%d", i)), filepath.Join(dir, fmt.Sprintf("err.%d", i)))
		for _, p := range s.entry.kv {
			if v, ok := strings.CutPrefix(p[0], "$"); ok {
				v = strings.TrimSuffix(v, "~")
				fmt.Fprintf(&script, "printf '%%s' \"${%s-}\" >%q\n", v, filepath.Join(dir, fmt.Sprintf("var.%d.%s", i, v)))
			}
		}
		fmt.Fprintf(&script, "__walk end %d $__rc\n", i)
	}
	path := filepath.Join(dir, "walk.sh")
	if err := os.WriteFile(path, []byte(script.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	sh := w.start(t, path)
	var cur *walkRun
	for {
		var msg string
		var ok bool
		select {
		case msg, ok = <-sh.ctl:
		case <-time.After(workerTimeout):
			where := "before its first line"
			if cur != nil {
				where = "in " + cur.step.String()
			}
			t.Fatalf("%v: no progress for %v %s\nscript stderr: %s", b, workerTimeout, where, sh.stderr.String())
		}
		if !ok {
			break
		}
		f := strings.Fields(msg)
		if len(f) < 2 {
			t.Fatalf("%v: bad control line %q", b, msg)
		}
		i, err := strconv.Atoi(f[1])
		if err != nil || i < 0 || i >= len(steps) {
			t.Fatalf("%v: bad control line %q", b, msg)
		}
		switch f[0] {
		case "begin":
			cur = w.begin(t, i, steps[i])
		case "end":
			if cur == nil || len(f) != 3 {
				t.Fatalf("%v: bad control line %q", b, msg)
			}
			rc, _ := strconv.Atoi(f[2])
			w.end(t, b, cur, dir, i, rc)
			cur = nil
		default:
			t.Fatalf("%v: bad control line %q", b, msg)
		}
		if _, err := io.WriteString(sh.ack, "go\n"); err != nil {
			t.Fatalf("%v: ack: %v", b, err)
		}
	}
	<-sh.done
	if cur != nil {
		out, _ := os.ReadFile(filepath.Join(dir, fmt.Sprintf("out.%d", cur.i)))
		errOut, _ := os.ReadFile(filepath.Join(dir, fmt.Sprintf("err.%d", cur.i)))
		t.Fatalf("%v: %v ended the script (%v)\nstdout: %q\nstderr: %q", b, cur.step, sh.err, out, errOut)
	}
	if sh.err != nil {
		t.Fatalf("%v: the script failed: %v\nstderr: %s", b, sh.err, sh.stderr.String())
	}
	// What the block took is given back: nothing held, nothing queued.
	names := make([]string, 0, len(locks))
	for n := range locks {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		waitIdle(t, startTimeout, w.nodes, n)
	}
}

// walkRun is a step running, with the holder set up for it.
type walkRun struct {
	i       int
	step    walkStep
	holder  *proc
	waiting chan bool // wait=: whether a waiting opener was seen
}

// begin sets up a step's conditions.
func (w *walker) begin(t *testing.T, i int, s walkStep) *walkRun {
	r := &walkRun{i: i, step: s}
	name, busy := s.entry.get("busy")
	wname, wait := s.entry.get("wait")
	if wait {
		name = wname
	}
	if busy || wait {
		r.holder = shellHold(t, w.b, name)
		r.holder.waitLine(t, startTimeout, "held ")
	}
	if wait {
		r.waiting = make(chan bool, 1)
		go func() {
			deadline := time.Now().Add(startTimeout)
			for time.Now().Before(deadline) {
				if d, err := w.a.status(); err == nil && d.lock(wname).Waiting >= 1 {
					_, _ = io.WriteString(r.holder.stdin, "\n")
					r.waiting <- true
					return
				}
				time.Sleep(pollEvery)
			}
			_, _ = io.WriteString(r.holder.stdin, "\n") // let the line go on
			r.waiting <- false
		}()
	}
	return r
}

// end checks a step's expectations once it is done.
func (w *walker) end(t *testing.T, b walkBlock, r *walkRun, dir string, i, rc int) {
	s, e := r.step, r.step.entry
	fail := func(format string, args ...any) {
		t.Errorf("%v: %v: %s", b, s, fmt.Sprintf(format, args...))
	}
	file := func(name string) string {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		return string(data)
	}
	stdout, stderr := file(fmt.Sprintf("out.%d", i)), file(fmt.Sprintf("err.%d", i))
	want := 0
	if v, ok := e.get("exit"); ok {
		want, _ = strconv.Atoi(v)
	}
	if rc != want {
		fail("exit status %d, want %d\nstdout: %q\nstderr: %q", rc, want, stdout, stderr)
	}
	if v, ok := e.get("stdout"); ok && stdout != v {
		fail("stdout %q, want %q\nstderr: %q", stdout, v, stderr)
	}
	if v, ok := e.get("stdout~"); ok && !regexp.MustCompile(v).MatchString(stdout) {
		fail("stdout %q does not match %q\nstderr: %q", stdout, v, stderr)
	}
	for _, p := range e.kv {
		if v, ok := strings.CutPrefix(p[0], "$"); ok {
			v = strings.TrimSuffix(v, "~")
			if got := file(fmt.Sprintf("var.%d.%s", i, v)); !regexp.MustCompile(p[1]).MatchString(got) {
				fail("$%s is %q, want a match of %q", v, got, p[1])
			}
		}
	}

	// The stubs that ran.
	var ran []string
	for l := range strings.SplitSeq(strings.TrimSuffix(file(fmt.Sprintf("ran.%d", i)), "\n"), "\n") {
		if l == "" {
			continue
		}
		f := strings.Split(l, "\t")
		if len(f) != 4 {
			t.Fatalf("bad stub record %q", l)
		}
		ran = append(ran, f[0])
		if v, ok := e.get("in"); ok && f[3] != "12" {
			fail("%s ran, but lock --try %s on peer c exited %s, not 12: the lock was not held around it", f[0], v, f[3])
		}
		if _, ok := e.get("token"); ok {
			if _, err := strconv.ParseUint(f[2], 10, 64); err != nil {
				fail("%s ran with DLOCKFS_TOKEN=%q, want a token", f[0], f[2])
			}
		}
		if v, ok := e.get("args"); ok && f[1] != v {
			fail("%s ran with arguments %q, want %q", f[0], f[1], v)
		}
		if v, ok := e.get("args~"); ok && !regexp.MustCompile(v).MatchString(f[1]) {
			fail("%s ran with arguments %q, want a match of %q", f[0], f[1], v)
		}
	}
	sort.Strings(ran)
	if v, ok := e.get("ran"); ok {
		var want []string
		if v != "none" {
			want = strings.Split(v, ",")
			sort.Strings(want)
		}
		if !slices.Equal(ran, want) {
			fail("stubs run: %v, want %v\nstderr: %q", ran, want, stderr)
		}
	}
	if _, ok := e.get("in"); ok && len(ran) == 0 {
		fail("no stub ran\nstdout: %q\nstderr: %q", stdout, stderr)
	}

	// The holder on b, and what is left behind.
	if r.waiting != nil {
		if !<-r.waiting {
			fail("peer a never showed an opener waiting for the lock peer b held")
		}
		if code := r.holder.wait(t, stopTimeout); code != 0 {
			fail("the holder on peer b exited %d: %s", code, r.holder.stderr.String())
		}
	}
	if name, ok := e.get("withdrawn"); ok {
		waitLock(t, startTimeout, w.nodes, name, "left with no request while b holds it", noRequests)
	}
	if _, ok := e.get("busy"); ok {
		release(t, r.holder)
	}
	if name, ok := e.get("withdrawn"); ok {
		waitIdle(t, startTimeout, w.nodes, name)
	}
	if name, ok := e.get("held"); ok {
		if code, out := w.probe(name); code != walkExitBusy {
			fail("lock --try %s on peer c exited %d, want 12 (held)\n%s", name, code, out)
		}
	}
	if name, ok := e.get("free"); ok {
		var code int
		var out string
		deadline := time.Now().Add(startTimeout)
		for code, out = w.probe(name); code != 0 && time.Now().Before(deadline); code, out = w.probe(name) {
			time.Sleep(pollEvery)
		}
		if code != 0 {
			fail("lock --try %s on peer c still exits %d after %v, want 0 (free)\n%s", name, code, startTimeout, out)
		}
	}
	t.Logf("%v: exit %d, stdout %q, stderr %q, stubs %v", s, rc, stdout, stderr, ran)
}

// walkExitBusy is lock --try's exit code on a busy lock.
const walkExitBusy = 12

// probe runs "dlockfs lock --try C/NAME -- true" on peer c.
func (w *walker) probe(name string) (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, suite.binary, "lock", "--try", filepath.Join(w.c.dir, name), "--", "true")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &ee):
		return ee.ExitCode(), string(out)
	default:
		return -1, err.Error()
	}
}

// walkShell is the bash running a block, with its control pipes.
type walkShell struct {
	ctl    chan string // lines on its fd 3; closed at EOF
	ack    io.WriteCloser
	stderr testutil.SyncBuffer
	done   chan struct{} // closed once reaped
	stop   chan struct{} // closed in the cleanup: the reader gives up
	err    error

	mu     sync.Mutex
	reaped bool
}

// start starts bash on the script in its own process group, fd 3 and 4
// its control pipes; the cleanup kills the group if it still runs.
func (w *walker) start(t *testing.T, script string) *walkShell {
	ctlR, ctlW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	ackR, ackW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	sh := &walkShell{ctl: make(chan string), ack: ackW, done: make(chan struct{}), stop: make(chan struct{})}
	cmd := exec.Command("bash", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stderr = &sh.stderr
	cmd.ExtraFiles = []*os.File{ctlW, ackR}
	cmd.Env = append(os.Environ(), "PATH="+w.stubs+":"+os.Getenv("PATH"), "WALK_STUBS="+w.stubs,
		"WALK_BIN="+suite.binary, "WALK_PEER="+w.c.dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ctlW.Close()
	ackR.Close()
	go func() {
		sc := bufio.NewScanner(ctlR)
		defer ctlR.Close()
		defer close(sh.ctl)
		for sc.Scan() {
			select {
			case sh.ctl <- sc.Text():
			case <-sh.stop:
				return
			}
		}
	}()
	go func() {
		_ = waitExited(cmd.Process.Pid)
		sh.mu.Lock()
		sh.reaped = true
		sh.mu.Unlock()
		sh.err = cmd.Wait()
		close(sh.done)
	}()
	t.Cleanup(func() {
		sh.mu.Lock()
		if !sh.reaped {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
		sh.mu.Unlock()
		close(sh.stop)
		ackW.Close()
		select {
		case <-sh.done:
		case <-time.After(stopTimeout):
			t.Logf("the walk's bash (PID %d) did not exit after SIGKILL", cmd.Process.Pid)
		}
	})
	return sh
}
