package e2e

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
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

// The nemesis suite: 5 peers in network namespaces, 2 workers per peer
// taking MOUNT/lock in a loop and writing to a fenced resource, and a
// nemesis injecting faults (split, bridge, isolating the holder, pausing
// a daemon, killing and restarting one). The resource and the checker are
// in the test process.

// fencedResource is the shared resource outside the cluster: a TCP server
// on 127.0.0.1 that the workers (in the root network namespace; only the
// daemons run in the peers' namespaces) reach with bash's /dev/tcp. One
// connection is one hold:
//
//	want ID PEER   before opening the lock (the grant comes after this)
//	begin TOKEN    after reading the token (the hold starts)
//	write          a write under the hold: "ok", or "stale" if a write
//	               with a higher token was accepted before (rejected)
//	end            before closing the lock (the hold ends)
//
// Every line is answered, so the worker's steps and the server's clock are
// ordered. The recorded interval [begin, end] lies inside the real hold.
type fencedResource struct {
	ln net.Listener

	mu       sync.Mutex
	holds    []*rhold
	maxTok   uint64   // highest token of an accepted write
	accepted []uint64 // tokens of accepted writes, in order
	stale    int      // writes rejected as stale
	badLines []string
}

// rhold is one hold as the resource saw it.
type rhold struct {
	id, peer         string
	token            uint64
	want, begin, end time.Time
	writes, stale    int
	told             bool // the worker saw its hold revoked (EIO) and stopped
	revoked          bool // its daemon logged the hold's revocation
}

func newFencedResource(t *testing.T) *fencedResource {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &fencedResource{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go r.serve(c)
		}
	}()
	return r
}

func (r *fencedResource) port() string {
	return strconv.Itoa(r.ln.Addr().(*net.TCPAddr).Port)
}

func (r *fencedResource) serve(c net.Conn) {
	defer c.Close()
	h := &rhold{}
	sc := bufio.NewScanner(c)
	registered := false
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		now := time.Now()
		ans := "ok"
		r.mu.Lock()
		switch {
		case len(f) == 3 && f[0] == "want":
			h.id, h.peer, h.want = f[1], f[2], now
		case len(f) == 2 && f[0] == "begin":
			tok, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				r.badLines = append(r.badLines, sc.Text())
				ans = "bad"
				break
			}
			h.token, h.begin = tok, now
			if !registered {
				r.holds = append(r.holds, h)
				registered = true
			}
		case len(f) == 1 && f[0] == "write" && registered:
			h.writes++
			if h.token < r.maxTok {
				h.stale++
				r.stale++
				ans = "stale"
			} else {
				r.maxTok = h.token
				r.accepted = append(r.accepted, h.token)
			}
		case len(f) == 1 && f[0] == "end" && registered:
			if h.end.IsZero() {
				h.end = now
			}
		case len(f) == 1 && f[0] == "revoked" && registered:
			h.end, h.told = now, true
		default:
			r.badLines = append(r.badLines, sc.Text())
			ans = "bad"
		}
		r.mu.Unlock()
		if _, err := fmt.Fprintln(c, ans); err != nil {
			break
		}
	}
	r.mu.Lock()
	if registered && h.end.IsZero() {
		h.end = time.Now() // the worker died in the hold
	}
	r.mu.Unlock()
}

// snapshot copies the holds.
func (r *fencedResource) snapshot() []rhold {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]rhold, len(r.holds))
	for i, h := range r.holds {
		out[i] = *h
	}
	return out
}

// current returns the peer of the hold in progress, if any.
func (r *fencedResource) current() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.holds) - 1; i >= 0; i-- {
		if r.holds[i].end.IsZero() {
			return r.holds[i].peer
		}
	}
	return ""
}

// firstBegin returns the first hold begun at or after t by a peer in side
// (any peer if side is nil).
func (r *fencedResource) firstBegin(after time.Time, side []string) (rhold, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, h := range r.holds {
		if !h.begin.Before(after) && (side == nil || slices.Contains(side, h.peer)) {
			return *h, true
		}
	}
	return rhold{}, false
}

// nemesisWorker loops: announce, take MOUNT/lock, read the token, begin,
// write twice (more while the flag file FLAGS/PEER exists: the nemesis
// keeps the holder writing through a pause of its daemon), end, release.
// An open or read that fails (a killed daemon, a dead mount) is retried.
// It exits when FLAGS/stop exists.
const nemesisWorker = `M=$1 PORT=$2 ID=$3 PEER=$4 F=$5
while [[ ! -e $F/stop ]]; do
	exec 8<>/dev/tcp/127.0.0.1/$PORT || { echo "$ID: cannot reach the resource" >&2; exit 3; }
	echo "want $ID $PEER" >&8; read -r a <&8
	if ! exec 9<"$M/lock"; then exec 8<&-; sleep 0.2; continue; fi
	if ! read -r token <&9; then exec 9<&-; exec 8<&-; sleep 0.2; continue; fi
	echo "begin $token" >&8; read -r a <&8
	k=0
	while ((k < 2)) || [[ -e $F/$PEER ]]; do
		# A revoked hold's reads fail (EIO): the holder stops. Not while
		# the flag is set: that holder models one that cannot be told.
		e=
		[[ -e $F/$PEER ]] || e=$({ read -r x <&9; } 2>&1)
		if [[ $e == *rror* ]]; then echo revoked >&8; read -r a <&8; break; fi
		echo write >&8; read -r a <&8
		[[ $a == stale ]] && echo "$ID: stale write rejected, token $token" >&2
		sleep 0.05
		((k++))
	done
	echo end >&8; read -r a <&8
	exec 8<&-
	exec 9<&-
done
`

// fault is one injected fault.
type fault struct {
	kind      string
	detail    string
	at, healT time.Time
	majority  []string // peers on the side that must go on
	stall     time.Duration
	progress  bool
}

// window is a span in which a peer's daemon was stopped (SIGSTOP).
type window struct {
	peer     string
	from, to time.Time
}

// nemesisLab wraps the cluster: nodes in namespaces, and pairwise cuts
// made with blackhole routes inside the namespaces.
type nemesisLab struct {
	t     *testing.T
	lab   *netLab
	nodes []*node
	every []*node           // every daemon started, restarted ones included
	ns    map[string]string // peer -> namespace
	ip    map[string]string // peer -> IP
	cuts  [][2]string       // routes in place: {peer, IP blackholed}
}

func (l *nemesisLab) names() []string { return names(l.nodes) }

func (l *nemesisLab) node(name string) *node {
	for _, n := range l.nodes {
		if n.name == name {
			return n
		}
	}
	l.t.Fatalf("no peer %q", name)
	return nil
}

// cut drops all traffic between p and q (both ways).
func (l *nemesisLab) cut(p, q string) {
	for _, c := range [][2]string{{p, q}, {q, p}} {
		l.lab.ip("-n", l.ns[c[0]], "route", "add", "blackhole", l.ip[c[1]]+"/32")
		l.cuts = append(l.cuts, [2]string{c[0], l.ip[c[1]]})
	}
}

// cutSets cuts every pair across a and b.
func (l *nemesisLab) cutSets(a, b []string) {
	for _, p := range a {
		for _, q := range b {
			l.cut(p, q)
		}
	}
}

// healAll removes every cut.
func (l *nemesisLab) healAll() {
	for _, c := range l.cuts {
		l.lab.ip("-n", l.ns[c[0]], "route", "del", "blackhole", c[1]+"/32")
	}
	l.cuts = nil
}

func without(all []string, x ...string) []string {
	var out []string
	for _, a := range all {
		if !slices.Contains(x, a) {
			out = append(out, a)
		}
	}
	return out
}

// TestNemesis runs the nemesis schedule: one fault of each kind (≤ 60 s
// of faults), or, with DLOCKFS_NEMESIS_SOAK=DURATION, faults in a loop for
// that long. Safety failures are never tolerated; overlaps are exempt only
// for a hold whose own daemon was stopped while the hold was requested or
// held (its process cannot be told; fencing must reject its late writes).
func TestNemesis(t *testing.T) {
	needEnv(t)
	soak := time.Duration(0)
	if s := os.Getenv("DLOCKFS_NEMESIS_SOAK"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("DLOCKFS_NEMESIS_SOAK=%q: %v", s, err)
		}
		soak = d
	}
	limit := 10*time.Minute + 2*soak

	lab := newNetLab(t)
	nl := &nemesisLab{t: t, lab: lab, ns: map[string]string{}, ip: map[string]string{}}
	for i := range 5 {
		ns, ip := lab.addHost("br1")
		name := string(rune('a' + i))
		o := nodeOpts{name: name, bind: ip + ":7946", lockBind: ip + ":7947", profile: "fast", netns: ns, limit: limit}
		if i > 0 {
			o.join = []string{nl.nodes[0].bind}
		}
		nl.ns[name], nl.ip[name] = ns, ip
		nl.nodes = append(nl.nodes, startNode(t, o))
	}
	nl.every = slices.Clone(nl.nodes)
	waitConverged(t, startTimeout, nl.nodes)
	all := nl.names()

	res := newFencedResource(t)
	flags := t.TempDir()
	var workers []*proc
	for _, n := range nl.nodes {
		for i := range 2 {
			id := fmt.Sprintf("%s%d", n.name, i)
			workers = append(workers, startProc(t, "worker "+id, limit, "bash", "-c", nemesisWorker, "worker",
				n.dir, res.port(), id, n.name, flags))
		}
	}
	// Stopped daemons are continued before anything else is cleaned up.
	var pausedMu sync.Mutex
	paused := map[*node]bool{}
	t.Cleanup(func() {
		pausedMu.Lock()
		defer pausedMu.Unlock()
		for n := range paused {
			_ = n.p.cmd.Process.Signal(syscall.SIGCONT)
		}
	})
	testutil.WaitFor(t, startTimeout, "a first hold", func() bool { _, ok := res.firstBegin(time.Time{}, nil); return ok })

	const (
		faultFor    = 5 * time.Second         // partitions and the kill last this long
		pauseFor    = 3500 * time.Millisecond // > lease + lock-delay (1 s + 2 s): the others go on
		progressFor = 30 * time.Second        // bound on the wait for a grant after a heal
	)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	holderOr := func() string {
		if p := res.current(); p != "" {
			return p
		}
		return all[rng.IntN(len(all))]
	}
	var faults []*fault
	var pauses []window
	kinds := []string{"split", "bridge", "isolate", "pause", "kill"}
	start := time.Now()
	for round := 0; ; round++ {
		if soak == 0 && round == len(kinds) {
			break
		}
		if soak > 0 && time.Since(start) > soak {
			break
		}
		kind := kinds[round%len(kinds)]
		if soak > 0 && round >= len(kinds) {
			kind = kinds[rng.IntN(len(kinds))]
		}
		f := &fault{kind: kind}
		switch kind {
		case "split":
			perm := slices.Clone(all)
			rng.Shuffle(len(perm), func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
			maj, min := perm[:3], perm[3:]
			sort.Strings(maj)
			sort.Strings(min)
			f.detail, f.majority = fmt.Sprintf("%v|%v", maj, min), maj
			f.at = time.Now()
			nl.cutSets(maj, min)
			time.Sleep(faultFor) // the fault itself
		case "bridge":
			perm := slices.Clone(all)
			rng.Shuffle(len(perm), func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
			p, r, q := perm[:2], perm[2], perm[3:]
			f.detail, f.majority = fmt.Sprintf("%v-%s-%v (p-q down)", p, r, q), all
			f.at = time.Now()
			nl.cutSets(p, q)
			time.Sleep(faultFor)
		case "isolate":
			x := holderOr()
			f.detail, f.majority = x, without(all, x)
			f.at = time.Now()
			nl.cutSets([]string{x}, without(all, x))
			time.Sleep(faultFor)
		case "pause":
			x := holderOr()
			n := nl.node(x)
			// Keep x's holder writing through the pause.
			flag := filepath.Join(flags, x)
			if err := os.WriteFile(flag, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			f.detail, f.majority = x, without(all, x)
			f.at = time.Now()
			pausedMu.Lock()
			paused[n] = true
			pausedMu.Unlock()
			n.p.signal(t, syscall.SIGSTOP)
			time.Sleep(pauseFor)
			n.p.signal(t, syscall.SIGCONT)
			pausedMu.Lock()
			delete(paused, n)
			pausedMu.Unlock()
			pauses = append(pauses, window{peer: x, from: f.at, to: time.Now()})
			if err := os.Remove(flag); err != nil {
				t.Fatal(err)
			}
		case "kill":
			x := holderOr()
			n := nl.node(x)
			f.detail, f.majority = x, without(all, x)
			f.at = time.Now()
			n.kill(t)
			n.detach()
			time.Sleep(faultFor)
			o := n.opts
			o.join = nil
			for _, m := range nl.nodes {
				if m != n {
					o.join = append(o.join, m.bind)
				}
			}
			nn := startNode(t, o)
			nl.every = append(nl.every, nn)
			for i := range nl.nodes {
				if nl.nodes[i] == n {
					nl.nodes[i] = nn
				}
			}
		}
		nl.healAll()
		f.healT = time.Now()
		faults = append(faults, f)
		// Progress: the majority side granted after the fault, and some
		// peer grants after the heal, within a bound.
		deadline := time.Now().Add(progressFor)
		for time.Now().Before(deadline) {
			_, healed := res.firstBegin(f.healT, nil)
			if h, ok := res.firstBegin(f.at, f.majority); ok && healed {
				f.progress, f.stall = true, h.begin.Sub(f.at)
				break
			}
			time.Sleep(pollEvery * 10)
		}
		if !f.progress {
			t.Errorf("%s %s: no grant on the majority side %v within %v of the heal", f.kind, f.detail, f.majority, progressFor)
		}
		waitConverged(t, 60*time.Second, nl.nodes)
		t.Logf("fault %d: %s %s: held %v, stall to the majority side's next grant %v",
			round, f.kind, f.detail, f.healT.Sub(f.at).Round(time.Millisecond), f.stall.Round(time.Millisecond))
	}

	// Stop the workers and wait for them.
	if err := os.WriteFile(filepath.Join(flags, "stop"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, w := range workers {
		if code := w.wait(t, 60*time.Second); code != 0 {
			t.Errorf("%s exited %d\nstderr: %s", w.name, code, w.stderr.String())
		}
	}
	checkNemesis(t, res, faults, pauses, nl)
}

// checkNemesis checks the resource's record and logs the summary.
func checkNemesis(t *testing.T, res *fencedResource, faults []*fault, pauses []window, nl *nemesisLab) {
	t.Helper()
	hs := res.snapshot()
	// Holds their daemon revoked (its lease lapsed), from the peer logs.
	revoked := map[string]bool{}
	for _, n := range nl.every {
		for line := range strings.SplitSeq(n.p.stderr.String(), "\n") {
			if !strings.Contains(line, "lock revoked") {
				continue
			}
			if _, tok, ok := strings.Cut(line, " token="); ok {
				revoked[n.name+"/"+strings.Fields(tok)[0]] = true
			}
		}
	}
	for i := range hs {
		hs[i].revoked = revoked[fmt.Sprintf("%s/%d", hs[i].peer, hs[i].token)]
	}
	sort.Slice(hs, func(i, j int) bool { return hs[i].begin.Before(hs[j].begin) })
	res.mu.Lock()
	stale, accepted, bad := res.stale, slices.Clone(res.accepted), slices.Clone(res.badLines)
	res.mu.Unlock()
	if len(bad) > 0 {
		t.Errorf("the resource got malformed lines: %q", bad)
	}
	// A hold is exempt if its own daemon was stopped between its request
	// and its end.
	exempt := func(h rhold) bool {
		for _, w := range pauses {
			if w.peer == h.peer && h.want.Before(w.to) && h.end.After(w.from) {
				return true
			}
		}
		return false
	}
	var failures []string
	fail := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		failures = append(failures, msg)
		if len(failures) <= 20 {
			t.Errorf("SAFETY: %s", msg)
		}
	}
	tl := func(h rhold) string {
		s := fmt.Sprintf("%s@%s token %d [%s, %s] (want %s, %d writes, %d stale)", h.id, h.peer, h.token,
			h.begin.Format("15:04:05.000000"), h.end.Format("15:04:05.000000"), h.want.Format("15:04:05.000000"),
			h.writes, h.stale)
		if h.revoked {
			s += fmt.Sprintf(" [REVOKED by %s's daemon; holder told: %v]", h.peer, h.told)
		}
		return s
	}
	// The resource's accepted writes never go down in token.
	for i := 1; i < len(accepted); i++ {
		if accepted[i] < accepted[i-1] {
			fail("the resource accepted token %d after token %d", accepted[i], accepted[i-1])
		}
	}
	// Tokens are unique, and strictly rise across successive grants
	// (exempt holds excluded from the order: their grant may be read late).
	seen := map[uint64]string{}
	var prev *rhold
	overlapsExempt, exemptHolds := 0, 0
	for i := range hs {
		h := hs[i]
		if o, dup := seen[h.token]; dup {
			fail("token %d granted twice: %s and %s", h.token, o, tl(h))
		}
		seen[h.token] = tl(h)
		if exempt(h) {
			exemptHolds++
			continue
		}
		if prev != nil && h.token <= prev.token {
			fail("tokens fell: %s, then %s", tl(*prev), tl(h))
		}
		prev = &hs[i]
	}
	// No two holds overlap, unless one of them is exempt.
	overlaps, overlapsRevoked := 0, 0
	for i := range hs {
		for j := range i {
			if hs[j].end.After(hs[i].begin) {
				if exempt(hs[i]) || exempt(hs[j]) {
					overlapsExempt++
					t.Logf("overlap in a pause window (fencing covers it): %s and %s", tl(hs[j]), tl(hs[i]))
					continue
				}
				overlaps++
				if hs[j].revoked || hs[i].revoked {
					overlapsRevoked++
				}
				fail("holds overlap outside a pause: %s and %s", tl(hs[j]), tl(hs[i]))
			}
		}
	}
	if len(failures) > 0 {
		var b strings.Builder
		for _, f := range faults {
			fmt.Fprintf(&b, "  fault %s %s at %s healed %s\n", f.kind, f.detail, f.at.Format("15:04:05.000000"),
				f.healT.Format("15:04:05.000000"))
		}
		for _, w := range pauses {
			fmt.Fprintf(&b, "  paused %s [%s, %s]\n", w.peer, w.from.Format("15:04:05.000000"), w.to.Format("15:04:05.000000"))
		}
		for _, h := range hs {
			fmt.Fprintf(&b, "  %s\n", tl(h))
		}
		t.Logf("timeline:\n%s", b.String())
		for _, n := range nl.nodes {
			st, err := os.ReadFile(filepath.Join(n.dir, ".status"))
			t.Logf("%s .status (%v): %s", n.name, err, st)
		}
	}
	// Summary.
	byKind := map[string][]time.Duration{}
	var kinds []string
	for _, f := range faults {
		if _, ok := byKind[f.kind]; !ok {
			kinds = append(kinds, f.kind)
		}
		if f.progress {
			byKind[f.kind] = append(byKind[f.kind], f.stall)
		} else {
			byKind[f.kind] = append(byKind[f.kind], -1)
		}
	}
	sort.Strings(kinds)
	var fk, st []string
	for _, k := range kinds {
		var us []int64
		for _, d := range byKind[k] {
			us = append(us, d.Microseconds())
		}
		p50, mx := stats(us)
		fk = append(fk, fmt.Sprintf("%s=%d", k, len(byKind[k])))
		st = append(st, fmt.Sprintf("%s max %s p50 %s", k, ms(mx), ms(p50)))
	}
	t.Logf("nemesis summary: holds %d (revoked %d), faults %d (%s), overlaps outside pauses %d (%d with a revoked hold), overlaps in pauses %d (holds exempt %d), stale writes rejected %d, safety failures %d; stall %s",
		len(hs), len(revoked), len(faults), strings.Join(fk, " "), overlaps, overlapsRevoked, overlapsExempt, exemptHolds, stale, len(failures), strings.Join(st, "; "))
	if len(failures) > 0 {
		t.Errorf("SAFETY FAILURE: %d violation(s), %d of %d overlaps outside pauses with a hold its own daemon revoked "+
			"(lease lost) while the holder went on (holder told by EIO: see [REVOKED ...]); the timeline, .status files "+
			"and peer logs are above", len(failures), overlapsRevoked, overlaps)
	}
}
