package main

import (
	"context"
	"testing"
	"time"
)

func TestScheduleTotal(t *testing.T) {
	for _, tc := range []struct {
		rate float64
		d    time.Duration
		want int64
	}{
		{1000, time.Minute, 60_000},
		{50, 10 * time.Second, 500},
		{0.5, 3 * time.Second, 1},
		{3, 100 * time.Millisecond, 0},
		{333.3, 3 * time.Second, 999},
		{7, 1500 * time.Millisecond, 10},
	} {
		if got := newSchedule(tc.rate, tc.d).total; got != tc.want {
			t.Errorf("newSchedule(%g, %s).total = %d, want %d", tc.rate, tc.d, got, tc.want)
		}
	}
}

// TestScheduleOffsetsDoNotDrift: the i-th time is i/rate exactly (to the nanosecond), even
// deep into a long run, because it is computed from i and not accumulated.
func TestScheduleOffsetsDoNotDrift(t *testing.T) {
	s := newSchedule(1000, time.Hour)
	for _, i := range []int64{0, 1, 999, 1000, 59_999, 3_599_999} {
		if got, want := s.offset(i), time.Duration(i)*time.Millisecond; got != want {
			t.Errorf("offset(%d) = %s, want %s", i, got, want)
		}
	}
	s = newSchedule(3, time.Hour)
	if got, want := s.offset(3*3600-1), time.Hour-time.Second/3; got-want > 1 || want-got > 1 {
		t.Errorf("offset of the last request at 3/s = %s, want %s", got, want)
	}
}

// TestScheduleDueAgreesWithOffset: request i is due exactly from offset(i) on, for rates that
// do and do not divide a second evenly.
func TestScheduleDueAgreesWithOffset(t *testing.T) {
	for _, rate := range []float64{1, 3, 7, 333.3, 1000, 1234.5, 20_000} {
		s := newSchedule(rate, 2*time.Second)
		if got := s.due(-time.Nanosecond); got != 0 {
			t.Errorf("rate %g: due before the start = %d", rate, got)
		}
		for i := int64(0); i < s.total; i++ {
			at := s.offset(i)
			if got := s.due(at); got != i+1 {
				t.Fatalf("rate %g: due(offset(%d)=%s) = %d, want %d", rate, i, at, got, i+1)
			}
			if got := s.due(at - 1); got != i {
				t.Fatalf("rate %g: due(offset(%d)-1ns) = %d, want %d", rate, i, got, i)
			}
		}
		if got := s.due(time.Hour); got != s.total {
			t.Errorf("rate %g: due long after the end = %d, want total %d", rate, got, s.total)
		}
	}
}

// fakeClock advances only when the dispatcher sleeps; late, when set, makes some sleeps
// overrun the way a descheduled process's do.
type fakeClock struct {
	now    time.Time
	sleeps int
	late   func(sleep int) time.Duration
}

func (c *fakeClock) Now() time.Time { return c.now }

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) bool {
	c.sleeps++
	c.now = c.now.Add(d)
	if c.late != nil {
		c.now = c.now.Add(c.late(c.sleeps))
	}
	return ctx.Err() == nil
}

type fired struct {
	i      int64
	at, on time.Time // scheduled time; clock time when fired
}

func runDispatch(t *testing.T, ctx context.Context, c *fakeClock, s schedule) ([]fired, int64) {
	t.Helper()
	start := c.now
	var got []fired
	n := dispatch(ctx, c, start, s, func(i int64, at time.Time) {
		got = append(got, fired{i: i, at: at, on: c.now})
	})
	return got, n
}

func TestDispatchFiresEveryRequestOnTime(t *testing.T) {
	s := newSchedule(250, 2*time.Second)
	c := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	start := c.now
	got, n := runDispatch(t, context.Background(), c, s)
	if n != s.total || int64(len(got)) != s.total {
		t.Fatalf("fired %d (returned %d), want %d", len(got), n, s.total)
	}
	for k, f := range got {
		if f.i != int64(k) {
			t.Fatalf("request %d fired as %d: out of order", k, f.i)
		}
		if want := start.Add(s.offset(f.i)); !f.at.Equal(want) {
			t.Fatalf("request %d carries %s, want its scheduled %s", f.i, f.at, want)
		}
		if f.on.Before(f.at) {
			t.Fatalf("request %d fired at %s, before it was due at %s", f.i, f.on, f.at)
		}
		if !f.on.Equal(f.at) {
			t.Fatalf("request %d fired at %s though the clock never overran; due %s", f.i, f.on, f.at)
		}
	}
}

// TestDispatchCatchesUpWithoutMovingTheSchedule: when the dispatcher wakes late, the overdue
// requests go out at once and keep their scheduled times, so the delay shows in latency, and
// the schedule after the stall is unchanged (no coordinated omission).
func TestDispatchCatchesUpWithoutMovingTheSchedule(t *testing.T) {
	s := newSchedule(100, time.Second) // one every 10ms
	c := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	start := c.now
	c.late = func(sleep int) time.Duration {
		if sleep == 5 {
			return 95 * time.Millisecond
		}
		return 0
	}
	got, n := runDispatch(t, context.Background(), c, s)
	if n != s.total || int64(len(got)) != s.total {
		t.Fatalf("fired %d (returned %d), want all %d", len(got), n, s.total)
	}
	var burst int
	for _, f := range got {
		if want := start.Add(s.offset(f.i)); !f.at.Equal(want) {
			t.Fatalf("request %d carries %s, want its scheduled %s", f.i, f.at, want)
		}
		if f.on.Before(f.at) {
			t.Fatalf("request %d fired before it was due", f.i)
		}
		if f.on.After(f.at) {
			burst++
		}
	}
	// The fifth sleep was for request 5 (due at 50ms) and woke at 145ms: requests 5..14 (due
	// 50..140ms) fire then, late; from 15 on, requests fire on time again.
	if burst != 10 {
		t.Fatalf("%d requests fired late, want the 10 that fell due during the stall", burst)
	}
	if last := got[len(got)-1]; !last.on.Equal(last.at) {
		t.Fatalf("the schedule moved: last request fired at %s, due %s", last.on, last.at)
	}
}

func TestDispatchStopsWhenCanceled(t *testing.T) {
	s := newSchedule(100, time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	c := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	c.late = func(sleep int) time.Duration {
		if sleep == 10 {
			cancel()
		}
		return 0
	}
	got, n := runDispatch(t, ctx, c, s)
	if n != int64(len(got)) || n != 10 {
		t.Fatalf("fired %d (returned %d) after a cancel during the 10th wait, want 10", len(got), n)
	}
}

// TestTimerClock: the one timer serves sleep after sleep, and an interrupted sleep leaves
// nothing behind that would cut the next one short.
func TestTimerClock(t *testing.T) {
	c := newTimerClock()
	ctx := context.Background()
	for range 3 {
		start := time.Now()
		if !c.Sleep(ctx, 2*time.Millisecond) {
			t.Fatal("an uninterrupted sleep reported an interrupt")
		}
		if slept := time.Since(start); slept < 2*time.Millisecond {
			t.Fatalf("slept %s, want at least 2ms", slept)
		}
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if c.Sleep(cancelled, time.Hour) {
		t.Fatal("a sleep under an ended context reported the full wait")
	}
	start := time.Now()
	if !c.Sleep(ctx, 5*time.Millisecond) || time.Since(start) < 5*time.Millisecond {
		t.Fatalf("the sleep after an interrupted one lasted %s, want at least 5ms", time.Since(start))
	}
}
