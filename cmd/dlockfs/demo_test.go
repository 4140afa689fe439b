package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dlockfs/dlockfs/cmd/dlockfs/internal/cli"
	"github.com/dlockfs/dlockfs/fs"
)

// demoDirRE finds the demo's temporary directory in its output.
var demoDirRE = regexp.MustCompile(`mounted at (/\S+)/a\n`)

// demoDir returns the temporary directory a demo printed.
func demoDir(t *testing.T, out string) string {
	t.Helper()
	m := demoDirRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no mount path in the demo's output:\n%s", out)
	}
	return m[1]
}

// wantCleanedUp fails unless nothing is mounted at or under dir, dir is
// gone, and no process runs with one of envs in its environment or one of
// args in its command line (a demo worker or a bench client left behind).
func wantCleanedUp(t *testing.T, dir string, envs, args []string) {
	t.Helper()
	ms, err := fs.MountsUnder(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) > 0 {
		for _, m := range ms {
			_ = syscall.Unmount(m, syscall.MNT_DETACH)
		}
		t.Errorf("still mounted after exit: %q", ms)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("temporary directory %s left behind (stat: %v)", dir, err)
	}
	if pids := procsMatching(t, envs, args); len(pids) > 0 {
		t.Errorf("processes left behind: %v", pids)
	}
}

// procsMatching lists processes whose environment holds one of envs, or
// whose command line holds one of args (as a substring of an argument).
func procsMatching(t *testing.T, envs, args []string) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		env, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		match := false
		for _, v := range bytes.Split(env, []byte{0}) {
			for _, want := range envs {
				match = match || string(v) == want
			}
		}
		for _, want := range args {
			match = match || bytes.Contains(cmdline, []byte(want))
		}
		if match {
			out = append(out, e.Name()+" "+strings.ReplaceAll(string(cmdline), "\x00", " "))
		}
	}
	return out
}

// demoWorkerEnvs are the MNT= values of a demo's workers in dir.
func demoWorkerEnvs(dir string) []string {
	return []string{"MNT=" + dir + "/a", "MNT=" + dir + "/b", "MNT=" + dir + "/c"}
}

func TestDemo(t *testing.T) {
	r := dlockfs(t, "demo", "--seconds", "2")
	wantCode(t, r, 0, "demo --seconds 2")
	dir := demoDir(t, r.stdout)
	for _, want := range []string{"time  holder", "0 overlapping holds", "tokens strictly rising", "RESULT: ok"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r.stdout)
		}
	}
	m := regexp.MustCompile(`Summary: (\d+) holds`).FindStringSubmatch(r.stdout)
	c := regexp.MustCompile(`counter (\d+), expected (\d+)`).FindStringSubmatch(r.stdout)
	if m == nil || c == nil || c[1] != c[2] || c[1] != m[1] || m[1] == "0" {
		t.Errorf("want counter = expected = holds > 0; got summary %q, counter %q:\n%s", m, c, r.stdout)
	}
	wantCleanedUp(t, dir, demoWorkerEnvs(dir), nil)
}

func TestDemoUsage(t *testing.T) {
	for _, args := range [][]string{
		{"demo", "--seconds", "0"},
		{"demo", "--workers", "0"},
		{"demo", "extra"},
		{"bench", "--peers", "0"},
		{"bench", "--ops", "x"},
		{"bench", "__client"},
	} {
		wantCode(t, dlockfs(t, args...), cli.ExitUsage, strings.Join(args, " "))
	}
	for _, cmd := range []string{"demo", "bench"} {
		r := dlockfs(t, cmd, "--help")
		wantCode(t, r, 0, cmd+" --help")
		if !strings.HasPrefix(r.stdout, "Usage: dlockfs "+cmd) {
			t.Errorf("%s --help: %q", cmd, r.stdout)
		}
	}
}

// demoChild is a demo running in the background; out has its stdout and
// stderr.
type demoChild struct{ *bgChild }

// startDemo starts the demo with args; cleanup kills it if still running.
func startDemo(t *testing.T, args ...string) *demoChild {
	t.Helper()
	d := &demoChild{startBackground(t, exec.Command(binary, append([]string{"demo"}, args...)...), 1000, true)}
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			_ = d.cmd.Process.Kill()
			<-d.done
		}
	})
	return d
}

// waitLine waits for a line containing want.
func (d *demoChild) waitLine(t *testing.T, want string) string {
	t.Helper()
	timeout := time.After(startTimeout)
	for {
		select {
		case l := <-d.lines:
			if strings.Contains(l, want) {
				return l
			}
		case <-d.done:
			t.Fatalf("demo exited (%v) before printing %q:\n%s", d.err, want, d.out.String())
		case <-timeout:
			t.Fatalf("demo did not print %q within %v:\n%s", want, startTimeout, d.out.String())
		}
	}
}

// interrupt sends SIGINT and waits for the exit code.
func (d *demoChild) interrupt(t *testing.T) int {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.done:
	case <-time.After(stopTimeout):
		t.Fatalf("demo still running %v after SIGINT:\n%s", stopTimeout, d.out.String())
	}
	return d.cmd.ProcessState.ExitCode()
}

func TestDemoInterruptCleansUp(t *testing.T) {
	d := startDemo(t, "--seconds", "60")
	line := d.waitLine(t, "mounted at")
	dir := filepath.Dir(strings.TrimSpace(line[strings.Index(line, "mounted at ")+len("mounted at "):]))
	d.waitLine(t, "time  holder")
	d.waitLine(t, "|") // a timeline line: workers are running
	if code := d.interrupt(t); code != cli.ExitError {
		t.Errorf("exit code after SIGINT %d, want %d:\n%s", code, cli.ExitError, d.out.String())
	}
	if !strings.Contains(d.out.String(), "Interrupted") {
		t.Errorf("no word of the interrupt:\n%s", d.out.String())
	}
	wantCleanedUp(t, dir, demoWorkerEnvs(dir), nil)
}

func TestDemoKeep(t *testing.T) {
	d := startDemo(t, "--seconds", "0.5", "--keep")
	d.waitLine(t, "stays up until Ctrl-C")
	var mounts []string
	for len(mounts) < 3 {
		f := strings.Fields(d.waitLine(t, "/"))
		if len(f) == 2 {
			mounts = append(mounts, f[1])
		}
	}
	d.waitLine(t, "Try, from other shells")
	// The cluster still works: a hold on a makes c's try-lock fail, and
	// the release lets c in (from child processes, as a user would).
	script := `exec 9<"$A/lock" && read -r tok <&9 && echo "held $tok" &&
		! dd if="$C/lock" iflag=nonblock count=0 status=none 2>/dev/null && exec 9<&- &&
		timeout 10 cat "$C/lock"`
	cmd := exec.Command("bash", "-c", script)
	cmd.Env = append(os.Environ(), "A="+mounts[0], "C="+mounts[2])
	r := runCmd(t, cmd)
	if r.code != 0 || !strings.Contains(r.stdout, "holder c") {
		t.Errorf("playing with the kept cluster: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	if code := d.interrupt(t); code != 0 {
		t.Errorf("exit code after Ctrl-C with --keep: %d, want 0:\n%s", code, d.out.String())
	}
	dir := filepath.Dir(mounts[0])
	wantCleanedUp(t, dir, demoWorkerEnvs(dir), nil)
}

func TestDemoNonRootSaysWhatIsMissing(t *testing.T) {
	_, bin := nobodyBinary(t)
	for _, args := range [][]string{{"demo"}, {"bench", "--seconds", "1"}} {
		r := runAsNobody(t, bin, args...)
		wantCode(t, r, cli.ExitFUSE, strings.Join(args, " ")+" as nobody without fusermount3")
		if !strings.Contains(r.stderr, "fusermount3 is not installed") || !strings.Contains(r.stderr, "root") {
			t.Errorf("%s: stderr does not say what is missing: %s", args[0], r.stderr)
		}
	}
}
