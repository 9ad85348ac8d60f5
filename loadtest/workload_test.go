package main

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestOpForBoundaries(t *testing.T) {
	for _, tc := range []struct {
		x    float64
		want op
	}{
		{0, opInfo},
		{0.7499999, opInfo},
		{0.75, opBuy},
		{0.8999999, opBuy},
		{0.90, opSend},
		{0.9999999, opSend},
	} {
		if got := opFor(tc.x); got != tc.want {
			t.Errorf("opFor(%g) = %v, want %v", tc.x, got, tc.want)
		}
	}
}

// draw takes n requests from w with a fixed seed, so the counts below are the same every run.
func draw(w workload, n int) []request {
	r := rand.New(rand.NewPCG(1, 2))
	out := make([]request, n)
	for i := range out {
		out[i] = w.next(r)
	}
	return out
}

func near(got, want, tolerance float64) bool { return math.Abs(got-want) <= tolerance }

func TestWorkloadMix(t *testing.T) {
	items := []string{"cup", "book", "pen", "socks", "wallet"}
	w := workload{users: 1000, items: items}
	const n = 200_000
	reqs := draw(w, n)
	var count [numOps]int
	amounts := map[int64]int{}
	bought := map[string]int{}
	perUser := make([]int, w.users)
	for _, q := range reqs {
		count[q.op]++
		if q.user < 0 || q.user >= w.users {
			t.Fatalf("user %d out of range", q.user)
		}
		perUser[q.user]++
		switch q.op {
		case opBuy:
			if !slices.Contains(items, q.item) {
				t.Fatalf("bought %q, not one of %v", q.item, items)
			}
			bought[q.item]++
		case opSend:
			if q.to == q.user || q.to < 0 || q.to >= w.users {
				t.Fatalf("sendCoin from %d to %d", q.user, q.to)
			}
			if q.amount < 1 || q.amount > maxTransfer {
				t.Fatalf("sendCoin amount %d outside 1..%d", q.amount, maxTransfer)
			}
			amounts[q.amount]++
		}
	}
	for o, want := range map[op]float64{opInfo: 0.75, opBuy: 0.15, opSend: 0.10} {
		if got := float64(count[o]) / n; !near(got, want, 0.01) {
			t.Errorf("%v share %.4f, want %.2f", o, got, want)
		}
	}
	if len(amounts) != maxTransfer {
		t.Errorf("%d distinct amounts sent, want all of 1..%d", len(amounts), maxTransfer)
	}
	if len(bought) != len(items) {
		t.Errorf("items bought %v, want every one of %v", bought, items)
	}
	// Uniform employees: nobody near a hot account's share.
	if m := slices.Max(perUser); float64(m)/n > 0.01 {
		t.Errorf("the busiest employee made %d of %d requests in a uniform mix", m, n)
	}
}

func TestWorkloadHotAccount(t *testing.T) {
	w := workload{users: 1000, hotShare: 0.10, items: []string{"pen"}}
	const n = 200_000
	var hot int
	others := map[int]bool{}
	for _, q := range draw(w, n) {
		if q.user == 0 {
			hot++
		} else {
			others[q.user] = true
		}
		if q.op == opSend && q.to == q.user {
			t.Fatalf("sendCoin to oneself: %+v", q)
		}
	}
	if got := float64(hot) / n; !near(got, 0.10, 0.005) {
		t.Errorf("hot employee made %.4f of requests, want 0.10", got)
	}
	if len(others) != w.users-1 {
		t.Errorf("%d other employees made requests, want all %d", len(others), w.users-1)
	}
}

func TestWorkloadIsReproducible(t *testing.T) {
	w := workload{users: 50, items: []string{"cup", "pen"}}
	if a, b := draw(w, 1000), draw(w, 1000); !slices.Equal(a, b) {
		t.Fatal("the same seed drew different requests")
	}
}

func TestPickOtherCoversEveryoneElse(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, not := range []int{0, 2, 4} {
		seen := map[int]bool{}
		for range 1000 {
			j := pickOther(r, 5, not)
			if j == not || j < 0 || j >= 5 {
				t.Fatalf("pickOther(5, %d) = %d", not, j)
			}
			seen[j] = true
		}
		if len(seen) != 4 {
			t.Errorf("pickOther(5, %d) drew %v, want the four others", not, seen)
		}
	}
}

func TestWorkloadValidate(t *testing.T) {
	for _, w := range []workload{
		{users: 1, items: []string{"pen"}},
		{users: 10, hotShare: 1, items: []string{"pen"}},
		{users: 10, hotShare: -0.1, items: []string{"pen"}},
		{users: 10},
	} {
		if err := w.validate(); err == nil {
			t.Errorf("%+v validated", w)
		}
	}
	if err := (workload{users: 2, items: []string{"pen"}}).validate(); err != nil {
		t.Errorf("smallest workload: %v", err)
	}
}
