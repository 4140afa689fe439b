package bench

import (
	"bytes"
	"fmt"
	"html"
	"math"
)

// plotSeries is one line of a plot panel.
type plotSeries struct {
	name   string
	color  string
	dashed bool
	ys     []float64
}

// Plot geometry (SVG user units).
const (
	plotPanelW = 360
	plotPanelH = 260
	plotMargin = 50
)

// sweepSVG draws the sweep: uncontended latency (with the linear bound),
// contended acquisitions/s, and memory per peer, against the peers.
func sweepSVG(rep *SweepReport) []byte {
	xs := make([]float64, len(rep.Points))
	var p50, p99, bound, cont, rss, msgs []float64
	for i, p := range rep.Points {
		xs[i] = float64(p.Peers)
		p50 = append(p50, p.Uncontended.P50us)
		p99 = append(p99, p.Uncontended.P99us)
		bound = append(bound, p.LinearBoundUs)
		cont = append(cont, p.ContendedPerSec)
		rss = append(rss, p.RSSPerPeerKiB)
		msgs = append(msgs, p.MsgsPerAcq)
	}
	panels := []struct {
		title, unit string
		series      []plotSeries
	}{
		{"uncontended open+close", "us", []plotSeries{
			{"p50", "#1f77b4", false, p50}, {"p99", "#ff7f0e", false, p99}, {"linear bound", "#888888", true, bound}}},
		{"contended acquisitions/s", "/s", []plotSeries{{"acquisitions/s", "#2ca02c", false, cont}}},
		{"per peer", "KiB, msgs", []plotSeries{{"RSS KiB", "#d62728", false, rss}, {"msgs/acq x100", "#9467bd", true, scaled(msgs, 100)}}},
	}
	var b bytes.Buffer
	w := len(panels)*(plotPanelW+plotMargin) + plotMargin
	h := plotPanelH + 2*plotMargin + 20
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n", w, h, w, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
	fmt.Fprintf(&b, `<text x="%d" y="18" font-size="14">dlockfs bench --sweep (quorum %s, %d CPUs): against the number of peers</text>`+"\n",
		plotMargin, html.EscapeString(rep.Quorum), rep.CPUs)
	for i, p := range panels {
		plotPanel(&b, float64(plotMargin+i*(plotPanelW+plotMargin)), float64(plotMargin), p.title, p.unit, xs, p.series)
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}

// scaled is ys times k.
func scaled(ys []float64, k float64) []float64 {
	out := make([]float64, len(ys))
	for i, y := range ys {
		out[i] = y * k
	}
	return out
}

// plotPanel draws one panel with its axes at (x0, y0).
func plotPanel(b *bytes.Buffer, x0, y0 float64, title, unit string, xs []float64, series []plotSeries) {
	xmin, xmax := 0.0, 1.0
	for _, x := range xs {
		xmax = math.Max(xmax, x)
	}
	ymax := 1.0
	for _, s := range series {
		for _, y := range s.ys {
			if !math.IsNaN(y) && !math.IsInf(y, 0) {
				ymax = math.Max(ymax, y)
			}
		}
	}
	ymax *= 1.1
	px := func(x float64) float64 { return x0 + (x-xmin)/(xmax-xmin)*plotPanelW }
	py := func(y float64) float64 { return y0 + plotPanelH - y/ymax*plotPanelH }
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" font-size="12">%s (%s)</text>`+"\n", x0, y0-8, html.EscapeString(title), html.EscapeString(unit))
	fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%d" height="%d" fill="none" stroke="#000"/>`+"\n", x0, y0, plotPanelW, plotPanelH)
	for k := 0; k <= 4; k++ {
		y := ymax * float64(k) / 4
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", x0, py(y), x0+plotPanelW, py(y))
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end">%.0f</text>`+"\n", x0-3, py(y)+4, y)
	}
	for _, x := range xs {
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%.0f</text>`+"\n", px(x), y0+plotPanelH+14, x)
	}
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">peers</text>`+"\n", x0+plotPanelW/2, y0+plotPanelH+28)
	for i, s := range series {
		var pts bytes.Buffer
		for j, y := range s.ys {
			if j < len(xs) {
				fmt.Fprintf(&pts, "%.1f,%.1f ", px(xs[j]), py(y))
			}
		}
		dash := ""
		if s.dashed {
			dash = ` stroke-dasharray="5,4"`
		}
		fmt.Fprintf(b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"%s/>`+"\n", bytes.TrimSpace(pts.Bytes()), s.color, dash)
		for j, y := range s.ys {
			if j < len(xs) {
				fmt.Fprintf(b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", px(xs[j]), py(y), s.color)
			}
		}
		ly := y0 + 14 + float64(i)*14
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"%s/>`+"\n", x0+8, ly-4, x0+28, ly-4, s.color, dash)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f">%s</text>`+"\n", x0+32, ly, html.EscapeString(s.name))
	}
}
