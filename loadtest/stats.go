package main

import (
	"math"
	"regexp"
	"slices"
	"sort"
	"sync"
	"time"
)

// percentile returns the p-th percentile (0 < p <= 100) of sorted by the nearest-rank method:
// the smallest value that at least p% of the values are less than or equal to. It is always one
// of the observed values, so a p99 is a latency some request really had.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// Latency is a distribution summary in milliseconds.
type Latency struct {
	Count  int     `json:"count"`
	MeanMs float64 `json:"mean_ms"`
	P50Ms  float64 `json:"p50_ms"`
	P90Ms  float64 `json:"p90_ms"`
	P99Ms  float64 `json:"p99_ms"`
	MaxMs  float64 `json:"max_ms"`
}

// summarize sorts ds in place and summarizes it.
func summarize(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	slices.Sort(ds)
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return Latency{
		Count:  len(ds),
		MeanMs: ms(sum / time.Duration(len(ds))),
		P50Ms:  ms(percentile(ds, 50)),
		P90Ms:  ms(percentile(ds, 90)),
		P99Ms:  ms(percentile(ds, 99)),
		MaxMs:  ms(ds[len(ds)-1]),
	}
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/float64(time.Microsecond)) / 1000 }

// errKey groups failures: the HTTP status (0 when no response came) and the message with its
// numbers masked, so that "balance 955" and "balance 12" count as one kind.
type errKey struct {
	status  int
	message string
}

var digits = regexp.MustCompile(`[0-9]+`)

func newErrKey(status int, message string) errKey {
	m := digits.ReplaceAllString(message, "N")
	if r := []rune(m); len(r) > 120 {
		m = string(r[:120]) + "…"
	}
	return errKey{status: status, message: m}
}

// outcome is how one request ended.
type outcome int

const (
	outOK            outcome = iota
	outNotEnoughCoin         // a 400 "not enough coin": the workload counts it as a success
	outError
)

// opRecorder collects one operation's results during a phase.
type opRecorder struct {
	mu        sync.Mutex
	latencies []time.Duration
	ok        int64
	notEnough int64
	errs      map[errKey]int64
}

func (r *opRecorder) record(o outcome, latency time.Duration, key errKey) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.latencies = append(r.latencies, latency)
	switch o {
	case outOK:
		r.ok++
	case outNotEnoughCoin:
		r.notEnough++
	default:
		if r.errs == nil {
			r.errs = make(map[errKey]int64)
		}
		r.errs[key]++
	}
}

// durations is a mutex-guarded list of durations.
type durations struct {
	mu sync.Mutex
	ds []time.Duration
}

func (d *durations) add(v time.Duration) {
	d.mu.Lock()
	d.ds = append(d.ds, v)
	d.mu.Unlock()
}

func (d *durations) summary() Latency {
	d.mu.Lock()
	defer d.mu.Unlock()
	return summarize(d.ds)
}

// OpReport is one operation's (or all operations') results in a phase.
type OpReport struct {
	Op string `json:"op"`
	// Requests = OK + NotEnoughCoin + Errors: every request that was sent.
	Requests int64 `json:"requests"`
	OK       int64 `json:"ok"`
	// NotEnoughCoin counts 400 "not enough coin" answers, which the workload counts as
	// successes.
	NotEnoughCoin int64        `json:"not_enough_coin"`
	Errors        int64        `json:"errors"`
	RPS           float64      `json:"rps"`
	Latency       Latency      `json:"latency"`
	ErrorsBy      []ErrorCount `json:"errors_by,omitempty"`
}

// ErrorCount is one kind of failure and how often it happened.
type ErrorCount struct {
	Status  int    `json:"status"`
	Message string `json:"message"`
	Count   int64  `json:"count"`
}

// reportOps summarizes the recorders' results together, with rates over elapsed.
func reportOps(name string, elapsed time.Duration, rs ...*opRecorder) OpReport {
	rep := OpReport{Op: name}
	var lat []time.Duration
	errs := map[errKey]int64{}
	for _, r := range rs {
		r.mu.Lock()
		lat = append(lat, r.latencies...)
		rep.OK += r.ok
		rep.NotEnoughCoin += r.notEnough
		for k, n := range r.errs {
			errs[k] += n
			rep.Errors += n
		}
		r.mu.Unlock()
	}
	rep.Requests = int64(len(lat))
	if elapsed > 0 {
		rep.RPS = math.Round(float64(rep.Requests)/elapsed.Seconds()*10) / 10
	}
	rep.Latency = summarize(lat)
	for k, n := range errs {
		rep.ErrorsBy = append(rep.ErrorsBy, ErrorCount{Status: k.status, Message: k.message, Count: n})
	}
	sort.Slice(rep.ErrorsBy, func(i, j int) bool {
		a, b := rep.ErrorsBy[i], rep.ErrorsBy[j]
		if a.Count != b.Count {
			return a.Count > b.Count
		}
		if a.Status != b.Status {
			return a.Status < b.Status
		}
		return a.Message < b.Message
	})
	return rep
}
