package localcluster

import "testing"

func TestPercentile(t *testing.T) {
	ten := func() []float64 { return []float64{10, 9, 8, 7, 6, 5, 4, 3, 2, 1} }
	for _, tt := range []struct {
		xs   []float64
		p    float64
		want float64
	}{
		{nil, 50, 0},
		{[]float64{7}, 99, 7},
		{ten(), 50, 5},
		{ten(), 90, 9},
		{ten(), 91, 10},
		{ten(), 99, 10},
		{ten(), 100, 10},
		{ten(), 1, 1},
		{[]float64{3, 1, 2}, 50, 2},
	} {
		if got := Percentile(tt.xs, tt.p); got != tt.want {
			t.Errorf("Percentile(%v, %v) = %v, want %v", tt.xs, tt.p, got, tt.want)
		}
	}
}
