package e2e

import (
	"encoding/json"
	"strings"
	"syscall"
	"testing"
	"time"
)

// clusterDoc is the part of "dlockfs status --cluster --json" the tests
// check.
type clusterDoc struct {
	Node     string `json:"node"`
	BoundMS  int64  `json:"bound_ms"`
	Complete bool   `json:"complete"`
	Peers    []struct {
		Name      string `json:"name"`
		Status    string `json:"status"`
		Answered  bool   `json:"answered"`
		Error     string `json:"error"`
		ElapsedMS int64  `json:"elapsed_ms"`
	} `json:"peers"`
	Locks []struct {
		Name    string   `json:"name"`
		Holder  string   `json:"holder"`
		Holders []string `json:"holders"`
		Mode    string   `json:"mode"`
		Token   uint64   `json:"token"`
		Queue   []struct {
			Node    string `json:"node"`
			ReqTime uint64 `json:"req_time"`
			Waiting int    `json:"waiting"`
		} `json:"queue"`
		Views []struct {
			Node  string `json:"node"`
			State string `json:"state"`
		} `json:"views"`
	} `json:"locks"`
}

// clusterStatus runs "dlockfs status --cluster --json" on n.
func clusterStatus(t *testing.T, n *node, timeout string) clusterDoc {
	t.Helper()
	code, out, errOut := dlockfs(t, time.Minute, "status", "--cluster", "--json", "--timeout", timeout, n.dir)
	if code != 0 {
		t.Fatalf("status --cluster on %s: exit %d\n%s", n.name, code, errOut)
	}
	var d clusterDoc
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatalf("status --cluster --json on %s: %v\n%s", n.name, err, out)
	}
	return d
}

// TestClusterStatus: on 3 encrypted peers, a shell on a holds "deploy"
// and one on b waits for it: "dlockfs status --cluster" on c says a holds
// it (with a's token) and b is queued, with each peer's view, in JSON and
// as a table. Then b's daemon is paused (SIGSTOP): the next cluster status
// on c still answers, within its bound, shows b as not answering, the
// answer as incomplete, and a as the holder.
func TestClusterStatus(t *testing.T) {
	needEnv(t)
	nodes := startCluster(t, 3, nodeOpts{keyFile: keyFile(t)})
	a, b, c := nodes[0], nodes[1], nodes[2]
	h := shellHold(t, a, "deploy")
	tok, _ := held(t, h.waitLine(t, startTimeout, "held "))
	w := shellHold(t, b, "deploy")
	waitWaiting(t, b, "deploy", 1)

	d := clusterStatus(t, c, "5s")
	if d.Node != "c" || !d.Complete || len(d.Peers) != 3 {
		t.Fatalf("cluster status from c: %+v", d)
	}
	for _, p := range d.Peers {
		if !p.Answered || p.Status != "alive" {
			t.Errorf("peer %+v did not answer", p)
		}
	}
	if len(d.Locks) != 1 {
		t.Fatalf("locks: %+v", d.Locks)
	}
	l := d.Locks[0]
	if l.Name != "deploy" || l.Holder != "a" || len(l.Holders) != 1 || l.Token != tok {
		t.Errorf("deploy: holder %q (%v) token %d; want a, token %d", l.Holder, l.Holders, l.Token, tok)
	}
	if len(l.Queue) != 1 || l.Queue[0].Node != "b" || l.Queue[0].Waiting != 1 {
		t.Errorf("deploy's queue: %+v, want b with 1 waiting", l.Queue)
	}
	views := map[string]string{}
	for _, v := range l.Views {
		views[v.Node] = v.State
	}
	if views["a"] != "holding" || views["b"] != "requesting" {
		t.Errorf("views: %v", views)
	}

	code, out, errOut := dlockfs(t, time.Minute, "status", "--cluster", c.dir)
	if code != 0 {
		t.Fatalf("status --cluster: exit %d\n%s", code, errOut)
	}
	for _, want := range []string{"3 of 3 alive members answered", "\ndeploy  a ", " b@"} {
		if !strings.Contains(out, want) {
			t.Errorf("status --cluster table lacks %q:\n%s", want, out)
		}
	}

	b.p.signal(t, syscall.SIGSTOP)
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = b.p.cmd.Process.Signal(syscall.SIGCONT)
		}
	}
	t.Cleanup(resume)
	d = clusterStatus(t, c, "1s")
	resume()
	t.Logf("with b paused: %+v", d.Peers)
	for _, p := range d.Peers {
		switch {
		case p.Name == "b" && p.Answered:
			t.Errorf("paused b answered: %+v", p)
		case p.Name == "b" && p.Status == "alive" && !strings.Contains(p.Error, "not answering within 1s"):
			t.Errorf("b's error %q does not say it is not answering within the bound", p.Error)
		case p.Name == "b" && p.Status == "alive" && d.Complete:
			t.Errorf("complete although alive b did not answer")
		case p.Name != "b" && !p.Answered:
			t.Errorf("%s did not answer: %+v", p.Name, p)
		}
	}
	if len(d.Locks) != 1 || d.Locks[0].Holder != "a" {
		t.Errorf("with b paused, locks: %+v, want deploy held by a", d.Locks)
	}
	release(t, h)
	w.waitLine(t, startTimeout, "held ")
	release(t, w)
}
