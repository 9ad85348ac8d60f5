package eventstore_test

import (
	"encoding/json"
	"errors"
	"math/big"
	"reflect"
	"testing"

	"github.com/google/uuid"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/eventstore"
)

// Fixed identities so that expected payloads can be written out literally.
var (
	aliceID    = uuid.MustParse("0a11ce00-0000-4000-8000-000000000001")
	bobID      = uuid.MustParse("0b0b0000-0000-4000-8000-000000000002")
	transferID = uuid.MustParse("7a5f0000-0000-4000-8000-0000000000f1")

	aliceRef = domain.AccountRef{ID: aliceID, Username: "alice"}
	bobRef   = domain.AccountRef{ID: bobID, Username: "bob"}
)

// sampleEvents has one event of every type with every field set.
func sampleEvents() []domain.Event {
	return []domain.Event{
		domain.AccountOpened{AccountID: aliceID, Username: "Zoë 名前"},
		domain.CoinsGranted{Amount: 1000, Reason: "welcome"},
		domain.CoinsGranted{Amount: 250, Reason: "hackathon \"winner\" <3", GrantedBy: "admin"},
		domain.CoinsSent{TransferID: transferID, From: aliceRef, To: bobRef, Amount: 300},
		domain.CoinsReceived{TransferID: transferID, From: bobRef, To: aliceRef, Amount: 200},
		domain.ItemPurchased{Item: "pink-hoody", Price: 500, Quantity: 2},
	}
}

func TestDecodeEventRoundTrip(t *testing.T) {
	for _, e := range sampleEvents() {
		t.Run(e.EventType(), func(t *testing.T) {
			payload, err := json.Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			got, err := eventstore.DecodeEvent(e.EventType(), domain.SchemaVersion, payload)
			if err != nil {
				t.Fatalf("decode %s: %v", payload, err)
			}
			if !reflect.DeepEqual(got, e) {
				t.Errorf("round trip:\n got  %#v\n want %#v", got, e)
			}
		})
	}
}

// TestDecodeStoredPayloads pins the stored JSON shape: events written today must still decode
// after a refactoring.
func TestDecodeStoredPayloads(t *testing.T) {
	for _, tc := range []struct {
		typ, payload string
		want         domain.Event
	}{
		{domain.TypeAccountOpened, `{"accountId":"0a11ce00-0000-4000-8000-000000000001","username":"alice"}`,
			domain.AccountOpened{AccountID: aliceID, Username: "alice"}},
		{domain.TypeCoinsGranted, `{"amount":1000,"reason":"welcome"}`, domain.CoinsGranted{Amount: 1000, Reason: "welcome"}},
		{domain.TypeCoinsGranted, `{"amount":5,"reason":"r","grantedBy":"root"}`, domain.CoinsGranted{Amount: 5, Reason: "r", GrantedBy: "root"}},
		{domain.TypeCoinsSent, `{"transferId":"7a5f0000-0000-4000-8000-0000000000f1","from":{"id":"0a11ce00-0000-4000-8000-000000000001","username":"alice"},"to":{"id":"0b0b0000-0000-4000-8000-000000000002","username":"bob"},"amount":300}`,
			domain.CoinsSent{TransferID: transferID, From: aliceRef, To: bobRef, Amount: 300}},
		{domain.TypeCoinsReceived, `{"transferId":"7a5f0000-0000-4000-8000-0000000000f1","from":{"id":"0b0b0000-0000-4000-8000-000000000002","username":"bob"},"to":{"id":"0a11ce00-0000-4000-8000-000000000001","username":"alice"},"amount":7}`,
			domain.CoinsReceived{TransferID: transferID, From: bobRef, To: aliceRef, Amount: 7}},
		{domain.TypeItemPurchased, `{"item":"cup","price":20,"quantity":1}`, domain.ItemPurchased{Item: "cup", Price: 20, Quantity: 1}},
	} {
		got, err := eventstore.DecodeEvent(tc.typ, domain.SchemaVersion, []byte(tc.payload))
		if err != nil {
			t.Errorf("%s %s: %v", tc.typ, tc.payload, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s %s:\n got  %#v\n want %#v", tc.typ, tc.payload, got, tc.want)
		}
		// and the encoder writes that same shape
		out, err := json.Marshal(tc.want)
		if err != nil || string(out) != tc.payload {
			t.Errorf("encode %#v = %s, %v; want %s", tc.want, out, err, tc.payload)
		}
	}
}

func TestDecodeEventRefusesCorruptInput(t *testing.T) {
	valid := []byte(`{"amount":1,"reason":"x"}`)
	for _, tc := range []struct {
		name    string
		typ     string
		version int
		payload string
	}{
		{"unknown type", "CoinsBurned", domain.SchemaVersion, `{"amount":1}`},
		{"empty type", "", domain.SchemaVersion, `{}`},
		{"type in another case", "coinsgranted", domain.SchemaVersion, string(valid)},
		{"schema version 0", domain.TypeCoinsGranted, 0, string(valid)},
		{"schema version 2", domain.TypeCoinsGranted, 2, string(valid)},
		{"schema version -1", domain.TypeCoinsGranted, -1, string(valid)},
		{"empty payload", domain.TypeCoinsGranted, domain.SchemaVersion, ``},
		{"truncated", domain.TypeCoinsGranted, domain.SchemaVersion, `{"amount":1,`},
		{"not an object", domain.TypeItemPurchased, domain.SchemaVersion, `[1,2]`},
		{"string amount", domain.TypeCoinsGranted, domain.SchemaVersion, `{"amount":"ten","reason":"x"}`},
		{"fractional amount", domain.TypeCoinsSent, domain.SchemaVersion, `{"amount":1.5}`},
		{"amount beyond int64", domain.TypeCoinsReceived, domain.SchemaVersion, `{"amount":9223372036854775808}`},
		{"fractional quantity", domain.TypeItemPurchased, domain.SchemaVersion, `{"item":"cup","price":20,"quantity":0.5}`},
		{"bad uuid", domain.TypeAccountOpened, domain.SchemaVersion, `{"accountId":"not-a-uuid","username":"alice"}`},
		{"bad nested uuid", domain.TypeCoinsSent, domain.SchemaVersion, `{"from":{"id":"xyz"}}`},
		{"trailing garbage", domain.TypeCoinsGranted, domain.SchemaVersion, `{"amount":1,"reason":"x"} trailing`},
		{"binary", domain.TypeAccountOpened, domain.SchemaVersion, "\x00\xff\xfe"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := eventstore.DecodeEvent(tc.typ, tc.version, []byte(tc.payload))
			if !errors.Is(err, domain.ErrCorruptHistory) {
				t.Fatalf("eventstore.DecodeEvent = %#v, %v; want domain.ErrCorruptHistory", e, err)
			}
			if e != nil {
				t.Errorf("corrupt input decoded to %#v", e)
			}
		})
	}
}

// bankInvariantHolds checks granted + received == balance + sent + spent exactly.
func bankInvariantHolds(a *domain.Account) bool {
	sum := func(cs ...domain.Coins) *big.Int {
		s := new(big.Int)
		for _, c := range cs {
			s.Add(s, big.NewInt(int64(c)))
		}
		return s
	}
	return sum(a.Granted, a.Received).Cmp(sum(a.Balance, a.Sent, a.Spent)) == 0
}

func FuzzDecodeAndApply(f *testing.F) {
	for _, e := range sampleEvents() {
		payload, err := json.Marshal(e)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(e.EventType(), payload)
	}
	f.Add(domain.TypeCoinsSent, []byte(`{"from":{"id":"0a11ce00-0000-4000-8000-000000000001"},"amount":1000}`))
	f.Add(domain.TypeCoinsSent, []byte(`{"from":{"id":"0a11ce00-0000-4000-8000-000000000001"},"amount":-9223372036854775808}`))
	f.Add(domain.TypeCoinsReceived, []byte(`{"to":{"id":"0a11ce00-0000-4000-8000-000000000001"},"amount":9223372036854775807}`))
	f.Add(domain.TypeItemPurchased, []byte(`{"item":"cup","price":4611686018427387904,"quantity":2}`))
	f.Add(domain.TypeItemPurchased, []byte(`{"item":"cup","price":20,"quantity":0}`))
	f.Add(domain.TypeCoinsGranted, []byte(`null`))
	f.Add(domain.TypeAccountOpened, []byte(`{}`))
	f.Add("Unknown", []byte(`{}`))
	f.Add(domain.TypeCoinsGranted, []byte(`{"amount":`))

	f.Fuzz(func(t *testing.T, eventType string, payload []byte) {
		e, err := eventstore.DecodeEvent(eventType, domain.SchemaVersion, payload)
		if err != nil {
			if !errors.Is(err, domain.ErrCorruptHistory) {
				t.Fatalf("decode error %v is not domain.ErrCorruptHistory", err)
			}
			if e != nil {
				t.Fatalf("decode error %v came with event %#v", err, e)
			}
			return
		}
		if e == nil || e.EventType() != eventType {
			t.Fatalf("decoded %#v for type %q", e, eventType)
		}

		// What decodes re-encodes to the same event.
		again, err := json.Marshal(e)
		if err != nil {
			t.Fatalf("re-encode %#v: %v", e, err)
		}
		e2, err := eventstore.DecodeEvent(eventType, domain.SchemaVersion, again)
		if err != nil || !reflect.DeepEqual(e, e2) {
			t.Fatalf("round trip of %#v gave %#v, %v", e, e2, err)
		}

		// Folded into an opened account: refused as corrupt, or folded keeping the invariants.
		var a domain.Account
		if err := a.ApplyAll([]domain.Event{domain.AccountOpened{AccountID: aliceID, Username: "alice"},
			domain.CoinsGranted{Amount: domain.WelcomeGrant, Reason: "welcome"}}); err != nil {
			t.Fatal(err)
		}
		version := a.Version
		if err := a.Apply(e); err != nil {
			if !errors.Is(err, domain.ErrCorruptHistory) {
				t.Fatalf("Apply error %v is not domain.ErrCorruptHistory", err)
			}
			if a.Version != version {
				t.Fatalf("version moved on refusal: %d -> %d", version, a.Version)
			}
		} else {
			if a.Version != version+1 {
				t.Fatalf("version %d -> %d", version, a.Version)
			}
			if a.Balance < 0 {
				t.Fatalf("negative balance %d after %#v", a.Balance, e)
			}
			if !bankInvariantHolds(&a) {
				t.Fatalf("granted+received != balance+sent+spent after %#v: %+v", e, a)
			}
			if _, ok := e.(domain.AccountOpened); ok {
				t.Fatalf("second domain.AccountOpened folded")
			}
		}

		// Folded into a new stream: only domain.AccountOpened may start it.
		var fresh domain.Account
		err = fresh.Apply(e)
		if _, isOpen := e.(domain.AccountOpened); isOpen != (err == nil) {
			t.Fatalf("fresh.Apply(%#v) = %v", e, err)
		}
		if err != nil && !errors.Is(err, domain.ErrCorruptHistory) {
			t.Fatalf("fresh.Apply error %v is not domain.ErrCorruptHistory", err)
		}
	})
}

// BenchmarkDecodeBatch decodes a batch of 1,000 stored payloads in the log's usual mix (per
// ten events of an account: seven purchases, a transfer half, two grants), as a projector's
// poll or a page of a replay brings them.
//
//	go test -run '^$' -bench DecodeBatch ./eventstore/
func BenchmarkDecodeBatch(b *testing.B) {
	type stored struct {
		typ     string
		payload []byte
	}
	var batch []stored
	for v := range 10 {
		for a := range 100 {
			id := uuid.NewSHA1(uuid.NameSpaceOID, []byte{byte(a)})
			ref := domain.AccountRef{ID: id, Username: "employee-" + id.String()[:8]}
			var e domain.Event = domain.ItemPurchased{Item: "pen", Price: 10, Quantity: 1}
			switch {
			case v == 0 && a == 0:
				e = domain.AccountOpened{AccountID: id, Username: ref.Username}
			case v == 0 || v == 9:
				e = domain.CoinsGranted{Amount: 100, Reason: "welcome"}
			case v == 5 && a%2 == 0:
				e = domain.CoinsSent{TransferID: id, From: ref, To: bobRef, Amount: 5}
			case v == 5:
				e = domain.CoinsReceived{TransferID: id, From: aliceRef, To: ref, Amount: 5}
			}
			payload, err := json.Marshal(e)
			if err != nil {
				b.Fatal(err)
			}
			batch = append(batch, stored{e.EventType(), payload})
		}
	}
	for b.Loop() {
		for _, s := range batch {
			if _, err := eventstore.DecodeEvent(s.typ, domain.SchemaVersion, s.payload); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "events/s")
}
