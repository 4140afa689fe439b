package bench

import (
	"slices"
	"testing"
)

// TestParseSweep: peer counts from 1 to MaxPeers, comma-separated, at most
// sweepMaxPoints of them; anything else is a usage error.
func TestParseSweep(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []int
	}{
		{"3,8,16,32", []int{3, 8, 16, 32}},
		{"3", []int{3}},
		{" 4 , 3", []int{4, 3}},
	} {
		got, err := parseSweep(c.in)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("parseSweep(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	for _, in := range []string{"", "0", "33", "3,,4", "x", "1,2,3,4,5,6,7,8,9"} {
		if got, err := parseSweep(in); err == nil {
			t.Errorf("parseSweep(%q) = %v, want an error", in, got)
		}
	}
}

// TestSweepFlags: --sweep sets short defaults unless --ops or --seconds
// are given; --plot needs --sweep; --fast-path is refused with it.
func TestSweepFlags(t *testing.T) {
	o, err := benchFlags([]string{"--sweep", "3,4"})
	if err != nil || o.ops != sweepDefaultOps || o.seconds != sweepDefaultSeconds {
		t.Errorf("--sweep 3,4: ops %d seconds %v err %v", o.ops, o.seconds, err)
	}
	o, err = benchFlags([]string{"--sweep", "3", "--ops", "50", "--seconds", "2", "--plot", "/tmp/x.svg"})
	if err != nil || o.ops != 50 || o.seconds != 2 || o.plot != "/tmp/x.svg" {
		t.Errorf("--sweep with --ops 50 --seconds 2: %+v, %v", o, err)
	}
	for _, args := range [][]string{{"--plot", "x.svg"}, {"--sweep", "3", "--fast-path"}} {
		if _, err := benchFlags(args); err == nil {
			t.Errorf("%q: want a usage error", args)
		}
	}
}
