package node

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestPrintQuorum: the quorum lines of status, and the forget command
// for a 2-voter cluster that lost one.
func TestPrintQuorum(t *testing.T) {
	doc := func(s string) statusDoc {
		var d statusDoc
		if err := json.Unmarshal([]byte(s), &d); err != nil {
			t.Fatal(err)
		}
		return d
	}
	for _, tc := range []struct {
		name, root, js string
		want, not      []string
	}{
		{"none", "/run/dlockfs", `{"node":"a"}`, []string{"quorum: none (availability over safety"}, []string{"NO MAJORITY"}},
		{"healthy 3", "/run/dlockfs", `{"node":"a","quorum":{"mode":"majority","version":3,"majority":2,"has_majority":true,
			"lease_valid":true,"lease_left_ms":800,"lease":"1s","lock_delay":"2s",
			"voters":[{"name":"a","state":"self"},{"name":"b","state":"alive"},{"name":"c","state":"down"}]}}`,
			[]string{"quorum: majority, voter set v3, 3 voters, majority 2: a self, b alive, c down", "lease: lease valid, 800ms left (lease 1s, lock-delay 2s)"},
			[]string{"NO MAJORITY", "forget"}},
		{"2 voters one down", "/run/dlockfs", `{"node":"a","quorum":{"mode":"majority","version":2,"majority":2,"has_majority":false,
			"lease_valid":false,"lease":"1s","lock_delay":"2s","lapses":1,"revoked":1,
			"voters":[{"name":"a","state":"self"},{"name":"b","state":"silent"}]}}`,
			[]string{"NO MAJORITY", "no lease", "1 lapses, 1 holds revoked", "\n  dlockfs forget --force b\n"}, nil},
		{"2 voters other mount", "/tmp/m/a", `{"node":"a","quorum":{"mode":"majority","majority":2,
			"voters":[{"name":"a","state":"self"},{"name":"b","state":"down"}]}}`,
			[]string{"dlockfs forget --control /tmp/m/a.sock --force b"}, nil},
		{"3 voters two down: no force hint", "/run/dlockfs", `{"node":"a","quorum":{"mode":"majority","majority":2,
			"voters":[{"name":"a","state":"self"},{"name":"b","state":"down"},{"name":"c","state":"down"}]}}`,
			[]string{"NO MAJORITY"}, []string{"forget --force"}},
		{"slow and suspects", "/run/dlockfs", `{"node":"a","locks":[{"name":"x","state":"requesting",
			"slow":[{"name":"m","request":7,"for_ms":2500}]}],
			"suspects":[{"name":"m","lock":"x","request":7,"for_ms":2500},{"name":"h","probe":true,"for_ms":1000}]}`,
			[]string{"slow: m owes an answer to this node's request 7 for x, for 2.5s",
				"suspect: m owes an answer to request 7 for x, for 2.5s",
				"suspect: h left a probe unanswered (another voter reported it), for 1s"}, nil},
		{"no faults", "/run/dlockfs", `{"node":"a","locks":[{"name":"x","state":"held"}]}`, nil, []string{"slow:", "suspect:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			if err := printStatus(&b, tc.root, doc(tc.js)); err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("missing %q in:\n%s", w, b.String())
				}
			}
			for _, w := range tc.not {
				if strings.Contains(b.String(), w) {
					t.Errorf("unexpected %q in:\n%s", w, b.String())
				}
			}
		})
	}
}
