package node

import (
	"fmt"
	"testing"
)

func TestMetricsLockLabelsBounded(t *testing.T) {
	m := newLockMetrics()
	for i := range maxLockLabels + 10 {
		want := fmt.Sprintf("l%d", i)
		if i >= maxLockLabels {
			want = otherLock
		}
		if got := m.label(fmt.Sprintf("l%d", i)); got != want {
			t.Fatalf("label of name %d = %q, want %q", i, got, want)
		}
	}
	if got := m.label("l0"); got != "l0" {
		t.Errorf("a known name's label changed: %q", got)
	}
}
