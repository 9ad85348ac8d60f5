package domain

import (
	"reflect"
	"testing"
)

// decodeCases are payloads as PostgreSQL's jsonb gives them back, and variants the fast path
// must decode exactly as decodeJSON does or hand over to it.
var decodeCases = []struct {
	eventType string
	payload   string
}{
	{TypeAccountOpened, `{"username": "alice", "accountId": "0190a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6b"}`},
	{TypeCoinsGranted, `{"amount": 1000, "reason": "welcome"}`},
	{TypeCoinsGranted, `{"amount": 50, "reason": "hackathon winner", "grantedBy": "admin"}`},
	{TypeCoinsSent, `{"to": {"id": "0190a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6b", "username": "bob"}, "from": {"id": "0190a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6c", "username": "ünïcode"}, "amount": 17, "transferId": "0190a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6d"}`},
	{TypeCoinsReceived, `{"to": {"id": "0190a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6b", "username": "bob"}, "from": {"id": "0190a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6c", "username": "alice"}, "amount": 17, "transferId": "0190a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6d"}`},
	{TypeItemPurchased, `{"item": "pink-hoody", "price": 500, "quantity": 1}`},
	{TypeItemPurchased, `{}`},
	{TypeItemPurchased, ` {"quantity":-0,"item":"cup","price":20} `},
	{TypeAccountOpened, `{"accountId": "{0190a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6b}"}`},
	// Handed over.
	{TypeItemPurchased, `{"item": "cup", "price": 20.0, "quantity": 1}`},
	{TypeItemPurchased, `{"Item": "cup", "price": 20, "quantity": 1}`},
	{TypeItemPurchased, `{"item": "cup", "item": "pen"}`},
	{TypeItemPurchased, `{"item": "c\u0075p"}`},
	{TypeItemPurchased, `{"item": null}`},
	{TypeItemPurchased, `{"item": "cup", "extra": true}`},
	{TypeCoinsGranted, `{"amount": 99999999999999999999}`},
	{TypeCoinsGranted, `{"amount": 1e3}`},
	{TypeAccountOpened, `{"accountId": "not a uuid"}`},
	{TypeCoinsSent, `{"to": {"id": "0190a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6b", "id": "0190a3c4-5b6d-7e8f-9a0b-1c2d3e4f5a6c"}}`},
	{TypeCoinsSent, `{"to": []}`},
	{TypeCoinsSent, `{"amount": 1} {}`},
	{"SomethingElse", `{}`},
}

// ordinaryDecodeCases is how many of decodeCases the fast path must decode itself.
const ordinaryDecodeCases = 9

func TestFastDecodeIsDecodeEvent(t *testing.T) {
	for i, c := range decodeCases {
		checkDecode(t, c.eventType, 1, []byte(c.payload))
		if _, ok := fastDecode(c.eventType, 1, []byte(c.payload)); ok != (i < ordinaryDecodeCases) {
			t.Errorf("fast path on %s %s: %v", c.eventType, c.payload, ok)
		}
	}
	checkDecode(t, TypeCoinsGranted, 2, []byte(`{"amount": 1}`))
}

func FuzzFastDecode(f *testing.F) {
	for _, c := range decodeCases {
		f.Add(c.eventType, []byte(c.payload))
	}
	f.Fuzz(func(t *testing.T, eventType string, payload []byte) { checkDecode(t, eventType, 1, payload) })
}

func checkDecode(t *testing.T, eventType string, schema int, payload []byte) {
	t.Helper()
	want, wantErr := decodeJSON(eventType, schema, payload)
	got, ok := fastDecode(eventType, schema, payload)
	if !ok {
		return // handed over
	}
	if wantErr != nil {
		t.Fatalf("fast path decoded %s %q, which decodeJSON refuses: %v", eventType, payload, wantErr)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("fast path decoded %s %q as %#v, decodeJSON as %#v", eventType, payload, got, want)
	}
}

func BenchmarkDecode(b *testing.B) {
	payload := []byte(decodeCases[3].payload)
	b.Run("fast", func(b *testing.B) {
		for b.Loop() {
			if _, err := DecodeEvent(TypeCoinsSent, 1, payload); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		for b.Loop() {
			if _, err := decodeJSON(TypeCoinsSent, 1, payload); err != nil {
				b.Fatal(err)
			}
		}
	})
}
