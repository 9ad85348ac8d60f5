package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// transferKey is one transfer as both parties' histories describe it.
type transferKey struct {
	From, To string
	Amount   int64
}

// TestE2EBank hammers the service with concurrent transfers, purchases and reads over HTTP,
// then checks that no coin was created or lost and that both sides of every transfer agree.
func TestE2EBank(t *testing.T) {
	// Runs after the service has stopped (cleanups run last-in first-out): whatever state this
	// workload leaves in the log and the projections stays out of the other tests.
	t.Cleanup(func() { db.Reset(t) })
	// Four clients per account queue for it, for seconds under the race detector on a busy
	// machine; this test is about contention, not about the request deadline (see
	// TestE2EStalledDatabase), so no command runs out of time.
	ts := startTestService(t, func(c *serveConfig) { c.RequestTimeout = maxRequestTimeout })
	api := *ts.api
	api.busyOK = true // counted below, and reported as the bug it is

	const (
		users   = 12
		clients = 48
		runFor  = 3 * time.Second // length of the workload, not an expectation on speed
	)
	names := make([]string, users)
	tokens := make([]string, users)
	prefix := uniq("bank")
	var wg sync.WaitGroup
	for i := range users {
		names[i] = fmt.Sprintf("%s-%02d", prefix, i)
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := api.auth(t, names[i], testPassword)
			if r.Status != http.StatusOK {
				t.Errorf("auth %s: %s", names[i], r)
				return
			}
			tokens[i] = tokenOf(t, r)
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	items := make([]string, 0, len(catalog))
	for item := range catalog {
		items = append(items, item)
	}

	// What the clients saw succeed.
	type tally struct {
		transfers map[transferKey]int
		bought    map[string]map[string]int64 // user → item → count
		sendOK    int
		buyOK     int
		refused   int
		busy      int
		reads     int
	}
	results := make([]tally, clients)
	stop := time.Now().Add(runFor)
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(c), uint64(time.Now().UnixNano())))
			res := tally{transfers: map[transferKey]int{}, bought: map[string]map[string]int64{}}
			defer func() { results[c] = res }()
			me := c % users // four clients per account: they race each other for it
			for time.Now().Before(stop) {
				switch op := rnd.IntN(100); {
				case op < 45:
					to := rnd.IntN(users - 1)
					if to >= me {
						to++
					}
					amount := int64(1 + rnd.IntN(50))
					r := api.sendCoin(t, tokens[me], names[to], amount)
					switch {
					case r.Status == http.StatusOK:
						res.sendOK++
						res.transfers[transferKey{names[me], names[to], amount}]++
					case r.Status == http.StatusBadRequest && strings.Contains(r.errMsg(), "not enough coin"):
						res.refused++
					case r.isBusy(): // changed nothing; reported at the end
						res.busy++
					default:
						t.Errorf("sendCoin %s → %s %d: %s", names[me], names[to], amount, r)
						return
					}
				case op < 70:
					item := items[rnd.IntN(len(items))]
					r := api.buy(t, tokens[me], item)
					switch {
					case r.Status == http.StatusOK:
						res.buyOK++
						if res.bought[names[me]] == nil {
							res.bought[names[me]] = map[string]int64{}
						}
						res.bought[names[me]][item]++
					case r.Status == http.StatusBadRequest && strings.Contains(r.errMsg(), "not enough coin"):
						res.refused++
					case r.isBusy():
						res.busy++
					default:
						t.Errorf("buy %s by %s: %s", item, names[me], r)
						return
					}
				default:
					in, ok := api.tryInfo(t, tokens[me])
					if !ok {
						return
					}
					res.reads++
					if in.Coins < 0 {
						t.Errorf("%s has a negative balance mid-run: %s", names[me], in)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	// Merge what the clients saw.
	wantTransfers := map[transferKey]int{}
	wantBought := map[string]map[string]int64{}
	var sendOK, buyOK, refused, busy, reads int
	for _, r := range results {
		for k, n := range r.transfers {
			wantTransfers[k] += n
		}
		for u, m := range r.bought {
			if wantBought[u] == nil {
				wantBought[u] = map[string]int64{}
			}
			for item, n := range m {
				wantBought[u][item] += n
			}
		}
		sendOK += r.sendOK
		buyOK += r.buyOK
		refused += r.refused
		busy += r.busy
		reads += r.reads
	}
	t.Logf("%d transfers and %d purchases succeeded, %d refused for funds, %d answered 500 busy, %d reads", sendOK, buyOK, refused, busy, reads)
	if sendOK == 0 || buyOK == 0 {
		t.Fatalf("the workload did not exercise both commands: %d transfers, %d purchases", sendOK, buyOK)
	}

	// What the ledger says.
	sentSeen := map[transferKey]int{}
	receivedSeen := map[transferKey]int{}
	var totalCoins, totalSpent int64
	sentEntries := 0
	for i, name := range names {
		in := api.info(t, tokens[i])
		if in.Coins < 0 {
			t.Errorf("%s has a negative balance: %s", name, in)
		}
		var spent int64
		for _, h := range in.Inventory {
			price, ok := catalog[h.Type]
			if !ok {
				t.Errorf("%s owns an item not in the catalog: %s", name, in)
			}
			spent += price * h.Quantity
		}
		if got, want := fmt.Sprint(in.items()), fmt.Sprint(nonNil(wantBought[name])); got != want {
			t.Errorf("%s's inventory is %s, but its successful purchases were %s", name, got, want)
		}
		var in_, out int64
		for _, s := range in.CoinHistory.Sent {
			sentSeen[transferKey{name, s.ToUser, s.Amount}]++
			out += s.Amount
			sentEntries++
		}
		for _, r := range in.CoinHistory.Received {
			receivedSeen[transferKey{r.FromUser, name, r.Amount}]++
			in_ += r.Amount
		}
		if want := 1000 + in_ - out - spent; in.Coins != want {
			t.Errorf("%s: balance %d, but 1000 + received %d - sent %d - spent %d = %d", name, in.Coins, in_, out, spent, want)
		}
		totalCoins += in.Coins
		totalSpent += spent
	}
	if totalCoins+totalSpent != 1000*users {
		t.Errorf("coins %d + spent %d = %d, want %d", totalCoins, totalSpent, totalCoins+totalSpent, 1000*users)
	}
	if sentEntries != sendOK {
		t.Errorf("%d sent entries in the histories, %d transfers answered 200", sentEntries, sendOK)
	}
	if got, want := fmt.Sprint(sentSeen), fmt.Sprint(receivedSeen); got != want {
		t.Errorf("sent and received histories disagree:\nsent     %s\nreceived %s", got, want)
	}
	if got, want := fmt.Sprint(sentSeen), fmt.Sprint(wantTransfers); got != want {
		t.Errorf("sent histories are not the transfers that answered 200:\nhistory %s\n200s    %s", got, want)
	}

	// The projectors must catch up with the log, and their read models must agree with what
	// /api/info answered (which may have folded events the projectors had not applied yet).
	stuck, stalled := waitForProjections(t, names)
	if stalled != "" {
		// Not this ledger's doing, but worth knowing: the projectors' xid fence is server-wide.
		t.Logf("projections held back by another database's transaction, read models not compared: %s", stalled)
	}
	if stuck == "" && stalled == "" {
		ctx := context.Background()
		for i, name := range names {
			var coins int64
			if err := db.Pool.QueryRow(ctx, `SELECT b.coins FROM balance_v1 b JOIN users u ON u.account_id = b.account_id WHERE u.username = $1`, name).Scan(&coins); err != nil {
				t.Errorf("balance_v1 of %s: %v", name, err)
				continue
			}
			if in := api.info(t, tokens[i]); in.Coins != coins {
				t.Errorf("%s: balance_v1 says %d coins, /api/info %d", name, coins, in.Coins)
			}
		}
		if r := api.do(t, http.MethodGet, "/api/ready", "", nil); r.Status != http.StatusOK {
			t.Errorf("not ready after the workload: %s", r)
		}
	}

	if stuck != "" {
		t.Errorf("%s", projectionGap(stuck))
	}
	if busy > 0 {
		t.Errorf("%s", busyBug(busy, sendOK+buyOK+refused+busy))
	}
}

func busyBug(busy, total int) string {
	return fmt.Sprintf("%d of %d commands answered 500 %q: with a few concurrent clients per account, "+
		"the optimistic-concurrency retry budget (app.Config.MaxAttempts, 8 attempts) runs out and the client gets a 5xx; "+
		"the contract allows only 200 or 400 here (5xx must never be caused by client behaviour; 99.99%% success SLI)",
		busy, total, "the account is busy with other requests; try again")
}

func projectionGap(stuck string) string {
	return "a projector stopped on a stream-version gap (" + stuck + "). The log is read in " +
		"(transaction_id, global_position) order, but a transaction's xid is assigned when it locks its " +
		"first stream row, before it waits for the next one: a transfer that takes its xid, then waits " +
		"for the recipient's row held by a later-xid transaction, appends the recipient's version N+1 with " +
		"a smaller xid than version N. Projectors then see N+1 before N, refuse it as 'an event is missing', " +
		"and stay failed: /api/ready goes 503 and every /api/info of the account falls back to folding events"
}

// waitForProjections waits until every projection has applied each named account's stream up
// to its head. It returns ("", "") then; failed describes a projection that stopped, and
// stalled a transaction in another database of the server that holds back the xid horizon
// the projectors read below (they cannot move past it, whatever the ledger does). The bound is
// generous; it is a guard against waiting forever, not a latency expectation.
func waitForProjections(t *testing.T, names []string) (failed, stalled string) {
	t.Helper()
	ctx := context.Background()
	start := time.Now()
	deadline := start.Add(30 * time.Second)
	for {
		err := db.Pool.QueryRow(ctx, `SELECT COALESCE(string_agg(consumer_group || ': ' || COALESCE(last_error, ''), '; '), '')
			FROM projection_status WHERE state = 'failed'`).Scan(&failed)
		if err != nil {
			t.Fatalf("read projection status: %v", err)
		}
		if failed != "" {
			return failed + gapEvidence(t), ""
		}
		var behind int
		err = db.Pool.QueryRow(ctx, `
			SELECT count(*)
			FROM users u
			JOIN streams s ON s.stream_id = 'account-' || u.account_id::text
			CROSS JOIN (SELECT name || '_v' || active_version FROM projection_versions) AS g(name)
			LEFT JOIN projection_heads h ON h.consumer_group = g.name AND h.account_id = u.account_id
			WHERE u.username = ANY($1) AND COALESCE(h.version, 0) <> s.version`, names).Scan(&behind)
		if err != nil {
			t.Fatalf("read projection heads: %v", err)
		}
		if behind == 0 {
			return "", ""
		}
		if time.Since(start) > 2*time.Second {
			var holder string
			err := db.Pool.QueryRow(ctx, `
				SELECT COALESCE(string_agg(format('database %s, pid %s, %s since %s', datname, pid, state, xact_start), '; '), '')
				FROM pg_stat_activity
				WHERE backend_xid = xid(pg_snapshot_xmin(pg_current_snapshot()))
				  AND datname IS DISTINCT FROM current_database()`).Scan(&holder)
			if err != nil {
				t.Fatalf("read pg_stat_activity: %v", err)
			}
			if holder != "" {
				return "", fmt.Sprintf("%d account read models behind; the oldest running transaction of the server is elsewhere (%s)", behind, holder)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("projections never caught up: %d account read models behind their streams", behind)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// gapEvidence describes, from the log, the events around the one a failed projection stopped
// at: their stream versions against their (transaction_id, global_position) order.
func gapEvidence(t *testing.T) string {
	t.Helper()
	rows, err := db.Pool.Query(context.Background(), `
		WITH f AS (
			SELECT e.stream_id, e.stream_version FROM projection_status ps
			JOIN events e ON e.event_id = ps.failed_event_id
			WHERE ps.state = 'failed' LIMIT 1)
		SELECT e.stream_version, e.transaction_id::text, e.global_position
		FROM events e, f
		WHERE e.stream_id = f.stream_id AND e.stream_version BETWEEN f.stream_version - 2 AND f.stream_version
		ORDER BY e.stream_version`)
	if err != nil {
		return ""
	}
	defer rows.Close()
	var parts []string
	for rows.Next() {
		var v, pos int64
		var xid string
		if rows.Scan(&v, &xid, &pos) == nil {
			parts = append(parts, fmt.Sprintf("version %d: xid %s position %d", v, xid, pos))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return "; in the log: " + strings.Join(parts, ", ")
}

func nonNil(m map[string]int64) map[string]int64 {
	if m == nil {
		return map[string]int64{}
	}
	return m
}
