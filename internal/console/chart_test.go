package console

import (
	"fmt"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// point is a circle of the chart as the page gives it to a reader.
type point struct {
	version, balance, first, changes, min, max int64
	title                                      string
}

var (
	circleRE = regexp.MustCompile(`<circle [^>]*>.*?</circle>`)
	attrRE   = regexp.MustCompile(`data-([a-z-]+)="(-?\d+)"`)
	titleRE  = regexp.MustCompile(`<title>(.*)</title>`)
)

func pointsOf(t *testing.T, c chart) []point {
	t.Helper()
	var out []point
	for _, circle := range circleRE.FindAllString(string(c.Points), -1) {
		p := point{changes: 1}
		for _, m := range attrRE.FindAllStringSubmatch(circle, -1) {
			n, _ := strconv.ParseInt(m[2], 10, 64)
			switch m[1] {
			case "version":
				p.version = n
			case "balance":
				p.balance = n
			case "first-version":
				p.first = n
			case "changes":
				p.changes = n
			case "min":
				p.min = n
			case "max":
				p.max = n
			}
		}
		if p.changes == 1 {
			p.first, p.min, p.max = p.version, p.balance, p.balance
		}
		p.title = titleRE.FindStringSubmatch(circle)[1]
		out = append(out, p)
	}
	return out
}

// changesOf makes n changes of a balance that never goes below zero, over times that come in
// bursts (many changes in one millisecond) and gaps, as a busy account's do.
func changesOf(n int, seed uint64) []change {
	rng := rand.New(rand.NewPCG(seed, 1))
	at := time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)
	out := make([]change, n)
	var balance int64
	for i := range out {
		amount := rng.Int64N(200) - 90
		if balance+amount < 0 || amount == 0 {
			amount = 1 + rng.Int64N(50)
		}
		balance += amount
		if rng.IntN(10) == 0 {
			at = at.Add(time.Duration(rng.IntN(5000)) * time.Millisecond)
		}
		out[i] = change{Version: int64(2*i + 2), At: at, Type: "CoinsReceived", Amount: amount, Balance: balance,
			Counterparty: "peer"}
	}
	return out
}

// TestChartOnePointPerChange: up to maxChartPoints changes, each has its point, its version,
// balance and event in its title.
func TestChartOnePointPerChange(t *testing.T) {
	for _, n := range []int{1, 5, maxChartPoints} {
		changes := changesOf(n, uint64(n))
		c := drawChart(changes)
		pts := pointsOf(t, c)
		if len(pts) != n || c.Count != n || c.Drawn != n {
			t.Fatalf("%d changes: %d points (count %d, drawn %d)", n, len(pts), c.Count, c.Drawn)
		}
		for i, p := range pts {
			ch := changes[i]
			if p.version != ch.Version || p.balance != ch.Balance || p.changes != 1 {
				t.Fatalf("point %d is %+v, its change %+v", i, p, ch)
			}
			if want := fmt.Sprintf("v%d %s CoinsReceived %s → %d (peer)", ch.Version, ch.At.Format(titleTime),
				signedString(ch.Amount), ch.Balance); p.title != want {
				t.Fatalf("point %d's title %q, want %q", i, p.title, want)
			}
		}
	}
}

// TestChartMergedPointsStayTruthful: beyond maxChartPoints changes the chart draws one point
// per pixel column at most, and every change is still in it: the points cover the changes in
// order, each with the true lowest, highest and last balance of its changes, the last at the
// account's balance; the line passes through every one of those balances and ends at the last.
func TestChartMergedPointsStayTruthful(t *testing.T) {
	for _, n := range []int{maxChartPoints + 1, 10_000, 50_000} {
		changes := changesOf(n, uint64(n))
		c := drawChart(changes)
		pts := pointsOf(t, c)
		if width := chartWidth - chartLeft - chartRight; len(pts) > width || c.Drawn != len(pts) || c.Count != n {
			t.Fatalf("%d changes: %d points (drawn %d, count %d), want at most one per pixel column (%d)",
				n, len(pts), c.Drawn, c.Count, width)
		}
		next := 0 // the index of the first change the next point must stand for
		for i, p := range pts {
			if next >= n || p.first != changes[next].Version {
				t.Fatalf("%d changes: point %d starts at v%d, want the change after the previous point's", n, i, p.first)
			}
			lo, hi := changes[next].Balance, changes[next].Balance
			k := next
			for ; k < n && changes[k].Version <= p.version; k++ {
				lo, hi = min(lo, changes[k].Balance), max(hi, changes[k].Balance)
			}
			last := changes[k-1]
			if last.Version != p.version || last.Balance != p.balance || int64(k-next) != p.changes || lo != p.min || hi != p.max {
				t.Fatalf("%d changes: point %d is %+v; its changes v%d..v%d: %d of them, min %d, max %d, last %d",
					n, i, p, p.first, last.Version, k-next, lo, hi, last.Balance)
			}
			if p.changes > 1 && !strings.HasPrefix(p.title, fmt.Sprintf("v%d–v%d: %d changes, ", p.first, p.version, p.changes)) {
				t.Fatalf("a merged point's title %q does not name its events", p.title)
			}
			next = k
		}
		if next != n {
			t.Fatalf("%d changes: the points stand for %d", n, next)
		}
		if final := changes[n-1].Balance; pts[len(pts)-1].balance != final {
			t.Fatalf("the last point's balance %d, the account's %d", pts[len(pts)-1].balance, final)
		}
		ys := pathLevels(t, c.Path)
		for i, p := range pts {
			for _, b := range []int64{p.min, p.max, p.balance} {
				if !ys[level(c, changes, b)] {
					t.Fatalf("%d changes: the line never reaches point %d's balance %d", n, i, b)
				}
			}
		}
		if end := c.Path[strings.LastIndexAny(c.Path, "MV")+1:]; !strings.HasSuffix(end, level(c, changes, changes[n-1].Balance)) {
			t.Fatalf("the line ends at %q, the last balance is at %s", end, level(c, changes, changes[n-1].Balance))
		}
	}
}

// level is the y coordinate the chart draws balance b at.
func level(c chart, changes []change, b int64) string {
	var top int64 = 1
	for _, ch := range changes {
		top = max(top, ch.Balance)
	}
	top = niceCeil(top)
	return coord(float64(c.Bottom) - float64(c.Bottom-c.Top)*float64(b)/float64(top))
}

// pathLevels returns every y the path's line reaches.
func pathLevels(t *testing.T, path string) map[string]bool {
	t.Helper()
	ys := make(map[string]bool)
	for _, cmd := range regexp.MustCompile(`[MHV][^MHV]*`).FindAllString(path, -1) {
		switch cmd[0] {
		case 'M':
			f := strings.Fields(cmd[1:])
			if len(f) != 2 {
				t.Fatalf("path command %q", cmd)
			}
			ys[f[1]] = true
		case 'V':
			ys[cmd[1:]] = true
		}
	}
	return ys
}
