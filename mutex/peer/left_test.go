package peer

import (
	"context"
	"testing"
	"time"

	"github.com/dlockfs/dlockfs/mutex/testutil"
)

// TestLeftMemberDropped: a member that left is listed as left, then
// dropped from Status once LeftMemberTimeout has passed (here shortened
// to 1 s; the default is LeftMemberTimeout, 5 minutes).
func TestLeftMemberDropped(t *testing.T) {
	c := newCluster(t, listenTCP)
	var ps []*Peer
	for _, name := range []string{"a", "b", "c"} {
		cfg := c.config(name, c.joinAddrs()...)
		cfg.LeftMemberTimeout = time.Second
		p, err := c.startCfg(cfg)
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	c.waitConverged()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ps[2].Leave(ctx); err != nil {
		t.Fatal(err)
	}
	listed := func(p *Peer, name string) string {
		for _, m := range p.Status().Members {
			if m.Name == name {
				return m.Status
			}
		}
		return ""
	}
	testutil.WaitFor(t, 10*time.Second, "a to list c as left", func() bool { return listed(ps[0], "c") == "left" })
	testutil.WaitFor(t, 20*time.Second, "a and b to drop c", func() bool { return listed(ps[0], "c") == "" && listed(ps[1], "c") == "" })
}

func TestConfigRejectsNegativeTimes(t *testing.T) {
	for _, cfg := range []Config{{LeftMemberTimeout: -time.Second}, {JoinAttempts: -1}} {
		cfg = cfg.withDefaults()
		if err := cfg.Validate(); err == nil {
			t.Errorf("%+v: valid", cfg)
		}
	}
}
