package main

import (
	"context"
	"math"
	"time"
)

// schedule is an open-loop timetable: request i (from 0) is due at i/rate after the start.
// Each time is computed from i, never accumulated, so rounding cannot drift over a long run.
type schedule struct {
	rate  float64 // requests per second
	total int64   // requests in the whole phase
}

// newSchedule plans rate requests per second for d: floor(rate·d) requests.
func newSchedule(rate float64, d time.Duration) schedule {
	// The epsilon keeps 1000/s × 60s at 60000 when the product lands a hair below.
	return schedule{rate: rate, total: int64(math.Floor(rate*d.Seconds() + 1e-9))}
}

// offset is when request i is due, measured from the start.
func (s schedule) offset(i int64) time.Duration {
	return time.Duration(math.Round(float64(i) * float64(time.Second) / s.rate))
}

// due is how many requests are due once elapsed has passed: those whose offset is at most
// elapsed, never more than total.
func (s schedule) due(elapsed time.Duration) int64 {
	if elapsed < 0 || s.total == 0 {
		return 0
	}
	n := int64(float64(elapsed)*s.rate/float64(time.Second)) + 1
	// The float estimate can be one off either way; settle it against offset itself so that
	// due and offset always agree.
	for n > 0 && s.offset(n-1) > elapsed {
		n--
	}
	for n < s.total && s.offset(n) <= elapsed {
		n++
	}
	return min(n, s.total)
}

// clock is what the dispatcher needs of time; tests replace it to run the dispatcher without
// sleeping.
type clock interface {
	Now() time.Time
	// Sleep waits d or until ctx ends; it reports whether the full wait happened.
	Sleep(ctx context.Context, d time.Duration) bool
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// timerClock is the real clock with one timer kept for every sleep: the dispatcher sleeps
// between most requests, thousands of times a second, and a new timer each time is garbage.
type timerClock struct {
	t *time.Timer
}

func newTimerClock() *timerClock {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &timerClock{t: t}
}

func (*timerClock) Now() time.Time { return time.Now() }

func (c *timerClock) Sleep(ctx context.Context, d time.Duration) bool {
	c.t.Reset(d) // a stopped or fired timer holds no stale tick to drain (Go 1.23 timers)
	select {
	case <-ctx.Done():
		c.t.Stop()
		return false
	case <-c.t.C:
		return true
	}
}

// dispatch fires every request of s at its scheduled time, from start, and returns how many it
// fired: all of them unless ctx ended first. fire must not block: it is handed each request's
// scheduled time, and when the dispatcher itself falls behind (a descheduled process, a busy
// machine) the overdue requests are fired at once, still carrying the times they were due, so
// latency measured from those times includes the delay. The generator never waits for a
// response, so a slow server cannot slow it down (no coordinated omission).
func dispatch(ctx context.Context, c clock, start time.Time, s schedule, fire func(i int64, at time.Time)) int64 {
	var i int64
	for i < s.total {
		if ctx.Err() != nil {
			return i
		}
		for n := s.due(c.Now().Sub(start)); i < n; i++ {
			fire(i, start.Add(s.offset(i)))
		}
		if i >= s.total {
			break
		}
		if wait := start.Add(s.offset(i)).Sub(c.Now()); wait > 0 && !c.Sleep(ctx, wait) {
			return i
		}
	}
	return i
}
