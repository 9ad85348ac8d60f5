package domain

import (
	"errors"
	"fmt"
	"math"
)

// Coins is an amount of the company currency. Money is never a float.
type Coins int64

// MaxBalance caps what grants can lift a balance to. Transfers only move coins and purchases
// only remove them, so no balance can exceed the total supply, and with this cap the total
// supply stays below int64 for fewer than nine million accounts.
const MaxBalance Coins = 1_000_000_000_000

// WelcomeGrant is what every account is opened with.
const WelcomeGrant Coins = 1000

// ErrAmountOverflow means an amount or a sum of amounts is out of range.
var ErrAmountOverflow = errors.New("amount out of range")

// ErrInvalidAmount means an amount that must be positive is not.
var ErrInvalidAmount = errors.New("amount must be a positive integer")

// PositiveAmount validates an amount a client asked for.
func PositiveAmount(n int64) (Coins, error) {
	if n <= 0 {
		return 0, fmt.Errorf("%w, got %d", ErrInvalidAmount, n)
	}
	if Coins(n) > MaxBalance {
		return 0, fmt.Errorf("%w: %d is above the maximum of %d", ErrAmountOverflow, n, MaxBalance)
	}
	return Coins(n), nil
}

// Add returns c+d, or ErrAmountOverflow instead of wrapping around.
func (c Coins) Add(d Coins) (Coins, error) {
	if (d > 0 && c > math.MaxInt64-d) || (d < 0 && c < math.MinInt64-d) {
		return 0, fmt.Errorf("%w: %d + %d", ErrAmountOverflow, c, d)
	}
	return c + d, nil
}

// Sub returns c-d, or ErrAmountOverflow instead of wrapping around.
func (c Coins) Sub(d Coins) (Coins, error) {
	if (d < 0 && c > math.MaxInt64+d) || (d > 0 && c < math.MinInt64+d) {
		return 0, fmt.Errorf("%w: %d - %d", ErrAmountOverflow, c, d)
	}
	return c - d, nil
}

// Times returns c*n for n >= 0, or ErrAmountOverflow instead of wrapping around.
func (c Coins) Times(n int64) (Coins, error) {
	if n < 0 || (n > 0 && (c > math.MaxInt64/Coins(n) || c < math.MinInt64/Coins(n))) {
		return 0, fmt.Errorf("%w: %d × %d", ErrAmountOverflow, c, n)
	}
	return c * Coins(n), nil
}
