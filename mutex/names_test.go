package mutex

import (
	"strings"
	"testing"
)

func TestValidNodeName(t *testing.T) {
	for _, n := range []string{"", "a/b", "a b", "a\tb", "a\nb", "a\x00", strings.Repeat("n", MaxNameLen+1)} {
		if ValidNodeName(n) == nil {
			t.Errorf("ValidNodeName(%q) = nil, want an error", n)
		}
	}
	for _, n := range []string{"a", "node-1.example", "n_2:x", strings.Repeat("n", MaxNameLen)} {
		if err := ValidNodeName(n); err != nil {
			t.Errorf("ValidNodeName(%q) = %v, want nil", n, err)
		}
	}
}
