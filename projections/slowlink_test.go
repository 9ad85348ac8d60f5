package projections_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/projections"
)

// After a batch fails whole, its events are applied one at a time, a round trip each. With the
// database a few milliseconds away, a poll applying a whole catch-up batch that way outlasted
// its ack deadline, rolled back, and began again at the same event, forever. The projector
// must get through.
func TestOneAtATimeFitsTheAckDeadlineOnASlowLink(t *testing.T) {
	w := newWorld(t)
	w.traffic(300) // about 700 events
	pool := slowPool(t, 5*time.Millisecond)
	var failed atomic.Bool
	w.runnerOn(pool, projections.Config{BeforeApply: func(group string, _ eventstore.RecordedEvent) error {
		if group == "history_v2" && failed.CompareAndSwap(false, true) {
			return errors.New("injected: the first attempt at the whole batch fails")
		}
		return nil
	}})
	w.waitCaughtUp()
	w.checkReadModels()
}

// slowPool returns a pool to the test database through a proxy that holds everything it
// forwards, either way, for delay.
func slowPool(t *testing.T, delay time.Duration) *pgxpool.Pool {
	t.Helper()
	cfg := db.Pool.Config().Copy()
	upstream := net.JoinHostPort(cfg.ConnConfig.Host, strconv.Itoa(int(cfg.ConnConfig.Port)))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	t.Cleanup(func() { l.Close(); conns.Wait() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer conns.Done()
				defer c.Close()
				u, err := net.Dial("tcp", upstream)
				if err != nil {
					return
				}
				defer u.Close()
				done := make(chan struct{}, 2)
				go func() { delayedCopy(u, c, delay); done <- struct{}{} }()
				go func() { delayedCopy(c, u, delay); done <- struct{}{} }()
				<-done // either side closed: close both
			}()
		}
	}()
	addr := l.Addr().(*net.TCPAddr)
	cfg.ConnConfig.Host, cfg.ConnConfig.Port = addr.IP.String(), uint16(addr.Port)
	cfg.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// delayedCopy copies from src to dst, holding each read for delay before writing it.
func delayedCopy(dst io.Writer, src io.Reader, delay time.Duration) {
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			time.Sleep(delay)
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
