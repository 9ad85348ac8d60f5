package main

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/ledger/ledger/projections"
)

// progressLineEvery is the longest a non-terminal goes without a progress line.
const progressLineEvery = 10 * time.Second

// progress shows how far a long command has come: a bar on a terminal, where a person watches
// it, and elsewhere (a log, a CI job) a plain line at every tenth of the work and at least every
// progressLineEvery. Its report method is the hook seed, audit and projections call; it may be
// called from several goroutines.
type progress struct {
	w        io.Writer
	terminal bool
	what     string // the work, "audit verify"
	unit     string // what is counted, "events"
	every    time.Duration

	mu        sync.Mutex
	bar       *progressbar.ProgressBar
	began     time.Time
	lastLine  time.Time
	lastTenth int64
	done      bool
}

func newProgress(w io.Writer, terminal bool, what, unit string) *progress {
	return &progress{w: w, terminal: terminal, what: what, unit: unit, every: progressLineEvery,
		lastLine: time.Now(), lastTenth: -1}
}

// report shows that done of total units are done; a total of 0 is not known yet.
func (p *progress) report(done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return
	}
	total = max(total, done) // the log may grow past the count taken at the start
	if p.began.IsZero() {
		p.began = time.Now() // the work starts with its first report
	}
	if p.terminal {
		p.draw(done, total)
		return
	}
	tenth := int64(-1)
	if total > 0 {
		tenth = done * 10 / total
	}
	now := time.Now()
	if tenth <= p.lastTenth && now.Sub(p.lastLine) < p.every {
		return
	}
	p.lastTenth, p.lastLine = max(tenth, p.lastTenth), now
	line := fmt.Sprintf("%s: %d %s", p.what, done, p.unit)
	if total > 0 {
		line = fmt.Sprintf("%s: %d of %d %s (%d%%)", p.what, done, total, p.unit, done*100/total)
	}
	// The rate and what is left, once there is enough behind to tell them.
	if elapsed := now.Sub(p.began); elapsed >= time.Second && done > 0 {
		rate := float64(done) / elapsed.Seconds()
		line += fmt.Sprintf(", %.0f %s/s", rate, p.unit)
		if left := time.Duration(float64(total-done) / rate * float64(time.Second)); left >= time.Second {
			line += fmt.Sprintf(", about %s left", left.Round(time.Second))
		}
	}
	fmt.Fprintln(p.w, line)
}

// draw moves the terminal's bar to done of total; the bar comes when there is work to show.
func (p *progress) draw(done, total int64) {
	if p.bar == nil {
		if total == 0 && done == 0 {
			return
		}
		max := total
		if max == 0 {
			max = -1 // a spinner until the total is known
		}
		p.bar = progressbar.NewOptions64(max,
			progressbar.OptionSetWriter(p.w),
			progressbar.OptionSetDescription(p.what),
			progressbar.OptionSetItsString(p.unit),
			progressbar.OptionShowIts(),
			progressbar.OptionShowCount(),
			progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(p.w) }),
		)
	}
	if total > 0 && total != p.bar.GetMax64() {
		p.bar.ChangeMax64(total)
	}
	_ = p.bar.Set64(done)
}

// finish ends the display: a bar left short (the work failed or stopped early) gets its line
// ended, so what is written next starts on a line of its own.
func (p *progress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return
	}
	p.done = true
	if p.bar != nil && !p.bar.IsFinished() {
		_ = p.bar.Exit()
	}
}

// rebuildPhases adapts the progress display to a rebuild, which reports the build's progress and
// then its later phases: each phase gets a line of its own.
func (p *progress) rebuildPhases() func(projections.RebuildProgress) {
	phase := ""
	return func(r projections.RebuildProgress) {
		if r.Phase == "building" {
			p.report(r.Done, r.Total)
			return
		}
		if r.Phase != phase {
			p.finish()
			fmt.Fprintf(p.w, "%s (%v elapsed)\n", r.Phase, r.Elapsed.Round(time.Millisecond))
		}
		phase = r.Phase
	}
}
