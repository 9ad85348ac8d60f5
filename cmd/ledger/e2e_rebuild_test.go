package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/ledger/ledger/projections"
)

// A rebuild of balance runs while employees buy, send and read over HTTP: no request fails,
// and every read shows every command its reader made before it (read-your-writes), before,
// during and after the switch to balance v2. Admins watch it on /api/admin/projections.
func TestE2ERebuildUnderTraffic(t *testing.T) {
	if testing.Short() {
		t.Skip("runs traffic during a rebuild")
	}
	s := startTestService(t)
	api := s.api
	admin := api.login(t, "admin")
	sink := uniq("sink")
	api.login(t, sink)

	const workers = 6
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var reads, commands sync.Map
	for i := range workers {
		name := uniq(fmt.Sprint("rebuilder", i))
		token := api.login(t, name)
		wg.Go(func() {
			// Only this worker moves its account's coins (it sends, nobody sends to it), so
			// after each command its info is known exactly.
			coins, pens, sent := int64(1000), int64(0), 0
			for n := 0; n < 60; n++ {
				select {
				case <-stop:
					return
				default:
				}
				var r response
				if n%2 == 0 {
					r = api.buy(t, token, "pen")
					coins -= 10
					pens++
				} else {
					r = api.sendCoin(t, token, sink, 1)
					coins--
					sent++
				}
				if r.Status != http.StatusOK {
					t.Errorf("%s: command %d: %s", name, n, r)
					return
				}
				commands.Store(name, n+1)
				in, ok := api.tryInfo(t, token)
				if !ok {
					return
				}
				reads.Store(name, n+1)
				if in.Coins != coins || in.items()["pen"] != pens || len(in.CoinHistory.Sent) != sent {
					t.Errorf("%s: after command %d the info shows %d coins, %d pens, %d sent; want %d, %d, %d",
						name, n, in.Coins, in.items()["pen"], len(in.CoinHistory.Sent), coins, pens, sent)
					return
				}
			}
		})
	}

	var states []string
	watcher := &apiClient{base: api.base, hc: api.hc, router: api.router, errDoc: api.errDoc, lateOK: true}
	watch := make(chan struct{})
	go func() {
		defer close(watch)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			r := watcher.do(t, http.MethodGet, "/api/admin/projections", admin, nil)
			if r.Status == http.StatusServiceUnavailable {
				continue // past the request deadline on a saturated machine: ask again
			}
			if r.Status != http.StatusOK {
				t.Errorf("projection status: %s", r)
				return
			}
			var body struct{ Projections []projections.Status }
			if err := json.Unmarshal(r.Body, &body); err != nil {
				t.Errorf("projection status: %v", err)
				return
			}
			for _, p := range body.Projections {
				if p.Name == "balance" {
					st := fmt.Sprintf("v%d %s", p.ActiveVersion, p.State)
					if len(states) == 0 || states[len(states)-1] != st {
						states = append(states, st)
					}
				}
			}
		}
	}()

	time.Sleep(300 * time.Millisecond) // traffic before the rebuild
	rep, err := projections.Rebuild(context.Background(), db.Pool, "balance", projections.RebuildOptions{Grace: 1500 * time.Millisecond})
	if err != nil {
		t.Fatalf("rebuild: %v", err)
	}
	time.Sleep(1500 * time.Millisecond) // traffic after it
	close(stop)
	wg.Wait()
	<-watch
	t.Logf("rebuild %+v; balance states seen: %v", rep, states)
	total := 0
	reads.Range(func(_, v any) bool { total += v.(int); return true })
	if total == 0 {
		t.Fatal("no read-your-writes check ran")
	}
	if len(states) == 0 || states[len(states)-1] != "v2 live" {
		t.Errorf("balance states seen on /api/admin/projections: %v; want to end at v2 live", states)
	}
	// Reads after the rebuild come from balance v2, kept by the serving process's projector.
	in := api.info(t, api.login(t, sink))
	if in.Coins <= 1000 {
		t.Errorf("the sink received nothing: %s", in)
	}
	api.waitReady(t)
}
