package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

const mixScript = "wrk/mix.lua"

func needWrk(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("wrk")
	if err != nil {
		t.Skip("wrk is not installed (Debian: apt-get install wrk)")
	}
	return bin
}

// TestWrkMixScript runs wrk with the mix script against a stand-in of the ledger's routes that
// checks every request: the token is a seeded employee's, a buy names a cheap item, a sendCoin
// moves 1..25 coins to another seeded employee. The mix comes out 75/15/10, and the script's
// result counts every answer, a 400 "not enough coin" as no error and a 500 and a 400 of another
// kind as errors.
func TestWrkMixScript(t *testing.T) {
	wrkBin := needWrk(t)
	const users = 50
	dir := t.TempDir()
	var seeded []map[string]string
	var tokens []string
	byToken := map[string]string{}
	for i := range users {
		name, token := fmt.Sprintf("user%05d", i+1), fmt.Sprintf("token-%d", i+1)
		seeded = append(seeded, map[string]string{"username": name, "password": "pw"})
		tokens = append(tokens, token)
		byToken["Bearer "+token] = name
	}
	usersFile, tokensFile, resultFile := filepath.Join(dir, "users.json"), filepath.Join(dir, "tokens.json"), filepath.Join(dir, "result.json")
	writeJSON(t, usersFile, seeded)
	writeJSON(t, tokensFile, tokens)

	var mu sync.Mutex
	count := map[string]int{} // by route, and by the answer the stand-in gave
	var bad []string
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(bad) < 10 {
			bad = append(bad, fmt.Sprintf(format, args...))
		}
	}
	n := 0
	answer := func(w http.ResponseWriter, route string) {
		mu.Lock()
		n++
		count[route]++
		k := n
		mu.Unlock()
		switch {
		case k%50 == 0:
			countKey(&mu, count, "500")
			http.Error(w, `{"errors":"boom"}`, http.StatusInternalServerError)
		case route != "info" && k%7 == 0:
			countKey(&mu, count, "not enough coin")
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"errors":"not enough coin: balance 3, price 10"}`)
		case route == "info" && k%61 == 0:
			countKey(&mu, count, "other 400")
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"errors":"something else"}`)
		default:
			io.WriteString(w, `{}`)
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/info", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := byToken[r.Header.Get("Authorization")]; !ok {
			fail("info with %q", r.Header.Get("Authorization"))
		}
		answer(w, "info")
	})
	mux.HandleFunc("GET /api/buy/{item}", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := byToken[r.Header.Get("Authorization")]; !ok {
			fail("buy with %q", r.Header.Get("Authorization"))
		}
		if !slices.Contains(splitList(defaultItems), r.PathValue("item")) {
			fail("buy of %q", r.PathValue("item"))
		}
		answer(w, "buy")
	})
	mux.HandleFunc("POST /api/sendCoin", func(w http.ResponseWriter, r *http.Request) {
		from, ok := byToken[r.Header.Get("Authorization")]
		var b sendCoinBody
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		err := dec.Decode(&b)
		_, known := byToken["Bearer token-"+strings.TrimLeft(strings.TrimPrefix(b.ToUser, "user"), "0")]
		if !ok || err != nil || r.Header.Get("Content-Type") != "application/json" || b.ToUser == from || !known || b.Amount < 1 || b.Amount > 25 {
			fail("sendCoin %+v (%v) by %q", b, err, from)
		}
		answer(w, "send")
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	cmd := exec.Command(wrkBin, "-t2", "-c4", "-d2s", "-s", mixScript, srv.URL)
	cmd.Env = append(os.Environ(), "MIX_USERS="+usersFile, "MIX_TOKENS="+tokensFile, "MIX_RESULT="+resultFile)
	out, err := cmd.CombinedOutput()
	t.Logf("wrk:\n%s", out)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bad {
		t.Error(b)
	}
	var res mixResult
	b, err := os.ReadFile(resultFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	mu.Lock()
	defer mu.Unlock()
	total := count["info"] + count["buy"] + count["send"]
	if total < 1000 {
		t.Fatalf("only %d requests arrived", total)
	}
	// wrk counts the answers it read to the end: the requests in flight when it stopped are in
	// the server's count only.
	if res.Requests > int64(total) || res.Requests < int64(total-4) {
		t.Errorf("the script counted %d requests, the server %d", res.Requests, total)
	}
	var sum int64
	for _, n := range res.Statuses {
		sum += n
	}
	if sum != res.Requests {
		t.Errorf("statuses %v add up to %d, not the %d requests", res.Statuses, sum, res.Requests)
	}
	if d := int64(count["not enough coin"]) - res.NotEnoughCoin; d < 0 || d > 4 {
		t.Errorf("the script counted %d not enough coin, the server sent %d", res.NotEnoughCoin, count["not enough coin"])
	}
	if d := int64(count["500"]+count["other 400"]) - res.Errors; d < 0 || d > 4 {
		t.Errorf("the script counted %d errors, the server sent %d 500s and %d other 400s", res.Errors, count["500"], count["other 400"])
	}
	if res.Statuses["500"] == 0 || res.Statuses["400"] == 0 || res.Statuses["200"] == 0 {
		t.Errorf("statuses %v: want some 200, 400 and 500", res.Statuses)
	}
	for route, want := range map[string]float64{"info": 0.75, "buy": 0.15, "send": 0.10} {
		// Five standard deviations of a binomial share.
		got, sd := float64(count[route])/float64(total), math.Sqrt(want*(1-want)/float64(total))
		if math.Abs(got-want) > 5*sd {
			t.Errorf("%s: %.3f of %d requests, want %.2f", route, got, total, want)
		}
	}
	if res.P99Us <= 0 || res.DurationUs < 1_500_000 {
		t.Errorf("p99 %d µs over %d µs", res.P99Us, res.DurationUs)
	}
}

func countKey(mu *sync.Mutex, count map[string]int, key string) {
	mu.Lock()
	count[key]++
	mu.Unlock()
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestWrkMeasured: the CPU per request is the machine's busy time less wrk's, over the requests.
func TestWrkMeasured(t *testing.T) {
	var r WrkResult
	mix := mixResult{Requests: 200_000, DurationUs: 30_000_000, Errors: 0, NotEnoughCoin: 12, P50Us: 4_100, P99Us: 38_250,
		Statuses: map[string]int64{"200": 199_988, "400": 12}}
	before := machineSample{busy: 1000, total: 5000, cpus: 2}
	after := machineSample{busy: 1059.6, total: 5060, cpus: 2}
	r.wrkMeasured(mix, before, after, 3600*time.Millisecond, &ProcReport{CPUSeconds: 30})
	if r.RPS != 6666.67 || r.P99Ms != 38.25 || r.P50Ms != 4.1 || r.NotEnoughCoin != 12 || r.CPUs != 2 {
		t.Errorf("%+v", r)
	}
	// (59.6 - 3.6) CPU-s over 200,000 requests: 280 µs; the server process alone 150 µs.
	if r.WindowS != 30 || r.MachineBusyS != 59.6 || r.WrkS != 3.6 || r.ServerPostgresUsPerRequest != 280 || r.ServerUsPerRequest != 150 {
		t.Errorf("CPU: %+v", r)
	}
	var out bytes.Buffer
	printWrk(&out, &r)
	for _, want := range []string{"requests/s:  6666.7", "p99 latency: 38.25 ms", "server + PostgreSQL CPU per request: 280.0 µs"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}

// TestWrkAgainstTheBinary builds the ledger and runs the --wrk mode as make wrk does, briefly
// and on a database of the test's own: the binary seeds the employees, wrk loads it, and the
// report has requests, no errors and a CPU per request. It asserts no speed: the machine may be
// busy.
func TestWrkAgainstTheBinary(t *testing.T) {
	needWrk(t)
	if testing.Short() {
		t.Skip("builds and runs the ledger binary")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var res WrkResult
	report := runAgainstTheBinary(ctx, t, &res,
		"--wrk", mixScript, "--users", "40", "--conns", "4", "--warmup", "1s", "--duration", "2s")
	if res.Requests == 0 || res.Errors != 0 || res.Statuses["200"] == 0 || res.RPS <= 0 || res.P99Ms <= 0 {
		t.Errorf("result: %+v", res)
	}
	if res.MachineBusyS <= 0 || res.WrkS <= 0 || res.ServerS <= 0 || res.ServerPostgresUsPerRequest <= 0 {
		t.Errorf("CPU not measured: %+v", res)
	}
	if !strings.Contains(report, "server + PostgreSQL CPU per request") || !strings.Contains(report, "Latency Distribution") {
		t.Errorf("the report lacks wrk's latency distribution or the CPU per request")
	}
}
