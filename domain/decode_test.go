package domain

import (
	"encoding/json"
	"errors"
	"math/big"
	"reflect"
	"testing"
)

// sampleEvents has one event of every type with every field set.
func sampleEvents() []Event {
	return []Event{
		AccountOpened{AccountID: aliceID, Username: "Zoë 名前"},
		CoinsGranted{Amount: 1000, Reason: "welcome"},
		CoinsGranted{Amount: 250, Reason: "hackathon \"winner\" <3", GrantedBy: "admin"},
		CoinsSent{TransferID: transferID, From: aliceRef, To: bobRef, Amount: 300},
		CoinsReceived{TransferID: transferID, From: bobRef, To: aliceRef, Amount: 200},
		ItemPurchased{Item: "pink-hoody", Price: 500, Quantity: 2},
	}
}

func TestEventTypeNamesAreStable(t *testing.T) {
	want := map[string]Event{
		"AccountOpened": AccountOpened{},
		"CoinsGranted":  CoinsGranted{},
		"CoinsSent":     CoinsSent{},
		"CoinsReceived": CoinsReceived{},
		"ItemPurchased": ItemPurchased{},
	}
	consts := []string{TypeAccountOpened, TypeCoinsGranted, TypeCoinsSent, TypeCoinsReceived, TypeItemPurchased}
	for _, c := range consts {
		e, ok := want[c]
		if !ok {
			t.Errorf("type constant %q renamed", c)
			continue
		}
		if e.EventType() != c {
			t.Errorf("%T.EventType() = %q, want %q", e, e.EventType(), c)
		}
	}
	if SchemaVersion != 1 {
		t.Errorf("SchemaVersion = %d", SchemaVersion)
	}
}

func TestDecodeEventRoundTrip(t *testing.T) {
	for _, e := range sampleEvents() {
		t.Run(e.EventType(), func(t *testing.T) {
			payload, err := json.Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			got, err := DecodeEvent(e.EventType(), SchemaVersion, payload)
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
		want         Event
	}{
		{TypeAccountOpened, `{"accountId":"0a11ce00-0000-4000-8000-000000000001","username":"alice"}`,
			AccountOpened{AccountID: aliceID, Username: "alice"}},
		{TypeCoinsGranted, `{"amount":1000,"reason":"welcome"}`, CoinsGranted{Amount: 1000, Reason: "welcome"}},
		{TypeCoinsGranted, `{"amount":5,"reason":"r","grantedBy":"root"}`, CoinsGranted{Amount: 5, Reason: "r", GrantedBy: "root"}},
		{TypeCoinsSent, `{"transferId":"7a5f0000-0000-4000-8000-0000000000f1","from":{"id":"0a11ce00-0000-4000-8000-000000000001","username":"alice"},"to":{"id":"0b0b0000-0000-4000-8000-000000000002","username":"bob"},"amount":300}`,
			CoinsSent{TransferID: transferID, From: aliceRef, To: bobRef, Amount: 300}},
		{TypeCoinsReceived, `{"transferId":"7a5f0000-0000-4000-8000-0000000000f1","from":{"id":"0b0b0000-0000-4000-8000-000000000002","username":"bob"},"to":{"id":"0a11ce00-0000-4000-8000-000000000001","username":"alice"},"amount":7}`,
			CoinsReceived{TransferID: transferID, From: bobRef, To: aliceRef, Amount: 7}},
		{TypeItemPurchased, `{"item":"cup","price":20,"quantity":1}`, ItemPurchased{Item: "cup", Price: 20, Quantity: 1}},
	} {
		got, err := DecodeEvent(tc.typ, SchemaVersion, []byte(tc.payload))
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
		{"unknown type", "CoinsBurned", SchemaVersion, `{"amount":1}`},
		{"empty type", "", SchemaVersion, `{}`},
		{"type in another case", "coinsgranted", SchemaVersion, string(valid)},
		{"schema version 0", TypeCoinsGranted, 0, string(valid)},
		{"schema version 2", TypeCoinsGranted, 2, string(valid)},
		{"schema version -1", TypeCoinsGranted, -1, string(valid)},
		{"empty payload", TypeCoinsGranted, SchemaVersion, ``},
		{"truncated", TypeCoinsGranted, SchemaVersion, `{"amount":1,`},
		{"not an object", TypeItemPurchased, SchemaVersion, `[1,2]`},
		{"string amount", TypeCoinsGranted, SchemaVersion, `{"amount":"ten","reason":"x"}`},
		{"fractional amount", TypeCoinsSent, SchemaVersion, `{"amount":1.5}`},
		{"amount beyond int64", TypeCoinsReceived, SchemaVersion, `{"amount":9223372036854775808}`},
		{"fractional quantity", TypeItemPurchased, SchemaVersion, `{"item":"cup","price":20,"quantity":0.5}`},
		{"bad uuid", TypeAccountOpened, SchemaVersion, `{"accountId":"not-a-uuid","username":"alice"}`},
		{"bad nested uuid", TypeCoinsSent, SchemaVersion, `{"from":{"id":"xyz"}}`},
		{"trailing garbage", TypeCoinsGranted, SchemaVersion, `{"amount":1,"reason":"x"} trailing`},
		{"binary", TypeAccountOpened, SchemaVersion, "\x00\xff\xfe"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := DecodeEvent(tc.typ, tc.version, []byte(tc.payload))
			if !errors.Is(err, ErrCorruptHistory) {
				t.Fatalf("DecodeEvent = %#v, %v; want ErrCorruptHistory", e, err)
			}
			checkSentinel(t, err, ErrCorruptHistory)
			if e != nil {
				t.Errorf("corrupt input decoded to %#v", e)
			}
		})
	}
}

// bankInvariantHolds checks granted + received == balance + sent + spent exactly.
func bankInvariantHolds(a *Account) bool {
	sum := func(cs ...Coins) *big.Int {
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
	f.Add(TypeCoinsSent, []byte(`{"from":{"id":"0a11ce00-0000-4000-8000-000000000001"},"amount":1000}`))
	f.Add(TypeCoinsSent, []byte(`{"from":{"id":"0a11ce00-0000-4000-8000-000000000001"},"amount":-9223372036854775808}`))
	f.Add(TypeCoinsReceived, []byte(`{"to":{"id":"0a11ce00-0000-4000-8000-000000000001"},"amount":9223372036854775807}`))
	f.Add(TypeItemPurchased, []byte(`{"item":"cup","price":4611686018427387904,"quantity":2}`))
	f.Add(TypeItemPurchased, []byte(`{"item":"cup","price":20,"quantity":0}`))
	f.Add(TypeCoinsGranted, []byte(`null`))
	f.Add(TypeAccountOpened, []byte(`{}`))
	f.Add("Unknown", []byte(`{}`))
	f.Add(TypeCoinsGranted, []byte(`{"amount":`))

	f.Fuzz(func(t *testing.T, eventType string, payload []byte) {
		e, err := DecodeEvent(eventType, SchemaVersion, payload)
		if err != nil {
			if !errors.Is(err, ErrCorruptHistory) {
				t.Fatalf("decode error %v is not ErrCorruptHistory", err)
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
		e2, err := DecodeEvent(eventType, SchemaVersion, again)
		if err != nil || !reflect.DeepEqual(e, e2) {
			t.Fatalf("round trip of %#v gave %#v, %v", e, e2, err)
		}

		// Folded into an opened account: refused as corrupt, or folded keeping the invariants.
		var a Account
		if err := a.ApplyAll(opened(aliceRef)); err != nil {
			t.Fatal(err)
		}
		version := a.Version
		if err := a.Apply(e); err != nil {
			if !errors.Is(err, ErrCorruptHistory) {
				t.Fatalf("Apply error %v is not ErrCorruptHistory", err)
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
			if _, ok := e.(AccountOpened); ok {
				t.Fatalf("second AccountOpened folded")
			}
		}

		// Folded into a new stream: only AccountOpened may start it.
		var fresh Account
		err = fresh.Apply(e)
		if _, isOpen := e.(AccountOpened); isOpen != (err == nil) {
			t.Fatalf("fresh.Apply(%#v) = %v", e, err)
		}
		if err != nil && !errors.Is(err, ErrCorruptHistory) {
			t.Fatalf("fresh.Apply error %v is not ErrCorruptHistory", err)
		}
	})
}
