package relay_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/ledger/ledger/internal/natstest"
	"github.com/ledger/ledger/internal/relay"
)

// BenchmarkJetStreamPublish measures JetStream alone, without the log: b.N messages of an
// event record's size into a fresh LEDGER stream, published with an acknowledgement awaited
// per message from 1 and from 128 goroutines (what watermill's publisher does), and
// asynchronously with up to 1,024 in flight (nats.go's PublishMsgAsync, which watermill's
// publisher does not offer and the relay uses). ADRs 12 and 18 record the numbers.
func BenchmarkJetStreamPublish(b *testing.B) {
	body := make([]byte, 620) // the size of a CoinsSent record
	for i := range body {
		body[i] = 'x'
	}
	setup := func(b *testing.B) nats.JetStreamContext {
		ns := natstest.Start(b, "")
		nc := ns.Connect()
		js, err := nc.JetStream(nats.PublishAsyncMaxPending(1024))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := relay.EnsureStream(js, relay.DefaultStream, relay.MinDuplicateWindow); err != nil {
			b.Fatal(err)
		}
		return js
	}
	msg := func() *nats.Msg {
		return &nats.Msg{Subject: "ledger.events.CoinsSent", Data: body, Header: nats.Header{nats.MsgIdHdr: []string{uuid.NewString()}}}
	}
	for _, workers := range []int{1, 128} {
		b.Run(fmt.Sprintf("sync/goroutines=%d", workers), func(b *testing.B) {
			js := setup(b)
			b.ResetTimer()
			began := time.Now()
			var wg sync.WaitGroup
			per := b.N/workers + 1
			for range workers {
				wg.Go(func() {
					for range per {
						if _, err := js.PublishMsg(msg()); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(per*workers)/time.Since(began).Seconds(), "msgs/s")
		})
	}
	b.Run("async/in-flight=1024", func(b *testing.B) {
		js := setup(b)
		b.ResetTimer()
		began := time.Now()
		for range b.N {
			if _, err := js.PublishMsgAsync(msg()); err != nil {
				b.Fatal(err)
			}
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-time.After(time.Minute):
			b.Fatal("acknowledgements missing")
		}
		b.ReportMetric(float64(b.N)/time.Since(began).Seconds(), "msgs/s")
	})
}
