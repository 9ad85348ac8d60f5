package console_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/ledger/ledger/internal/pgtest"
	"github.com/ledger/ledger/projections"
)

var (
	circleRE = regexp.MustCompile(`<circle [^>]*>`)
	attrRE   = regexp.MustCompile(`data-([a-z-]+)="(-?\d+)"`)
	rowRE    = regexp.MustCompile(`<tr id="v(\d+)" data-version="\d+">(?s:.*?)data-chain="(true|false)">([^<]*)</td></tr>`)
)

// TestBusyAccountPage: the page of an account with more changes than the chart draws one by
// one, read from the database: the chart's merged points stand for every change, in order,
// the last at the account's balance; the table pages through every event with its balance;
// and the chain is checked on every read, so an event changed in the database shows.
func TestBusyAccountPage(t *testing.T) {
	ctx := context.Background()
	db := pgtest.New(t, "console_busy")
	a, wake := appOn(db)
	busy, _, err := a.OpenAccount(ctx, "busy", "x")
	if err != nil {
		t.Fatal(err)
	}
	peers := make([]uuid.UUID, 4)
	for i := range peers {
		if peers[i], _, err = a.OpenAccount(ctx, fmt.Sprintf("peer%d", i), "x"); err != nil {
			t.Fatal(err)
		}
	}
	const received, sent = 2_400, 200
	var wg sync.WaitGroup
	for w := range peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < received; i += len(peers) {
				if _, err := a.Transfer(ctx, peers[w], "busy", 1); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for i := range sent {
		if _, err := a.Transfer(ctx, busy, fmt.Sprintf("peer%d", i%len(peers)), 3); err != nil {
			t.Fatal(err)
		}
	}
	runner := projections.NewRunner(db.Pool, wake, slog.New(slog.DiscardHandler), projections.Config{Follow: true}, projections.Versions()...)
	runCtx, stopRunner := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = runner.Run(runCtx) }()
	t.Cleanup(func() { stopRunner(); <-done })
	waitCaughtUp(t, db)
	info, err := a.Info(ctx, busy)
	if err != nil {
		t.Fatal(err)
	}
	changes := int64(1 + received + sent) // the welcome grant and the transfers
	if head := info.Version; head != changes+1 {
		t.Fatalf("the account is at version %d, want %d", head, changes+1)
	}

	srv, token := consoleServer(t, a, db, wake)
	get := func(path string) string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		req.AddCookie(&http.Cookie{Name: "ledger_console", Value: token})
		res, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		if err != nil || res.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %v\n%s", path, res.StatusCode, err, body)
		}
		return string(body)
	}

	page := get("/console/accounts/busy")
	circles := circleRE.FindAllString(page, -1)
	if len(circles) == 0 || len(circles) > 800 {
		t.Fatalf("%d points for %d changes, want at most one per pixel column (800)", len(circles), changes)
	}
	var covered, lastVersion, lastBalance int64
	for i, c := range circles {
		attrs := map[string]int64{"changes": 1}
		for _, m := range attrRE.FindAllStringSubmatch(c, -1) {
			attrs[m[1]], _ = strconv.ParseInt(m[2], 10, 64)
		}
		first := attrs["version"]
		if attrs["changes"] > 1 {
			first = attrs["first-version"]
			if attrs["min"] > attrs["balance"] || attrs["max"] < attrs["balance"] {
				t.Fatalf("point %d: balance %d outside its min %d and max %d", i, attrs["balance"], attrs["min"], attrs["max"])
			}
		}
		if first <= lastVersion || attrs["version"] < first {
			t.Fatalf("point %d stands for v%d..v%d after v%d", i, first, attrs["version"], lastVersion)
		}
		covered += attrs["changes"]
		lastVersion, lastBalance = attrs["version"], attrs["balance"]
	}
	if covered != changes || lastVersion != info.Version || lastBalance != info.Coins {
		t.Fatalf("the points stand for %d changes up to v%d at %d; the account has %d changes up to v%d at %d",
			covered, lastVersion, lastBalance, changes, info.Version, info.Coins)
	}
	if !strings.Contains(page, `id="chart-merged"`) || !strings.Contains(page, `id="chain">✔ holds`) {
		t.Fatalf("the page does not say the points are merged, or that the chain holds")
	}
	rows := rowRE.FindAllStringSubmatch(page, -1)
	if len(rows) != 50 || rows[0][1] != strconv.FormatInt(info.Version, 10) {
		t.Fatalf("the events table starts %d rows at v%s, want 50 from v%d", len(rows), rows[0][1], info.Version)
	}
	if oldest := rowRE.FindAllStringSubmatch(get("/console/accounts/busy?v=1"), -1); oldest[len(oldest)-1][1] != "1" {
		t.Fatalf("the page of v1 ends at v%s", oldest[len(oldest)-1][1])
	}

	// An event in the middle changed behind the ledger's back: its link and every later one
	// break, the earlier ones hold.
	const tampered = 1_200
	for _, sql := range []string{
		`ALTER TABLE events DISABLE TRIGGER USER`,
		`UPDATE events SET payload_bytes = convert_to(replace(convert_from(payload_bytes, 'UTF8'), '"amount":1', '"amount":2'), 'UTF8')
		 WHERE stream_id = 'account-` + busy.String() + `' AND stream_version = ` + strconv.Itoa(tampered),
		`ALTER TABLE events ENABLE TRIGGER USER`,
	} {
		if _, err := db.Pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	page = get("/console/accounts/busy?v=" + strconv.Itoa(tampered))
	if !strings.Contains(page, `id="chain">✘ broken`) {
		t.Fatalf("after a change to v%d the page says the chain holds", tampered)
	}
	chain := map[string][2]string{}
	for _, r := range rowRE.FindAllStringSubmatch(page, -1) {
		chain[r[1]] = [2]string{r[2], r[3]}
	}
	for v, want := range map[int][2]string{tampered - 1: {"true", "✔ holds"}, tampered: {"false", "✘ hash mismatch"},
		tampered + 1: {"false", "✘ after a break"}} {
		if got := chain[strconv.Itoa(v)]; got != want {
			t.Errorf("v%d's chain cell %q, want %q", v, got, want)
		}
	}
}
