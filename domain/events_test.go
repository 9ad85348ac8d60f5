package domain

import "testing"

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
