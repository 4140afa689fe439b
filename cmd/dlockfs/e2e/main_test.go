package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// env is what TestMain found out about the machine, read-only afterwards.
type env struct {
	// binary is the dlockfs binary built for this run ("" when skipping).
	binary string
	// skip, when not empty, is why every test skips.
	skip string
}

// suite is set once by TestMain before any test runs and never changed.
var suite env

func TestMain(m *testing.M) {
	switch {
	case os.Geteuid() != 0:
		suite.skip = "end-to-end tests need root (FUSE mounts, network namespaces); run as root"
	default:
		if _, err := os.Stat("/dev/fuse"); err != nil {
			suite.skip = "end-to-end tests need /dev/fuse: " + err.Error()
		}
	}
	var dir string
	if b := os.Getenv("DLOCKFS_E2E_BINARY"); b != "" && suite.skip == "" {
		suite.binary = b
	} else if suite.skip == "" {
		var err error
		dir, err = os.MkdirTemp("", "dlockfs-e2e-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		suite.binary = filepath.Join(dir, "dlockfs")
		args := []string{"build", "-o", suite.binary}
		if os.Getenv("DLOCKFS_E2E_RACE") != "" {
			args = append(args, "-race")
		}
		build := exec.Command("go", append(args, "github.com/dlockfs/dlockfs/cmd/dlockfs")...)
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	if dir != "" {
		os.RemoveAll(dir)
	}
	os.Exit(code)
}

// needEnv skips the test unless the machine can run it.
func needEnv(t *testing.T) {
	t.Helper()
	if suite.skip != "" {
		t.Skip(suite.skip)
	}
}
