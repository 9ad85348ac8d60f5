package main

import (
	"errors"
	"fmt"
	"io"
	"syscall"
	"testing"
	"time"
)

func msList(vs ...int) []time.Duration {
	out := make([]time.Duration, len(vs))
	for i, v := range vs {
		out[i] = time.Duration(v) * time.Millisecond
	}
	return out
}

func TestPercentileNearestRank(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond // 1..100 ms
	}
	for _, tc := range []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 99, 0},
		{"one value", msList(7), 50, 7 * time.Millisecond},
		{"one value p99", msList(7), 99, 7 * time.Millisecond},
		{"p50 of 1..100", hundred, 50, 50 * time.Millisecond},
		{"p90 of 1..100", hundred, 90, 90 * time.Millisecond},
		{"p99 of 1..100", hundred, 99, 99 * time.Millisecond},
		{"p100 is the max", hundred, 100, 100 * time.Millisecond},
		{"tiny p is the min", hundred, 0.001, 1 * time.Millisecond},
		{"p50 of four is the second", msList(10, 20, 30, 40), 50, 20 * time.Millisecond},
		{"p51 of four is the third", msList(10, 20, 30, 40), 51, 30 * time.Millisecond},
		{"p99 of ten is the max", msList(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 99, 10 * time.Millisecond},
		{"p90 of ten", msList(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 90, 9 * time.Millisecond},
	} {
		if got := percentile(tc.sorted, tc.p); got != tc.want {
			t.Errorf("%s: percentile(p%g) = %s, want %s", tc.name, tc.p, got, tc.want)
		}
	}
}

func TestSummarizeSortsAndSummarizes(t *testing.T) {
	got := summarize(msList(40, 10, 30, 20))
	want := Latency{Count: 4, MeanMs: 25, P50Ms: 20, P90Ms: 40, P99Ms: 40, MaxMs: 40}
	if got != want {
		t.Fatalf("summarize = %+v, want %+v", got, want)
	}
	if got := summarize([]time.Duration{1500 * time.Microsecond}); got.P50Ms != 1.5 {
		t.Fatalf("1.5ms summarized as %g ms", got.P50Ms)
	}
	if got := summarize(nil); got != (Latency{}) {
		t.Fatalf("summarize(nil) = %+v", got)
	}
}

func TestErrKeyMasksNumbers(t *testing.T) {
	a := newErrKey(400, "recipient user42 is unknown (balance 955)")
	b := newErrKey(400, "recipient user7 is unknown (balance 12)")
	if a != b || a.message != "recipient userN is unknown (balance N)" {
		t.Fatalf("keys %+v and %+v, want one masked kind", a, b)
	}
	if newErrKey(500, "x") == newErrKey(400, "x") {
		t.Fatal("different statuses share a key")
	}
	long := newErrKey(400, string(make([]byte, 500)))
	if n := len([]rune(long.message)); n != 121 {
		t.Fatalf("long message kept %d runes, want 120 and an ellipsis", n)
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		op      op
		status  int
		message string
		err     error
		want    outcome
		key     errKey
	}{
		{opInfo, 200, "", nil, outOK, errKey{}},
		{opBuy, 200, "", nil, outOK, errKey{}},
		{opBuy, 400, "not enough coin: balance 5, price 20", nil, outNotEnoughCoin, errKey{}},
		{opSend, 400, "not enough coin: balance 5, transfer 25", nil, outNotEnoughCoin, errKey{}},
		{opSend, 400, "cannot send coins to yourself", nil, outError, errKey{400, "cannot send coins to yourself"}},
		{opInfo, 400, "not enough coin", nil, outError, errKey{400, "not enough coin"}},
		{opBuy, 500, "internal error", nil, outError, errKey{500, "internal error"}},
		{opInfo, 401, "invalid token: expired", nil, outError, errKey{401, "invalid token: expired"}},
		{opInfo, 0, "", fmt.Errorf("dial: %w", syscall.ECONNREFUSED), outError, errKey{0, "connection refused"}},
		{opInfo, 0, "", fmt.Errorf("read: %w", io.ErrUnexpectedEOF), outError, errKey{0, "connection closed"}},
		{opInfo, 0, "", errors.New("something odd 17"), outError, errKey{0, "something odd N"}},
	} {
		o, k := classify(tc.op, tc.status, tc.message, tc.err)
		if o != tc.want || k != tc.key {
			t.Errorf("classify(%v, %d, %q, %v) = %v, %+v; want %v, %+v", tc.op, tc.status, tc.message, tc.err, o, k, tc.want, tc.key)
		}
	}
}

func TestErrorMessage(t *testing.T) {
	for body, want := range map[string]string{
		`{"errors":"not enough coin"}`: "not enough coin",
		``:                             "(empty body)",
		`upstream down`:                "(not a contract error) upstream down",
		`{"errors":""}`:                `(not a contract error) {"errors":""}`,
	} {
		if got := errorMessage([]byte(body)); got != want {
			t.Errorf("errorMessage(%q) = %q, want %q", body, got, want)
		}
	}
}

func TestReportOpsMergesRecorders(t *testing.T) {
	var a, b opRecorder
	a.record(outOK, 10*time.Millisecond, errKey{})
	a.record(outNotEnoughCoin, 20*time.Millisecond, errKey{})
	a.record(outError, 30*time.Millisecond, newErrKey(500, "internal error"))
	b.record(outError, 40*time.Millisecond, newErrKey(400, "bad 1"))
	b.record(outError, 50*time.Millisecond, newErrKey(400, "bad 2"))
	rep := reportOps("all", 2*time.Second, &a, &b)
	if rep.Requests != 5 || rep.OK != 1 || rep.NotEnoughCoin != 1 || rep.Errors != 3 {
		t.Fatalf("counts %+v", rep)
	}
	if rep.RPS != 2.5 {
		t.Fatalf("rps %g, want 5 requests over 2s", rep.RPS)
	}
	if rep.Latency.MaxMs != 50 || rep.Latency.P50Ms != 30 {
		t.Fatalf("latency %+v", rep.Latency)
	}
	want := []ErrorCount{{400, "bad N", 2}, {500, "internal error", 1}}
	if fmt.Sprint(rep.ErrorsBy) != fmt.Sprint(want) {
		t.Fatalf("errors by kind %+v, want %+v (most frequent first)", rep.ErrorsBy, want)
	}
}

func TestVerdict(t *testing.T) {
	ph := func(p99 float64, errRate float64) Phase {
		return Phase{Total: OpReport{Requests: 10_000, Latency: Latency{P99Ms: p99}}, ErrorRate: errRate}
	}
	for _, tc := range []struct {
		name        string
		ph          Phase
		interrupted bool
		held        bool
	}{
		{"within", ph(49.9, 0), false, true},
		{"at the limits", ph(50, 0.0001), false, true},
		{"slow", ph(50.1, 0), false, false},
		{"failing", ph(10, 0.0002), false, false},
		{"interrupted", ph(10, 0), true, false},
		{"nothing answered", Phase{}, false, false},
	} {
		held, why := verdict(tc.ph, 50*time.Millisecond, 0.0001, tc.interrupted)
		if held != tc.held || why == "" {
			t.Errorf("%s: verdict = %v (%q), want %v", tc.name, held, why, tc.held)
		}
	}
}
