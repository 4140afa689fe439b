package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dlockfs/dlockfs/mutex/peer"
	"github.com/dlockfs/dlockfs/mutex/transport"
)

// loopWorkerScript is workerScript until the file STOP exists: the
// workers contend for MOUNT/lock from before the rotation until after it.
const loopWorkerScript = `M=$1 C=$2 STOP=$3 ID=$4
i=0
while [[ ! -e $STOP ]]; do
	exec 9<"$M/lock" || { echo "$ID: open failed at iteration $i" >&2; exit 3; }
	t0=$EPOCHREALTIME
	read -r token <&9 || { echo "$ID: reading the token failed at iteration $i" >&2; exit 4; }
	read -r v <"$C" || { echo "$ID: reading the counter failed" >&2; exit 5; }
	echo $((v + 1)) >"$C"
	t1=$EPOCHREALTIME
	exec 9<&-
	echo "$ID $token $t0 $t1"
	((i++))
done
`

// keyDoc is the part of .status about the lock channel's keys.
type keyDoc struct {
	Incarnation uint64 `json:"incarnation,string"`
	Transport   struct {
		OldKeyConns int `json:"old_key_conns"`
		// Connects and Disconnects count the outgoing lock connections
		// made and lost; Accepts the inbound ones; DroppedUnsent the
		// messages lost with a broken connection.
		Connects      uint64 `json:"connects"`
		Disconnects   uint64 `json:"disconnects"`
		Accepts       uint64 `json:"accepts"`
		DroppedUnsent uint64 `json:"dropped_unsent"`
		// Rekeys counts connections switched to the primary key in
		// band.
		Rekeys uint64 `json:"rekeys"`
	} `json:"transport"`
	Members []struct {
		Name     string `json:"name"`
		LockAddr string `json:"lock_addr"`
	} `json:"members"`
}

func (n *node) keyStatus(t *testing.T) keyDoc {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(n.dir, ".status"))
	if err != nil {
		t.Fatal(err)
	}
	var d keyDoc
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatal(err)
	}
	return d
}

// control is the node's control socket (the mount's default).
func (n *node) control() string { return n.dir + ".sock" }

// TestKeyRotation rotates the cluster key of 3 peers (keys install on a,
// use on b, remove on c) while 2 bash workers per peer increment a counter
// under MOUNT/lock: every command exits 0, no two holds overlap, the
// counter is exact, every worker is granted after the rotation, and the
// rotation stalls no lock round: no lock connection is lost, made or
// accepted and no lock message lost while it runs (each connection moves
// to the new key in band). The longest time with no holder, during the
// rotation and before it, is logged. Afterwards a peer restarted with its
// old --key-file comes back with the keyring kept in its --state-dir. Afterwards a peer with only the old key cannot join (exit 11),
// and the old key no longer opens a lock channel while the new one does.
func TestKeyRotation(t *testing.T) {
	needEnv(t)
	oldFile, newFile := keyFile(t), keyFile(t)
	readKey := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	oldKey, newKey := readKey(oldFile), readKey(newFile)
	nodes := startCluster(t, 3, nodeOpts{keyFile: oldFile})
	for _, n := range nodes {
		if _, err := os.Stat(n.control()); err != nil {
			t.Fatalf("%s: no control socket: %v", n.name, err)
		}
	}

	counter := counterFile(t)
	stop := filepath.Join(t.TempDir(), "stop")
	var ws []*proc
	for _, n := range nodes {
		for i := range 2 {
			id := fmt.Sprintf("%s%d", n.name, i)
			ws = append(ws, startProc(t, "worker "+id, workerTimeout, "bash", "-c", loopWorkerScript, "worker",
				n.dir, counter, stop, id))
		}
	}
	// progressed waits until every worker has done k more critical
	// sections than when called.
	progressed := func(what string, k int) {
		t.Helper()
		base := make([]int, len(ws))
		for i, w := range ws {
			base[i] = len(w.output())
		}
		waitFor(t, startTimeout, "every worker to progress "+what, func() bool {
			for i, w := range ws {
				if w.exited() {
					t.Fatalf("%s exited: %s", w.name, w.stderr.String())
				}
				if len(w.output()) < base[i]+k {
					return false
				}
			}
			return true
		})
	}
	progressed("before the rotation", 20)

	statsBefore := make([]keyDoc, len(nodes))
	for i, n := range nodes {
		statsBefore[i] = n.keyStatus(t)
	}
	rotStart := nowMicros()
	var marks []string // when each step ended, ms after rotStart
	for _, step := range []struct {
		n       *node
		op, key string
	}{
		{nodes[0], "install", newKey},
		{nodes[1], "use", newKey},
		{nodes[2], "remove", oldKey},
	} {
		code, out, errOut := run(t, 30*time.Second, suite.binary, "keys", "--control", step.n.control(), step.op, step.key)
		if code != 0 {
			t.Fatalf("keys %s on %s: exit %d\nstdout: %s\nstderr: %s", step.op, step.n.name, code, out, errOut)
		}
		t.Logf("keys %s on %s: %s", step.op, step.n.name, out)
		marks = append(marks, fmt.Sprintf("%s done at +%s", step.op, ms(nowMicros()-rotStart)))
	}
	// The members close their lock connections on the old key within
	// a second; wait for that, under contention.
	waitFor(t, startTimeout, "no lock connection on the old key", func() bool {
		for _, n := range nodes {
			if n.keyStatus(t).Transport.OldKeyConns != 0 {
				return false
			}
		}
		return true
	})
	rotEnd := nowMicros()
	marks = append(marks, fmt.Sprintf("old-key connections gone by +%s", ms(rotEnd-rotStart)))
	// The stall, counted in lock rounds. A hand-over is one round: the
	// holder's release sends the deferred replies, the next requester is
	// granted on the last one. The rotation can make a hand-over take
	// more only by losing lock messages, which are recovered in a later
	// round, after the connection is made again (Serf carries no lock
	// message). So every lock connection lost or made during the
	// rotation, and every message lost with one, is a stalled round; with
	// none, no hand-over waited longer than its own round.
	var reconnects, lost, rekeys uint64
	for i, n := range nodes {
		a, b := statsBefore[i].Transport, n.keyStatus(t).Transport
		reconnects += (b.Connects - a.Connects) + (b.Disconnects - a.Disconnects) + (b.Accepts - a.Accepts)
		lost += b.DroppedUnsent - a.DroppedUnsent
		rekeys += b.Rekeys - a.Rekeys
	}
	t.Logf("during the rotation: %d lock connections lost, made or accepted, %d lock messages lost with them, %d connections rekeyed in band",
		reconnects, lost, rekeys)
	if reconnects != 0 || lost != 0 {
		t.Errorf("the rotation stalled lock rounds: %d lock connections lost, made or accepted and %d messages lost, want 0 "+
			"(each forces a later round on the locks it carried)", reconnects, lost)
	}
	progressed("after the rotation", 5)
	if err := os.WriteFile(stop, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitWorkers(t, ws)

	hs := holds(t, ws)
	if got := readCounter(t, counter); got != len(hs) {
		t.Errorf("counter = %d after %d critical sections (lost increments)", got, len(hs))
	}
	checkExclusive(t, hs)
	var before, during, duringAt int64
	var nBefore, nDuring int
	after := map[string]int{}
	var gapsBefore []int64
	for i := 1; i < len(hs); i++ {
		gap := hs[i].enter - hs[i-1].leave
		switch {
		case hs[i].enter < rotStart:
			before = max(before, gap)
			gapsBefore = append(gapsBefore, gap)
			nBefore++
		case hs[i-1].leave <= rotEnd:
			if gap > during {
				during, duringAt = gap, hs[i-1].leave-rotStart
			}
			nDuring++
		}
		if hs[i].enter > rotEnd {
			after[hs[i].worker]++
		}
	}
	p50, _ := stats(gapsBefore)
	for _, w := range ws {
		if id := strings.TrimPrefix(w.name, "worker "); after[id] == 0 {
			t.Errorf("%s was not granted after the rotation", w.name)
		}
	}
	t.Logf("%d critical sections; rotation (3 commands + old-key connections closed) took %s with %d hand-overs, "+
		"longest with no holder %s (from +%s; %s); before it, %d hand-overs, median %s, longest %s",
		len(hs), ms(rotEnd-rotStart), nDuring, ms(during), ms(duringAt), strings.Join(marks, ", "), nBefore, ms(p50), ms(before))
	waitIdle(t, startTimeout, nodes, "lock")

	code, out, errOut := run(t, 30*time.Second, suite.binary, "keys", "--control", nodes[0].control(), "list")
	if code != 0 || strings.Contains(out, oldKey) || !strings.Contains(out, newKey) {
		t.Errorf("keys list after the rotation: exit %d, want only the new key:\n%s\n%s", code, out, errOut)
	}
	code, _, errOut = run(t, 30*time.Second, suite.binary, "keys", "--control", nodes[0].control(), "remove", newKey)
	if code != 1 || !strings.Contains(errOut, "primary key") {
		t.Errorf("keys remove of the primary key: exit %d, want 1 saying why: %s", code, errOut)
	}

	// A peer with only the old key is refused.
	x := startMount(t, nodeOpts{name: "x", join: []string{nodes[0].bind}, keyFile: oldFile})
	if code := x.p.wait(t, 20*time.Second+stopTimeout); code != 11 {
		t.Errorf("a peer with the old key: mount exited %d, want 11\nstderr: %s", code, x.p.stderr.String())
	}
	for _, n := range nodes {
		if n0(n.status()).memberStatus("x") == peer.MemberAlive {
			t.Errorf("%s lists the peer with the old key as alive", n.name)
		}
	}

	// The old key no longer opens a lock channel to a; the new one does.
	st := nodes[0].keyStatus(t)
	var lockAddr string
	for _, m := range st.Members {
		if m.Name == "a" {
			lockAddr = m.LockAddr
		}
	}
	newRaw, _ := base64.StdEncoding.DecodeString(newKey)
	oldRaw, _ := base64.StdEncoding.DecodeString(oldKey)
	for _, tc := range []struct {
		name string
		key  []byte
		ok   bool
	}{{"old", oldRaw, false}, {"new", newRaw, true}} {
		tr, err := transport.Listen(transport.Config{Name: "probe-" + tc.name, Incarnation: 1, ListenAddr: "127.0.0.1:0",
			Key: tc.key, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
			Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		tr.AddPeer("a", st.Incarnation, lockAddr)
		waitFor(t, startTimeout, "the "+tc.name+"-key probe to connect or be refused", func() bool {
			s := tr.Stats()
			return s.Connects > 0 || s.HandshakeFailures >= 2
		})
		s := tr.Stats()
		if (s.Connects > 0) != tc.ok {
			t.Errorf("lock channel of a with the %s key: %d connects, %d handshake failures", tc.name, s.Connects, s.HandshakeFailures)
		}
		t.Logf("lock channel of a with the %s key: %d connects, %d handshake failures", tc.name, s.Connects, s.HandshakeFailures)
		tr.Close()
	}

	// c restarts with its old --key-file: the keyring kept in its
	// --state-dir has the new key, so it rejoins and locks.
	nodes[2].term(t)
	c := nodes[2].restart(t)
	if !strings.Contains(c.line, ", encrypted") {
		t.Fatalf("restarted c's line %q does not say encrypted", c.line)
	}
	if !strings.Contains(c.p.stderr.String(), "rotated away") {
		t.Errorf("restarted c does not say it uses its keyring file over the rotated-away --key-file:\n%s", c.p.stderr.String())
	}
	waitConverged(t, startTimeout, []*node{nodes[0], nodes[1], c})
	if code, _, errOut := dlockfs(t, 30*time.Second, "lock", "--timeout", "20s", c.dir, "--", "true"); code != 0 {
		t.Fatalf("lock on c restarted after the rotation: exit %d\n%s", code, errOut)
	}
	code, out, errOut = run(t, 30*time.Second, suite.binary, "keys", "--control", c.control(), "list")
	if code != 0 || strings.Contains(out, oldKey) || !strings.Contains(out, newKey) {
		t.Errorf("keys list on restarted c: exit %d, want only the new key:\n%s\n%s", code, out, errOut)
	}
}
