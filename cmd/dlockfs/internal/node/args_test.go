package node

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/dlockfs/dlockfs/cmd/dlockfs/internal/cli"
)

// mountDefaults is the mountConfig of "mount DIR" with every default.
func mountDefaults(dir string) mountConfig {
	return mountConfig{mountpoint: dir, bind: defaultBind, gossip: defaultGossip,
		joinTimeout: defaultJoinTimeout, fastPath: defaultFastPath, drainTimeout: defaultDrainTimeout,
		quorum: defaultQuorum}
}

// parseArgs parses a command line of one of this package's commands.
func parseArgs(args []string) (config, error) {
	parse := map[string]func(*config, []string) error{"mount": parseMount, "status": parseStatus,
		"lock": parseLock, "check": parseCheck, "keygen": parseKeygen, "keys": parseKeys, "forget": parseForget}
	if len(args) == 0 || parse[args[0]] == nil {
		return config{}, cli.Usagef("no command of this package: %q", args)
	}
	cfg := config{cmd: args[0]}
	err := parse[args[0]](&cfg, args[1:])
	return cfg, err
}

func TestParseArgs(t *testing.T) {
	withMount := func(f func(*mountConfig)) config {
		c := config{cmd: "mount", mount: mountDefaults("/mnt/x")}
		f(&c.mount)
		return c
	}
	tests := []struct {
		name string
		args []string
		want config
		// err: "" = success, "usage", "help"
		err string
	}{
		{"mount defaults", []string{"mount", "/mnt/x"}, withMount(func(*mountConfig) {}), ""},
		{"mount flags after mountpoint", []string{"mount", "/mnt/x", "--name", "a", "--debug"},
			withMount(func(m *mountConfig) { m.name, m.debug = "a", true }), ""},
		{"mount flags around mountpoint", []string{"mount", "--gossip=fast", "/mnt/x", "-allow-other", "--fast-path", "--quorum", "none"},
			withMount(func(m *mountConfig) { m.gossip, m.allowOther, m.fastPath, m.quorum = "fast", true, true, "none" }), ""},
		{"fast path needs plain mode", []string{"mount", "--fast-path", "/mnt/x"}, config{}, "--fast-path needs --quorum none"},
		{"mount every flag", []string{"mount", "--name", "n1", "--bind", "127.0.0.1:9000", "--advertise", "10.0.0.1:9000",
			"--lock-bind", "127.0.0.1:9001", "--lock-advertise", "10.0.0.1:9001", "--join", "10.0.0.2:7946",
			"--join-timeout", "5s", "--gossip", "wan", "--key-file", "/etc/k", "--allow-other", "--debug", "--fast-path=false", "/mnt/x"},
			withMount(func(m *mountConfig) {
				m.name, m.bind, m.advertise, m.lockBind, m.lockAdvertise = "n1", "127.0.0.1:9000", "10.0.0.1:9000", "127.0.0.1:9001", "10.0.0.1:9001"
				m.join, m.joinTimeout, m.gossip, m.keyFile, m.allowOther, m.debug = []string{"10.0.0.2:7946"}, 5*time.Second, "wan", "/etc/k", true, true
			}), ""},
		{"mount answer-timeout", []string{"mount", "--answer-timeout", "3s", "/mnt/x"},
			withMount(func(m *mountConfig) { m.answerTimeout = 3 * time.Second }), ""},
		{"mount answer-timeout 0 is off", []string{"mount", "--answer-timeout", "0", "/mnt/x"},
			withMount(func(m *mountConfig) { m.answerTimeout = -1 }), ""},
		{"mount max-hold", []string{"mount", "--max-hold", "1m", "/mnt/x"},
			withMount(func(m *mountConfig) { m.maxHold = time.Minute }), ""},
		{"mount max-hold negative", []string{"mount", "--max-hold", "-1s", "/mnt/x"}, config{}, "--max-hold -1s: must not be negative"},
		{"mount answer-timeout negative", []string{"mount", "--answer-timeout", "-1s", "/mnt/x"}, config{}, "--answer-timeout -1s: must not be negative"},
		{"mount join repeated and comma-separated, default port", []string{"mount", "--join", "10.0.0.2:7000,10.0.0.3", "/mnt/x", "--join", "[::1]:7001", "--join", "::1"},
			withMount(func(m *mountConfig) { m.join = []string{"10.0.0.2:7000", "10.0.0.3:7946", "[::1]:7001", "[::1]:7946"} }), ""},
		{"mount control socket", []string{"mount", "--control", "/run/x.sock", "/mnt/x"},
			withMount(func(m *mountConfig) { m.control = "/run/x.sock" }), ""},
		{"mount join once", []string{"mount", "--join-timeout", "0", "/mnt/x"},
			withMount(func(m *mountConfig) { m.joinTimeout = 0 }), ""},
		{"mount -- before a dash mountpoint", []string{"mount", "--debug", "--", "-odd"},
			config{cmd: "mount", mount: func() mountConfig { m := mountDefaults("-odd"); m.debug = true; return m }()}, ""},
		{"mount drain timeout", []string{"mount", "--drain-timeout", "0", "/mnt/x"},
			withMount(func(m *mountConfig) { m.drainTimeout = 0 }), ""},
		{"mount metrics", []string{"mount", "--metrics", "127.0.0.1:9100", "/mnt/x"},
			withMount(func(m *mountConfig) { m.metrics = "127.0.0.1:9100" }), ""},
		{"mount quorum none", []string{"mount", "--quorum", "none", "/mnt/x"},
			withMount(func(m *mountConfig) { m.quorum = "none" }), ""},
		{"mount quorum majority", []string{"mount", "/mnt/x", "--quorum=majority"},
			withMount(func(m *mountConfig) { m.quorum = "majority" }), ""},
		{"mount state dir", []string{"mount", "--state-dir", "/tmp/st", "/mnt/x"},
			withMount(func(m *mountConfig) { m.stateDir = "/tmp/st" }), ""},
		{"mount quorum and state dir", []string{"mount", "/mnt/x", "--state-dir=/srv/s", "--quorum", "none"},
			withMount(func(m *mountConfig) { m.stateDir, m.quorum = "/srv/s", "none" }), ""},
		{"mount bad quorum", []string{"mount", "--quorum", "all", "/a"}, config{}, "usage"},
		{"mount empty quorum", []string{"mount", "--quorum", "", "/a"}, config{}, "usage"},
		{"mount empty state dir", []string{"mount", "--state-dir", "", "/a"}, config{}, "usage"},
		{"mount state dir missing value", []string{"mount", "/a", "--state-dir"}, config{}, "usage"},
		{"mount bad metrics", []string{"mount", "--metrics", "9100", "/a"}, config{}, "usage"},
		{"mount negative drain timeout", []string{"mount", "--drain-timeout", "-1s", "/a"}, config{}, "usage"},
		{"mount missing mountpoint", []string{"mount", "--debug"}, config{}, "usage"},
		{"mount two mountpoints", []string{"mount", "/a", "/b"}, config{}, "usage"},
		{"mount unknown flag", []string{"mount", "--nope", "/a"}, config{}, "usage"},
		{"mount flag missing value", []string{"mount", "/a", "--name"}, config{}, "usage"},
		{"mount bad gossip", []string{"mount", "--gossip", "slow", "/a"}, config{}, "usage"},
		{"mount bad bind", []string{"mount", "--bind", "127.0.0.1", "/a"}, config{}, "usage"},
		{"mount bad bind port", []string{"mount", "--bind", "127.0.0.1:99999", "/a"}, config{}, "usage"},
		{"mount bad lock-bind", []string{"mount", "--lock-bind", "x", "/a"}, config{}, "usage"},
		{"mount bad join", []string{"mount", "--join", "1.2.3.4:port", "/a"}, config{}, "usage"},
		{"mount bad name", []string{"mount", "--name", "a/b", "/a"}, config{}, "usage"},
		{"mount negative join timeout", []string{"mount", "--join-timeout", "-1s", "/a"}, config{}, "usage"},
		{"mount bad duration", []string{"mount", "--join-timeout", "soon", "/a"}, config{}, "usage"},
		{"mount help", []string{"mount", "--help"}, config{cmd: "mount"}, "help"},
		{"mount -h after args", []string{"mount", "/a", "-h"}, config{cmd: "mount"}, "help"},

		{"forget", []string{"forget", "c"}, config{cmd: "forget", forget: forgetConfig{control: defaultControl, timeout: defaultForgetTimeout, node: "c"}}, ""},
		{"forget force", []string{"forget", "b", "--force", "--control", "/tmp/a.sock", "--timeout", "5s"},
			config{cmd: "forget", forget: forgetConfig{control: "/tmp/a.sock", force: true, timeout: 5 * time.Second, node: "b"}}, ""},
		{"forget missing node", []string{"forget", "--force"}, config{}, "usage"},
		{"forget two nodes", []string{"forget", "b", "c"}, config{}, "usage"},
		{"forget zero timeout", []string{"forget", "--timeout", "0", "b"}, config{}, "usage"},
		{"forget empty control", []string{"forget", "--control", "", "b"}, config{}, "usage"},
		{"status", []string{"status", "/mnt/x"}, config{cmd: "status", status: statusConfig{mountpoint: "/mnt/x", interval: defaultWatchInterval}}, ""},
		{"status json after", []string{"status", "/mnt/x", "--json"}, config{cmd: "status", status: statusConfig{mountpoint: "/mnt/x", json: true, interval: defaultWatchInterval}}, ""},
		{"status watch", []string{"status", "--watch", "/mnt/x", "--interval", "500ms", "--count", "3"},
			config{cmd: "status", status: statusConfig{mountpoint: "/mnt/x", watch: true, interval: 500 * time.Millisecond, count: 3}}, ""},
		{"status watch and json", []string{"status", "--watch", "--json", "/mnt/x"}, config{}, "usage"},
		{"status interval without watch", []string{"status", "--interval", "1s", "/mnt/x"}, config{}, "usage"},
		{"status count without watch", []string{"status", "--count", "1", "/mnt/x"}, config{}, "usage"},
		{"status zero interval", []string{"status", "--watch", "--interval", "0", "/mnt/x"}, config{}, "usage"},
		{"status negative count", []string{"status", "--watch", "--count", "-1", "/mnt/x"}, config{}, "usage"},
		{"status missing", []string{"status"}, config{}, "usage"},
		{"status cluster", []string{"status", "--cluster", "/mnt/x"},
			config{cmd: "status", status: statusConfig{mountpoint: "/mnt/x", cluster: true, timeout: defaultClusterTimeout, interval: defaultWatchInterval}}, ""},
		{"status cluster json timeout control", []string{"status", "--cluster", "--json", "--timeout", "500ms", "--control", "/tmp/s", "/mnt/x"},
			config{cmd: "status", status: statusConfig{mountpoint: "/mnt/x", cluster: true, json: true, timeout: 500 * time.Millisecond,
				control: "/tmp/s", interval: defaultWatchInterval}}, ""},
		{"status cluster zero timeout", []string{"status", "--cluster", "--timeout", "0", "/mnt/x"}, config{}, "usage"},
		{"status cluster and watch", []string{"status", "--cluster", "--watch", "/mnt/x"}, config{}, "usage"},
		{"status timeout without cluster", []string{"status", "--timeout", "1s", "/mnt/x"}, config{}, "usage"},
		{"status control without cluster", []string{"status", "--control", "/tmp/s", "/mnt/x"}, config{}, "usage"},
		{"status help", []string{"status", "--help"}, config{cmd: "status"}, "help"},

		{"keygen", []string{"keygen"}, config{cmd: "keygen"}, ""},
		{"keygen extra", []string{"keygen", "x"}, config{}, "usage"},
		{"keygen help", []string{"keygen", "-help"}, config{cmd: "keygen"}, "help"},

		{"lock", []string{"lock", "/mnt/x", "make", "-j4"},
			config{cmd: "lock", lock: lockConfig{revokeGrace: defaultRevokeGrace, path: "/mnt/x", argv: []string{"make", "-j4"}}}, ""},
		{"lock name and --", []string{"lock", "/mnt/x/db", "--", "sh", "-c", "echo --try"},
			config{cmd: "lock", lock: lockConfig{revokeGrace: defaultRevokeGrace, path: "/mnt/x/db", argv: []string{"sh", "-c", "echo --try"}}}, ""},
		{"lock flags before and after path", []string{"lock", "--timeout", "3s", "/mnt/x", "--try=false", "--", "true"},
			config{cmd: "lock", lock: lockConfig{revokeGrace: defaultRevokeGrace, path: "/mnt/x", timeout: 3 * time.Second, argv: []string{"true"}}}, ""},
		{"lock try", []string{"lock", "--try", "/mnt/x", "true", "--timeout", "1s"},
			config{cmd: "lock", lock: lockConfig{revokeGrace: defaultRevokeGrace, path: "/mnt/x", try: true, argv: []string{"true", "--timeout", "1s"}}}, ""},
		{"lock flock-style short flags", []string{"lock", "-w", "2m", "/mnt/x", "true"},
			config{cmd: "lock", lock: lockConfig{revokeGrace: defaultRevokeGrace, path: "/mnt/x", timeout: 2 * time.Minute, argv: []string{"true"}}}, ""},
		{"lock --shared", []string{"lock", "--shared", "/mnt/x/db", "true"},
			config{cmd: "lock", lock: lockConfig{revokeGrace: defaultRevokeGrace, path: "/mnt/x/db", shared: true, argv: []string{"true"}}}, ""},
		{"lock -s -n", []string{"lock", "-s", "-n", "/mnt/x", "true"},
			config{cmd: "lock", lock: lockConfig{revokeGrace: defaultRevokeGrace, path: "/mnt/x", shared: true, try: true, argv: []string{"true"}}}, ""},
		{"lock -n", []string{"lock", "-n", "/mnt/x", "true"},
			config{cmd: "lock", lock: lockConfig{revokeGrace: defaultRevokeGrace, path: "/mnt/x", try: true, argv: []string{"true"}}}, ""},
		{"lock -- before everything", []string{"lock", "--", "/mnt/x", "-cmd"},
			config{cmd: "lock", lock: lockConfig{revokeGrace: defaultRevokeGrace, path: "/mnt/x", argv: []string{"-cmd"}}}, ""},
		{"lock revoke grace", []string{"lock", "--revoke-grace", "1s", "/mnt/x", "sleep", "60"},
			config{cmd: "lock", lock: lockConfig{revokeGrace: time.Second, path: "/mnt/x", argv: []string{"sleep", "60"}}}, ""},
		{"lock revoke grace zero", []string{"lock", "/mnt/x", "--revoke-grace=0", "--", "true"},
			config{cmd: "lock", lock: lockConfig{path: "/mnt/x", argv: []string{"true"}}}, ""},
		{"lock negative revoke grace", []string{"lock", "--revoke-grace", "-1s", "/mnt/x", "true"}, config{}, "usage"},
		{"lock missing cmd", []string{"lock", "/mnt/x"}, config{}, "usage"},
		{"lock missing cmd after --", []string{"lock", "/mnt/x", "--"}, config{}, "usage"},
		{"lock missing everything", []string{"lock"}, config{}, "usage"},
		{"lock try and timeout", []string{"lock", "--try", "--timeout", "1s", "/mnt/x", "true"}, config{}, "usage"},
		{"lock --timeout 0 is a try", []string{"lock", "--timeout", "0", "/mnt/x", "true"},
			config{cmd: "lock", lock: lockConfig{revokeGrace: defaultRevokeGrace, path: "/mnt/x", try: true, argv: []string{"true"}}}, ""},
		{"lock -w 0 is a try", []string{"lock", "-w", "0s", "/mnt/x", "true"},
			config{cmd: "lock", lock: lockConfig{revokeGrace: defaultRevokeGrace, path: "/mnt/x", try: true, argv: []string{"true"}}}, ""},
		{"lock --try --timeout 0", []string{"lock", "--try", "--timeout", "0", "/mnt/x", "true"},
			config{cmd: "lock", lock: lockConfig{revokeGrace: defaultRevokeGrace, path: "/mnt/x", try: true, argv: []string{"true"}}}, ""},
		{"lock negative timeout", []string{"lock", "--timeout", "-1s", "/mnt/x", "true"}, config{}, "usage"},
		{"lock help", []string{"lock", "--help"}, config{cmd: "lock"}, "help"},

		{"check", []string{"check", "/mnt/x"}, config{cmd: "check", check: checkConfig{mountpoint: "/mnt/x"}}, ""},
		{"check quiet", []string{"check", "-q", "/mnt/x"}, config{cmd: "check", check: checkConfig{mountpoint: "/mnt/x", quiet: true}}, ""},
		{"check none", []string{"check"}, config{}, "usage"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseArgs(tt.args)
			switch tt.err {
			case "":
				if err != nil {
					t.Fatalf("parseArgs(%q): %v", tt.args, err)
				}
				if !reflect.DeepEqual(got, tt.want) {
					t.Fatalf("parseArgs(%q)\n got %+v\nwant %+v", tt.args, got, tt.want)
				}
			case "usage":
				if cli.ExitCode(err) != cli.ExitUsage {
					t.Fatalf("parseArgs(%q) = %+v, %v; want a usage error", tt.args, got, err)
				}
			case "help":
				if !errors.Is(err, cli.ErrHelp) {
					t.Fatalf("parseArgs(%q) = %v; want cli.ErrHelp", tt.args, err)
				}
				if got.cmd != tt.want.cmd {
					t.Fatalf("help for %q, want %q", got.cmd, tt.want.cmd)
				}
			}
		})
	}
}

func TestParseKey(t *testing.T) {
	tests := []struct {
		in      string
		wantLen int // 0: error
	}{
		{"AAAAAAAAAAAAAAAAAAAAAA==", 16},
		{"AAAAAAAAAAAAAAAAAAAAAA", 16}, // padding optional
		{"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n", 24},
		{"  AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n", 32},
		{"AAAAAAAAAAAAAAAAAAAAAAAA", 0}, // 18 bytes
		{"not base64!", 0},
		{"", 0},
		{"\n", 0},
	}
	for _, tt := range tests {
		k, err := parseKey(tt.in)
		if tt.wantLen == 0 {
			if err == nil || cli.ExitCode(err) != cli.ExitKey {
				t.Errorf("parseKey(%q) = %d bytes, %v; want an error with exit code %d", tt.in, len(k), err, cli.ExitKey)
			}
			continue
		}
		if err != nil || len(k) != tt.wantLen {
			t.Errorf("parseKey(%q) = %d bytes, %v; want %d bytes", tt.in, len(k), err, tt.wantLen)
		}
	}
}
