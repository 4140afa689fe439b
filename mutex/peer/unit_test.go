package peer

import (
	"context"
	"encoding/json"
	"errors"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/serf/serf"

	"github.com/dlockfs/dlockfs/mutex"
	"github.com/dlockfs/dlockfs/mutex/testutil"
)

func TestConfigValidate(t *testing.T) {
	ok := Config{Name: "a", BindAddr: "127.0.0.1:0", Profile: ProfileFast}
	tests := []struct {
		name string
		edit func(*Config)
		want string // substring of the error; "" = valid
	}{
		{"valid", func(*Config) {}, ""},
		{"defaults", func(c *Config) { *c = DefaultConfig() }, ""},
		{"empty profile is lan", func(c *Config) { c.Profile = "" }, ""},
		{"wan", func(c *Config) { c.Profile = ProfileWAN }, ""},
		{"16-byte key", func(c *Config) { c.Key = make([]byte, 16) }, ""},
		{"32-byte key", func(c *Config) { c.Key = make([]byte, 32) }, ""},
		{"long name", func(c *Config) { c.Name = strings.Repeat("n", 256) }, "Name: node name is longer"},
		{"name with a slash", func(c *Config) { c.Name = "a/b" }, "Name: node name \"a/b\" holds '/'"},
		{"name with a space", func(c *Config) { c.Name = "a b" }, "white space"},
		{"bad bind", func(c *Config) { c.BindAddr = "localhost:7946" }, "BindAddr"},
		{"bind without port", func(c *Config) { c.BindAddr = "127.0.0.1" }, "BindAddr"},
		{"bad port", func(c *Config) { c.BindAddr = "127.0.0.1:99999" }, "BindAddr"},
		{"bad advertise", func(c *Config) { c.AdvertiseAddr = "x" }, "AdvertiseAddr"},
		{"bad lock addr", func(c *Config) { c.LockAddr = "1.2.3.4" }, "LockAddr"},
		{"bad lock advertise", func(c *Config) { c.LockAdvertise = ":" }, "LockAdvertise"},
		{"empty join", func(c *Config) { c.Join = []string{"127.0.0.1:1", ""} }, "Join[1]"},
		{"profile", func(c *Config) { c.Profile = "turbo" }, "unknown Profile"},
		{"key size", func(c *Config) { c.Key = make([]byte, 20) }, "Key: the key is 20 bytes"},
		{"no port left for the lock channel", func(c *Config) { c.BindAddr = "127.0.0.1:65535" }, "set LockAddr"},
		{"bind port 65535 with a lock address", func(c *Config) {
			c.BindAddr, c.LockAddr = "127.0.0.1:65535", "127.0.0.1:7000"
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.edit(&c)
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate() = %v, want an error about %q", err, tt.want)
			}
		})
	}
}

// memberPeer runs a driver without Serf on an in-memory transport, so
// member events can be fed to it by hand.
func memberPeer(t *testing.T) (*Peer, *memTransport) {
	t.Helper()
	return memPeer(t, newMemNet(), "me", 7)
}

// memPeer runs a driver without Serf on net, stopped when the test ends.
func memPeer(t *testing.T, net *memNet, name string, inc uint64) (*Peer, *memTransport) {
	t.Helper()
	tr, _ := net.listen(transportConfig{Name: name, Incarnation: inc})
	// The driver's mechanics, in plain mode (majority mode is tested
	// with real Serf clusters).
	p, err := newPeer(Config{Name: name, Profile: ProfileFast, Quorum: QuorumNone}, testLogger().With("peer", name), inc, tr)
	if err != nil {
		t.Fatal(err)
	}
	p.begin(nil)
	t.Cleanup(p.kill)
	return p, tr.(*memTransport)
}

// memPair runs two drivers without Serf, "me" and "a", on one in-memory
// network, each counting the other as a member.
func memPair(t *testing.T) (me *Peer, meTr *memTransport, a *Peer, aTr *memTransport) {
	t.Helper()
	net := newMemNet()
	me, meTr = memPeer(t, net, "me", 7)
	a, aTr = memPeer(t, net, "a", 1)
	me.events <- serf.MemberEvent{Type: serf.EventMemberJoin, Members: []serf.Member{member("a", "1", aTr.Addr())}}
	a.events <- serf.MemberEvent{Type: serf.EventMemberJoin, Members: []serf.Member{member("me", "7", meTr.Addr())}}
	testutil.WaitFor(t, 5*time.Second, "the pair to count each other", func() bool {
		return coreMembers(me)["a"] == 1 && coreMembers(a)["me"] == 7
	})
	return me, meTr, a, aTr
}

func member(name string, nonce, lock string) serf.Member {
	return serf.Member{Name: name, Tags: map[string]string{tagNonce: nonce, tagLock: lock}}
}

func coreMembers(p *Peer) map[string]uint64 {
	got := map[string]uint64{}
	for _, m := range p.coreStatus().Members {
		got[m.Name] = m.Incarnation
	}
	return got
}

// TestDetectionBound checks the bound against memberlist's timers worked
// out by hand.
func TestDetectionBound(t *testing.T) {
	for _, tc := range []struct {
		profile string
		members int
		want    time.Duration
	}{
		// 4 probes of 1 s, 500 ms timeout, 6 × 4 × 1 s.
		{ProfileLAN, 5, 28500 * time.Millisecond},
		// 1 probe, 500 ms, 6 × 4 × 1 s.
		{ProfileLAN, 2, 25500 * time.Millisecond},
		// 4 × 100 ms, 50 ms, 6 × 3 × 100 ms.
		{ProfileFast, 5, 2250 * time.Millisecond},
		// 99 × 5 s, 3 s, 6 × 6 × 2 × 5 s (log10 100 = 2).
		{ProfileWAN, 100, 858 * time.Second},
	} {
		if got := DetectionBound(tc.profile, tc.members); got != tc.want {
			t.Errorf("DetectionBound(%q, %d) = %v, want %v", tc.profile, tc.members, got, tc.want)
		}
	}
}

// The rules that map Serf's member events onto the core.
func TestMemberEvents(t *testing.T) {
	type ev struct {
		typ serf.EventType
		m   serf.Member
	}
	tests := []struct {
		name   string
		events []ev
		want   map[string]uint64
	}{
		{"join", []ev{{serf.EventMemberJoin, member("a", "1", "mem:a")}}, map[string]uint64{"a": 1}},
		{"self is ignored", []ev{{serf.EventMemberJoin, member("me", "9", "mem:me")}}, map[string]uint64{}},
		{"not a dlockfs peer", []ev{
			{serf.EventMemberJoin, serf.Member{Name: "x", Tags: map[string]string{"role": "web"}}},
			{serf.EventMemberJoin, member("y", "zero", "mem:y")},
		}, map[string]uint64{}},
		{"restart: update with a new nonce", []ev{
			{serf.EventMemberJoin, member("a", "1", "mem:a")},
			{serf.EventMemberUpdate, member("a", "2", "mem:a2")},
		}, map[string]uint64{"a": 2}},
		{"failed", []ev{
			{serf.EventMemberJoin, member("a", "1", "mem:a")},
			{serf.EventMemberFailed, member("a", "1", "mem:a")},
		}, map[string]uint64{}},
		{"left then reaped", []ev{
			{serf.EventMemberJoin, member("a", "1", "mem:a")},
			{serf.EventMemberLeave, member("a", "1", "mem:a")},
			{serf.EventMemberReap, member("a", "1", "mem:a")},
		}, map[string]uint64{}},
		{"failure of an older life is stale", []ev{
			{serf.EventMemberJoin, member("a", "1", "mem:a")},
			{serf.EventMemberUpdate, member("a", "2", "mem:a")},
			{serf.EventMemberFailed, member("a", "1", "mem:a")},
		}, map[string]uint64{"a": 2}},
		{"rejoin after failure", []ev{
			{serf.EventMemberJoin, member("a", "1", "mem:a")},
			{serf.EventMemberFailed, member("a", "1", "mem:a")},
			{serf.EventMemberJoin, member("a", "3", "mem:a")},
		}, map[string]uint64{"a": 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, _ := memberPeer(t)
			for _, e := range tt.events {
				p.events <- serf.MemberEvent{Type: e.typ, Members: []serf.Member{e.m}}
			}
			// The driver finishes an input before it takes the next,
			// and events are taken in order: once the channel is empty,
			// a snapshot (a later input) sees them all.
			testutil.WaitFor(t, 5*time.Second, "events to be applied", func() bool { return len(p.events) == 0 })
			if got := coreMembers(p); !mapsEqual(got, tt.want) {
				t.Errorf("core members %v, want %v", got, tt.want)
			}
		})
	}
}

func mapsEqual(a, b map[string]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// A member that goes away while we wait for its reply no longer holds us
// up; on the in-memory transport, without Serf.
func TestDriverMemberGoesAway(t *testing.T) {
	p, tr := memberPeer(t)
	p.events <- serf.MemberEvent{Type: serf.EventMemberJoin, Members: []serf.Member{member("a", "1", "mem:nowhere")}}
	// The driver picks among ready inputs at random: the join first.
	testutil.WaitFor(t, 5*time.Second, "a to be a member", func() bool { return coreMembers(p)["a"] == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	w := lockAsync(ctx, p, "x")
	waitLockState(t, p, "x", mutex.Requesting, 5*time.Second)
	p.events <- serf.MemberEvent{Type: serf.EventMemberFailed, Members: []serf.Member{member("a", "1", "mem:nowhere")}}
	r := recvWithin(t, w, 5*time.Second, "the grant")
	if r.err != nil {
		t.Fatal(r.err)
	}
	if err := p.Unlock(r.grant); err != nil {
		t.Fatal(err)
	}
	if st := tr.Stats(); st.DroppedUnsent == 0 {
		t.Errorf("no message was addressed to the missing member: %+v", st)
	}
}

func TestStatusJSON(t *testing.T) {
	c := newCluster(t, listenTCP)
	c.key = []byte("0123456789abcdef0123456789abcdef")
	ps := c.startN(2)
	g := lockT(t, ps[0], "held", 5*time.Second)
	defer ps[0].Unlock(g)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_ = lockAsync(ctx, ps[1], "held")
	waitDeferred(t, ps[0], "held", "p1", 5*time.Second)

	b, err := ps[0].StatusJSON()
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	keys := func(m map[string]any) []string {
		var k []string
		for key := range m {
			k = append(k, key)
		}
		slices.Sort(k)
		return k
	}
	check := func(what string, got map[string]any, want ...string) {
		t.Helper()
		slices.Sort(want)
		if k := keys(got); !slices.Equal(k, want) {
			t.Errorf("%s keys %v, want %v", what, k, want)
		}
	}
	check("status", st, "node", "incarnation", "lamport", "encrypted", "profile", "members", "locks", "counters", "transport", "quorum", "draining", "suspects")
	if st["node"] != "p0" || st["encrypted"] != true || st["profile"] != "fast" {
		t.Errorf("node/encrypted/profile: %v %v %v", st["node"], st["encrypted"], st["profile"])
	}
	if _, ok := st["incarnation"].(string); !ok {
		t.Errorf("incarnation is %T, want a string", st["incarnation"])
	}
	members := st["members"].([]any)
	if len(members) != 2 {
		t.Fatalf("members %v", members)
	}
	for _, m := range members {
		m := m.(map[string]any)
		check("member", m, "name", "addr", "lock_addr", "status", "lock_connected")
		if m["status"] != "alive" || m["lock_addr"] == "" || m["lock_connected"] != true {
			t.Errorf("member %v", m)
		}
	}
	locks := st["locks"].([]any)
	if len(locks) != 1 {
		t.Fatalf("locks %v", locks)
	}
	l := locks[0].(map[string]any)
	check("lock", l, "name", "state", "holder", "mode", "holders", "token", "waiting", "queued", "awaiting", "slow", "permissions", "revoked")
	if l["name"] != "held" || l["state"] != "holding" || l["holder"] != "p0" || l["token"].(float64) != float64(g.Token) ||
		l["mode"] != ModeExclusive || l["holders"].(float64) != 1 {
		t.Errorf("lock %v (grant %+v)", l, g)
	}
	if q := l["queued"].([]any); len(q) != 1 || q[0] != "p1" {
		t.Errorf("queued %v", q)
	}
	check("counters", st["counters"].(map[string]any), "sent", "received", "dropped", "grants", "refusals", "dropped_by")
	if tr := st["transport"].(map[string]any); tr["encrypted"] != true {
		t.Errorf("transport %v", tr)
	}
	if st1 := ps[1].Status(); len(st1.Locks) != 1 || st1.Locks[0].State != LockRequesting || st1.Locks[0].Holder != "" ||
		!slices.Equal(st1.Locks[0].Awaiting, []string{"p0"}) {
		t.Errorf("p1's lock: %+v", st1.Locks)
	}
	if n := ps[1].Names(); !slices.Equal(n, []string{"held"}) {
		t.Errorf("Names() = %v", n)
	}
}

// After Leave every goroutine the peer started has ended.
func TestLeaveEndsGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	c := newCluster(t, listenTCP)
	ps := c.startN(2)
	g := lockT(t, ps[1], "x", 5*time.Second)
	if err := ps[1].Unlock(g); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, p := range ps {
		if err := p.Leave(ctx); err != nil {
			t.Fatalf("%s: leave: %v", p.Node(), err)
		}
		if err := p.Leave(ctx); err != nil {
			t.Fatalf("%s: second leave: %v", p.Node(), err)
		}
	}
	// memberlist's and net's goroutines end shortly after Shutdown.
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Errorf("%d goroutines after Leave, %d before:\n%s", n, before, buf)
	}
	if _, err := ps[0].TryLock(ctx, "x"); !errors.Is(err, ErrClosed) {
		t.Errorf("TryLock after Leave: %v", err)
	}
}
