package console

import (
	"html/template"
	"strconv"
	"strings"
	"time"
)

// The balance chart is an SVG drawn here, in the page, from the account's events: one step
// and one point per change of the balance, each point with the event in its title (ADR 10).
// Beyond maxChartPoints changes, the changes that fall in one pixel column share a point.
const (
	chartWidth  = 880
	chartHeight = 260
	chartLeft   = 64
	chartRight  = 16
	chartTop    = 16
	chartBottom = 36
)

// maxChartPoints is the most changes the chart draws one point each. Beyond it a browser
// spends most of a page's time on circles a pixel apart (10,000 of them: about half a second),
// so the chart draws one point per pixel column instead, at most the plot's width.
const maxChartPoints = 2_000

type chartTick struct {
	Pos    string
	Label  string
	Anchor string
}

type chart struct {
	Width, Height int
	Left, Right   int
	Top, Bottom   int
	Path          string
	// Points are the circles, one per change (or per pixel column, see chartPoint), each with
	// its events in its title. They are written here rather than by a range in the template:
	// on an account of 10,000 events the template's reflection was half the page's time.
	// Every value is a number but the title, which is escaped.
	Points template.HTML
	// Count is the number of changes drawn, Drawn the number of points drawing them.
	Count, Drawn int
	YTicks       []chartTick
	XTicks       []chartTick
}

// change is an event that changed the balance, as the chart shows it.
type change struct {
	Version      int64
	At           time.Time
	Type         string
	Amount       int64
	Balance      int64 // after the event
	Counterparty string
}

// chartPoint is the changes one point stands for: one, or every change of one pixel column
// (first to last, in version order). A merged point keeps the lowest and highest balance among
// them besides the last, so the step line through the column covers every balance the account
// had there, and ends where the account did: exact at the chart's resolution.
type chartPoint struct {
	First, Last change
	Count       int
	Min, Max    int64
}

// chartPoints groups changes into points: one each up to maxChartPoints, else one per column
// of the plot's width, the column of a change being col(its time).
func chartPoints(changes []change, col func(time.Time) int) []chartPoint {
	if len(changes) <= maxChartPoints {
		pts := make([]chartPoint, len(changes))
		for i, c := range changes {
			pts[i] = chartPoint{First: c, Last: c, Count: 1, Min: c.Balance, Max: c.Balance}
		}
		return pts
	}
	var pts []chartPoint
	last := -1
	for _, c := range changes {
		if k := col(c.At); k != last || len(pts) == 0 {
			last = k
			pts = append(pts, chartPoint{First: c, Last: c, Count: 1, Min: c.Balance, Max: c.Balance})
			continue
		}
		p := &pts[len(pts)-1]
		p.Last, p.Count = c, p.Count+1
		p.Min, p.Max = min(p.Min, c.Balance), max(p.Max, c.Balance)
	}
	return pts
}

func coord(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }

const titleTime = "2006-01-02 15:04:05.000Z"

// drawChart lays the balance after each change over the changes' times, in version order.
func drawChart(changes []change) chart {
	c := chart{Width: chartWidth, Height: chartHeight, Left: chartLeft, Right: chartWidth - chartRight,
		Top: chartTop, Bottom: chartHeight - chartBottom}
	if len(changes) == 0 {
		return c
	}
	var top int64
	for _, ch := range changes {
		top = max(top, ch.Balance)
	}
	if top <= 0 {
		top = 1
	}
	top = niceCeil(top)
	t0, t1 := changes[0].At, changes[len(changes)-1].At
	span := t1.Sub(t0)
	if span <= 0 {
		span = time.Second
	}
	w, h := float64(c.Right-c.Left), float64(c.Bottom-c.Top)
	x := func(t time.Time) float64 { return float64(c.Left) + w*float64(t.Sub(t0))/float64(span) }
	y := func(b int64) float64 { return float64(c.Bottom) - h*float64(b)/float64(top) }
	col := func(t time.Time) int { return min(int(x(t))-c.Left, c.Right-c.Left-1) }
	pts := chartPoints(changes, col)

	var path, points strings.Builder
	points.Grow(len(pts) * 200)
	// vertical moves the line to a balance, unless it is there already.
	var at string
	vertical := func(b int64) {
		if py := coord(y(b)); py != at {
			path.WriteString("V" + py)
			at = py
		}
	}
	buf := make([]byte, 0, 64)
	attr := func(name string, n int64) {
		points.WriteString(name + `="`)
		buf = strconv.AppendInt(buf[:0], n, 10)
		points.Write(buf)
		points.WriteString(`"`)
	}
	for i, p := range pts {
		px := coord(x(p.First.At))
		if i == 0 {
			at = coord(y(p.First.Balance))
			path.WriteString("M" + px + " " + at)
		} else {
			path.WriteString("H" + px)
			vertical(p.First.Balance)
		}
		if p.Count > 1 {
			vertical(p.Min)
			vertical(p.Max)
			vertical(p.Last.Balance)
		}
		var title string
		if p.Count == 1 {
			r := p.Last
			title = "v" + strconv.FormatInt(r.Version, 10) + " " + r.At.UTC().Format(titleTime) + " " +
				r.Type + " " + signedString(r.Amount) + " → " + strconv.FormatInt(r.Balance, 10)
			if r.Counterparty != "" {
				title += " (" + r.Counterparty + ")"
			}
		} else {
			title = "v" + strconv.FormatInt(p.First.Version, 10) + "–v" + strconv.FormatInt(p.Last.Version, 10) + ": " +
				strconv.Itoa(p.Count) + " changes, " + p.First.At.UTC().Format(titleTime) + " to " +
				p.Last.At.UTC().Format(titleTime) + "; balance between " + strconv.FormatInt(p.Min, 10) + " and " +
				strconv.FormatInt(p.Max, 10) + " → " + strconv.FormatInt(p.Last.Balance, 10)
		}
		points.WriteString(`<circle cx="` + coord(x(p.Last.At)) + `" cy="` + coord(y(p.Last.Balance)) + `" r="3.5" `)
		attr("data-version", p.Last.Version)
		points.WriteString(" ")
		attr("data-balance", p.Last.Balance)
		if p.Count > 1 {
			points.WriteString(" ")
			attr("data-first-version", p.First.Version)
			points.WriteString(" ")
			attr("data-changes", int64(p.Count))
			points.WriteString(" ")
			attr("data-min", p.Min)
			points.WriteString(" ")
			attr("data-max", p.Max)
		}
		points.WriteString("><title>" + template.HTMLEscapeString(title) + "</title></circle>")
	}
	c.Points, c.Count, c.Drawn = template.HTML(points.String()), len(changes), len(pts)
	c.Path = path.String()
	for i := 0; i <= 4; i++ {
		v := top * int64(i) / 4
		c.YTicks = append(c.YTicks, chartTick{Pos: coord(y(v)), Label: strconv.FormatInt(v, 10)})
	}
	layout := "2006-01-02 15:04"
	switch {
	case span < time.Minute:
		layout = "15:04:05.000"
	case span < 24*time.Hour:
		layout = "01-02 15:04:05"
	}
	for i := 0; i <= 3; i++ {
		t := t0.Add(span * time.Duration(i) / 3)
		anchor := "middle"
		switch i {
		case 0:
			anchor = "start"
		case 3:
			anchor = "end"
		}
		c.XTicks = append(c.XTicks, chartTick{Pos: coord(x(t)), Label: t.UTC().Format(layout), Anchor: anchor})
	}
	return c
}

func signedString(n int64) string {
	if n > 0 {
		return "+" + strconv.FormatInt(n, 10)
	}
	return strconv.FormatInt(n, 10)
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten, for the axis's top.
func niceCeil(v int64) int64 {
	for p := int64(1); ; p *= 10 {
		for _, m := range []int64{1, 2, 5} {
			if m*p >= v {
				return m * p
			}
		}
		if p > 1<<58 {
			return v
		}
	}
}
