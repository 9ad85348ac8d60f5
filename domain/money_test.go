package domain

import (
	"errors"
	"math"
	"math/big"
	"math/rand/v2"
	"testing"
)

const (
	maxI = Coins(math.MaxInt64)
	minI = Coins(math.MinInt64)
)

type moneyCase struct {
	c, d    Coins
	want    Coins
	wantErr bool
}

func checkMoney(t *testing.T, op string, f func(c, d Coins) (Coins, error), cases []moneyCase) {
	t.Helper()
	for _, tc := range cases {
		got, err := f(tc.c, tc.d)
		if tc.wantErr {
			if !errors.Is(err, ErrAmountOverflow) || got != 0 {
				t.Errorf("%d %s %d = %d, %v; want ErrAmountOverflow", tc.c, op, tc.d, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%d %s %d = %d, %v; want %d", tc.c, op, tc.d, got, err, tc.want)
		}
	}
}

func TestCoinsAdd(t *testing.T) {
	checkMoney(t, "+", Coins.Add, []moneyCase{
		{c: 1, d: 2, want: 3},
		{c: maxI, d: 0, want: maxI},
		{c: maxI - 1, d: 1, want: maxI},
		{c: maxI, d: 1, wantErr: true},
		{c: 1, d: maxI, wantErr: true},
		{c: maxI, d: maxI, wantErr: true},
		{c: minI, d: 0, want: minI},
		{c: minI + 1, d: -1, want: minI},
		{c: minI, d: -1, wantErr: true},
		{c: -1, d: minI, wantErr: true},
		{c: minI, d: minI, wantErr: true},
		{c: maxI, d: minI, want: -1},
		{c: minI, d: maxI, want: -1},
		{c: 0, d: minI, want: minI},
		{c: -5, d: 3, want: -2},
	})
}

func TestCoinsSub(t *testing.T) {
	checkMoney(t, "-", Coins.Sub, []moneyCase{
		{c: 3, d: 2, want: 1},
		{c: 0, d: 1, want: -1},
		{c: minI, d: 0, want: minI},
		{c: minI + 1, d: 1, want: minI},
		{c: minI, d: 1, wantErr: true},
		{c: maxI, d: -1, wantErr: true},
		{c: maxI - 1, d: -1, want: maxI},
		{c: maxI, d: maxI, want: 0},
		{c: -1, d: maxI, want: minI},
		{c: -2, d: maxI, wantErr: true},
		{c: 0, d: minI, wantErr: true},
		{c: 1, d: minI, wantErr: true},
		{c: maxI, d: minI, wantErr: true},
		{c: 0, d: maxI, want: -maxI},
	})
}

// TestCoinsSubMinInt64 covers c - MinInt64 for negative c, whose result is in range.
func TestCoinsSubMinInt64(t *testing.T) {
	checkMoney(t, "-", Coins.Sub, []moneyCase{
		{c: -1, d: minI, want: maxI},
		{c: minI, d: minI, want: 0},
		{c: -1000, d: minI, want: maxI - 999},
	})
}

func TestCoinsTimes(t *testing.T) {
	times := func(c, n Coins) (Coins, error) { return c.Times(int64(n)) }
	checkMoney(t, "×", times, []moneyCase{
		{c: 80, d: 3, want: 240},
		{c: 5, d: 0, want: 0},
		{c: maxI, d: 0, want: 0},
		{c: minI, d: 0, want: 0},
		{c: 0, d: maxI, want: 0},
		{c: maxI, d: 1, want: maxI},
		{c: minI, d: 1, want: minI},
		{c: maxI, d: 2, wantErr: true},
		{c: minI, d: 2, wantErr: true},
		{c: maxI / 2, d: 2, want: maxI - 1},
		{c: maxI/2 + 1, d: 2, wantErr: true},
		{c: minI / 2, d: 2, want: minI},
		{c: minI/2 - 1, d: 2, wantErr: true},
		{c: 1, d: maxI, want: maxI},
		{c: -1, d: maxI, want: -maxI},
		{c: 2, d: maxI, wantErr: true},
		{c: -2, d: maxI, wantErr: true},
		{c: maxI / 3, d: 3, want: maxI / 3 * 3},
		{c: maxI/3 + 1, d: 3, wantErr: true},
		{c: minI / 3, d: 3, want: minI / 3 * 3},
		{c: minI/3 - 1, d: 3, wantErr: true},
		{c: 1, d: -1, wantErr: true},
		{c: 0, d: -1, wantErr: true},
		{c: 1, d: minI, wantErr: true},
	})
}

// TestCoinsArithmeticMatchesBigInt cross-checks Add, Sub and Times against exact arithmetic
// on values drawn around the int64 edges.
func TestCoinsArithmeticMatchesBigInt(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	edges := []int64{0, 1, -1, 2, -2, 3, math.MaxInt64, math.MaxInt64 - 1, math.MinInt64, math.MinInt64 + 1,
		math.MaxInt64 / 2, math.MaxInt64/2 + 1, math.MinInt64 / 2, math.MinInt64/2 - 1, int64(MaxBalance), int64(MaxBalance) + 1}
	pick := func() int64 {
		switch rng.IntN(3) {
		case 0:
			return edges[rng.IntN(len(edges))]
		case 1:
			return edges[rng.IntN(len(edges))] + rng.Int64N(5) - 2 // may wrap: still a valid int64 input
		default:
			return int64(rng.Uint64())
		}
	}
	lo, hi := big.NewInt(math.MinInt64), big.NewInt(math.MaxInt64)
	check := func(op string, c, d int64, exact *big.Int, got Coins, err error) {
		t.Helper()
		if exact == nil || exact.Cmp(lo) < 0 || exact.Cmp(hi) > 0 {
			if !errors.Is(err, ErrAmountOverflow) {
				t.Fatalf("%d %s %d = %d, %v; want ErrAmountOverflow", c, op, d, got, err)
			}
			return
		}
		if err != nil || int64(got) != exact.Int64() {
			t.Fatalf("%d %s %d = %d, %v; want %s", c, op, d, got, err, exact)
		}
	}
	for range 200_000 {
		c, d := pick(), pick()
		bc, bd := big.NewInt(c), big.NewInt(d)
		got, err := Coins(c).Add(Coins(d))
		check("+", c, d, new(big.Int).Add(bc, bd), got, err)
		if !(d == math.MinInt64 && c < 0) { // that edge is covered by TestCoinsSubMinInt64
			got, err = Coins(c).Sub(Coins(d))
			check("-", c, d, new(big.Int).Sub(bc, bd), got, err)
		}
		var exact *big.Int // Times is defined for n >= 0 only
		if d >= 0 {
			exact = new(big.Int).Mul(bc, bd)
		}
		got, err = Coins(c).Times(d)
		check("×", c, d, exact, got, err)
	}
}

func TestPositiveAmount(t *testing.T) {
	for _, tc := range []struct {
		n       int64
		want    Coins
		wantErr error
	}{
		{n: 1, want: 1},
		{n: 42, want: 42},
		{n: int64(MaxBalance), want: MaxBalance},
		{n: int64(MaxBalance) + 1, wantErr: ErrAmountOverflow},
		{n: math.MaxInt64, wantErr: ErrAmountOverflow},
		{n: 0, wantErr: ErrInvalidAmount},
		{n: -1, wantErr: ErrInvalidAmount},
		{n: math.MinInt64, wantErr: ErrInvalidAmount},
	} {
		got, err := PositiveAmount(tc.n)
		if tc.wantErr != nil {
			if got != 0 {
				t.Errorf("PositiveAmount(%d) = %d with an error", tc.n, got)
			}
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("PositiveAmount(%d) error = %v, want %v", tc.n, err, tc.wantErr)
				continue
			}
			checkSentinel(t, err, tc.wantErr)
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("PositiveAmount(%d) = %d, %v; want %d", tc.n, got, err, tc.want)
		}
	}
}

func TestMoneyConstants(t *testing.T) {
	if WelcomeGrant != 1000 {
		t.Errorf("WelcomeGrant = %d, want 1000", WelcomeGrant)
	}
	// Nine million accounts at the cap must still fit in int64.
	if _, err := MaxBalance.Times(9_000_000); err != nil {
		t.Errorf("MaxBalance × 9e6 overflows: %v", err)
	}
}

func TestBalanceChange(t *testing.T) {
	cases := []struct {
		e    Event
		want Coins
	}{
		{AccountOpened{}, 0},
		{CoinsGranted{Amount: 7}, 7},
		{CoinsReceived{Amount: 5}, 5},
		{CoinsSent{Amount: 3}, -3},
		{ItemPurchased{Item: "pen", Price: 10, Quantity: 2}, -20},
	}
	for _, c := range cases {
		if got := BalanceChange(c.e); got != c.want {
			t.Errorf("BalanceChange(%T) = %d, want %d", c.e, got, c.want)
		}
	}
}
