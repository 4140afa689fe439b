package peer

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/dlockfs/dlockfs/mutex"
)

// TestMisbehaveSwitch: in a release build (no dlockfs_faults tag) the
// environment cannot make a peer misbehave: every message is sent as the
// core made it, whatever DLOCKFS_FAULT says. Under the tag, "mute" drops
// the answers while the DLOCKFS_FAULT_UNTIL file exists, and none once it
// is removed.
func TestMisbehaveSwitch(t *testing.T) {
	msgs := func() []mutex.Message {
		return []mutex.Message{
			{Type: mutex.MsgRequest, To: "b", Lock: "x", ReqTime: 3},
			{Type: mutex.MsgReply, To: "b", Lock: "x", ReqTime: 2},
			{Type: mutex.MsgDeferred, To: "c", Lock: "x", ReqTime: 4},
			{Type: mutex.MsgProbe, To: "c", Try: true},
		}
	}
	until := filepath.Join(t.TempDir(), "mute")
	if err := os.WriteFile(until, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DLOCKFS_FAULT", "mute")
	t.Setenv("DLOCKFS_FAULT_UNTIL", until)
	p := &Peer{}
	got := p.misbehave(msgs())
	if !faultsBuild {
		if !reflect.DeepEqual(got, msgs()) {
			t.Fatalf("release build: DLOCKFS_FAULT=mute changed the messages: %v", got)
		}
		for _, f := range []string{"stamplow", "stamphigh"} {
			t.Setenv("DLOCKFS_FAULT", f)
			if got := p.misbehave(msgs()); !reflect.DeepEqual(got, msgs()) {
				t.Fatalf("release build: DLOCKFS_FAULT=%s changed the messages: %v", f, got)
			}
		}
		return
	}
	if want := msgs()[:1]; !reflect.DeepEqual(got, want) {
		t.Fatalf("mute while %s exists: sent %v, want only %v", until, got, want)
	}
	if err := os.Remove(until); err != nil {
		t.Fatal(err)
	}
	if got := p.misbehave(msgs()); !reflect.DeepEqual(got, msgs()) {
		t.Fatalf("mute after %s was removed: sent %v, want every message", until, got)
	}
}
