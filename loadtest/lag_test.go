package main

import (
	"testing"
	"time"
)

func TestLagPollWait(t *testing.T) {
	for _, tc := range []struct{ lag, want time.Duration }{
		{0, time.Millisecond},
		{5 * time.Millisecond, time.Millisecond},
		{30 * time.Millisecond, 3 * time.Millisecond},
		{200 * time.Millisecond, 20 * time.Millisecond},
		{10 * time.Second, 50 * time.Millisecond},
	} {
		if got := lagPollWait(tc.lag); got != tc.want {
			t.Errorf("lagPollWait(%s) = %s, want %s", tc.lag, got, tc.want)
		}
	}
}
