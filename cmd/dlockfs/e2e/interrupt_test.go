package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// interruptScript runs TOTAL "timeout 0.05 cat MOUNT/lock" in batches of
// PAR in parallel and prints "timeouts N granted N other N".
const interruptScript = `M=$1 TOTAL=$2 PAR=$3
timeouts=0 granted=0 other=0
for ((done = 0; done < TOTAL; done += PAR)); do
	pids=()
	for ((j = 0; j < PAR && done + j < TOTAL; j++)); do
		timeout 0.05 cat "$M/lock" >/dev/null 2>&1 &
		pids+=($!)
	done
	for p in "${pids[@]}"; do
		wait "$p"
		case $? in
		124) timeouts=$((timeouts + 1)) ;;
		0) granted=$((granted + 1)) ;;
		*) other=$((other + 1)) ;;
		esac
	done
done
echo "timeouts $timeouts granted $granted other $other"
`

// TestInterruptedWaits interrupts 500 waits (timeout 0.05 cat MOUNT/lock)
// on every peer while one peer holds the lock. Afterwards no phantom
// request is left anywhere (every .status: nothing queued, awaited or
// waiting) and every peer acquires the lock at once. It runs without and
// with --fast-path.
func TestInterruptedWaits(t *testing.T) {
	needEnv(t)
	for _, fastPath := range []bool{false, true} {
		name := "plain"
		if fastPath {
			name = "fast-path"
		}
		t.Run(name, func(t *testing.T) { interruptedWaits(t, fastPath) })
	}
}

// interruptedWaits is TestInterruptedWaits with or without --fast-path.
func interruptedWaits(t *testing.T, fastPath bool) {
	nodes := startCluster(t, 3, nodeOpts{fastPath: fastPath})
	a := nodes[0]
	h := shellHold(t, a, "lock")
	h.waitLine(t, startTimeout, "held ")

	// 100 on the holder's own peer, 200 on each of the others.
	share := map[string]int{"a": 100, "b": 200, "c": 200}
	const par = 10
	start := time.Now()
	var ps []*proc
	for _, n := range nodes {
		ps = append(ps, startProc(t, "interrupter on "+n.name, workerTimeout, "bash", "-c", interruptScript,
			"interrupter", n.dir, strconv.Itoa(share[n.name]), strconv.Itoa(par)))
	}
	total := 0
	for i, p := range ps {
		if code := p.wait(t, workerTimeout+stopTimeout); code != 0 {
			t.Fatalf("%s exited %d: %s", p.name, code, p.stderr.String())
		}
		var to, gr, ot int
		line := strings.Join(p.output(), "")
		if _, err := fmt.Sscanf(line, "timeouts %d granted %d other %d", &to, &gr, &ot); err != nil {
			t.Fatalf("%s printed %q", p.name, line)
		}
		if to != share[nodes[i].name] || gr != 0 || ot != 0 {
			t.Errorf("%s: %d timed out, %d were granted the lock %s holds, %d failed otherwise; want all %d timed out",
				nodes[i].name, to, gr, a.name, ot, share[nodes[i].name])
		}
		total += to + gr + ot
	}
	t.Logf("%d interrupted waits (batches of %d per peer, 3 peers at once) in %v", total, par, time.Since(start).Round(time.Millisecond))

	// While a still holds: nothing waits anywhere, nothing is queued at a.
	waitLock(t, startTimeout, nodes, "lock", "free of requests while a holds", noRequests)
	release(t, h)
	waitIdle(t, startTimeout, nodes, "lock")
	for _, n := range nodes {
		d := n.mustStatus(t)
		t.Logf("%s counters after the interrupted waits: %+v", n.name, d.Counters)
	}

	// Every peer acquires at once (bounded), tokens rising.
	var last uint64
	for _, n := range nodes {
		begin := time.Now()
		code, out, errOut := run(t, 15*time.Second, "timeout", "10", "head", "-n1", n.dir+"/lock")
		if code != 0 {
			t.Fatalf("%s: acquiring after the interrupted waits: exit %d: %s", n.name, code, errOut)
		}
		tok, err := strconv.ParseUint(strings.TrimSpace(out), 10, 64)
		if err != nil || tok <= last {
			t.Errorf("%s: token %q after %d", n.name, out, last)
		}
		last = tok
		t.Logf("%s acquired in %v", n.name, time.Since(begin).Round(time.Microsecond))
	}
	waitIdle(t, startTimeout, nodes, "lock")
}

// TestInterruptRacesGrants interrupts waits while the lock changes hands
// all the time (workers on every peer), so that grants race the
// interrupts: the workers' holds stay exclusive, every interrupted cat
// either timed out or got the lock, and afterwards no request is left
// anywhere and every peer acquires at once.
func TestInterruptRacesGrants(t *testing.T) {
	needEnv(t)
	nodes := startCluster(t, 3, nodeOpts{})
	counter := counterFile(t)
	ws := startWorkers(t, nodes, 2, 30, counter)
	const each, par = 100, 10
	var ps []*proc
	for _, n := range nodes {
		ps = append(ps, startProc(t, "interrupter on "+n.name, workerTimeout, "bash", "-c", interruptScript,
			"interrupter", n.dir, strconv.Itoa(each), strconv.Itoa(par)))
	}
	waitWorkers(t, ws)
	var timeouts, granted int
	for _, p := range ps {
		if code := p.wait(t, workerTimeout+stopTimeout); code != 0 {
			t.Fatalf("%s exited %d: %s", p.name, code, p.stderr.String())
		}
		var to, gr, ot int
		line := strings.Join(p.output(), "")
		if _, err := fmt.Sscanf(line, "timeouts %d granted %d other %d", &to, &gr, &ot); err != nil {
			t.Fatalf("%s printed %q", p.name, line)
		}
		if ot != 0 || to+gr != each {
			t.Errorf("%s: %d timed out, %d granted, %d failed otherwise", p.name, to, gr, ot)
		}
		timeouts += to
		granted += gr
	}
	hs := holds(t, ws)
	if got := readCounter(t, counter); got != 180 || len(hs) != 180 {
		t.Errorf("counter %d, %d holds recorded, want 180", got, len(hs))
	}
	checkExclusive(t, hs)
	t.Logf("%d waits interrupted, %d cats got the lock within 50 ms, while workers did %d sections",
		timeouts, granted, len(hs))
	waitIdle(t, startTimeout, nodes, "lock")
	for _, n := range nodes {
		code, _, errOut := run(t, 15*time.Second, "timeout", "10", "head", "-n1", n.dir+"/lock")
		if code != 0 {
			t.Fatalf("%s: acquiring afterwards: exit %d: %s", n.name, code, errOut)
		}
	}
	waitIdle(t, startTimeout, nodes, "lock")
}
