package console

import (
	"html/template"
	"strconv"
	"strings"
	"time"
)

// The balance chart is an SVG drawn here, in the page, from the account's events: one step
// and one point per change of the balance, each point with the event in its title (ADR 10).
const (
	chartWidth  = 880
	chartHeight = 260
	chartLeft   = 64
	chartRight  = 16
	chartTop    = 16
	chartBottom = 36
)

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
	// Points are the circles, one per change, each with its event as its title. They are
	// written here rather than by a range in the template: on an account of 10,000 events the
	// template's reflection was half the page's time. Every value is a number but the title,
	// which is escaped.
	Points template.HTML
	Count  int
	YTicks []chartTick
	XTicks []chartTick
}

func coord(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }

// drawChart lays the balance after each event that changed it over the events' times.
func drawChart(rows []eventRow) chart {
	c := chart{Width: chartWidth, Height: chartHeight, Left: chartLeft, Right: chartWidth - chartRight,
		Top: chartTop, Bottom: chartHeight - chartBottom}
	var changes []eventRow
	var top int64
	for _, r := range rows {
		if r.Change != 0 {
			changes = append(changes, r)
			top = max(top, r.Balance)
		}
	}
	if len(changes) == 0 {
		return c
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

	var path, points strings.Builder
	points.Grow(len(changes) * 160)
	buf := make([]byte, 0, 64)
	for i, r := range changes {
		px, py := coord(x(r.At)), coord(y(r.Balance))
		if i == 0 {
			path.WriteString("M" + px + " " + py)
		} else {
			path.WriteString("H" + px + "V" + py)
		}
		title := "v" + strconv.FormatInt(r.Version, 10) + " " + r.At.UTC().Format("2006-01-02 15:04:05.000Z") + " " +
			r.Type + " " + signedString(r.Change) + " → " + strconv.FormatInt(r.Balance, 10)
		if r.Counterparty != "" {
			title += " (" + r.Counterparty + ")"
		}
		points.WriteString(`<circle cx="` + px + `" cy="` + py + `" r="3.5" data-version="`)
		buf = strconv.AppendInt(buf[:0], r.Version, 10)
		points.Write(buf)
		points.WriteString(`" data-balance="`)
		buf = strconv.AppendInt(buf[:0], r.Balance, 10)
		points.Write(buf)
		points.WriteString(`"><title>` + template.HTMLEscapeString(title) + "</title></circle>")
	}
	c.Points, c.Count = template.HTML(points.String()), len(changes)
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
