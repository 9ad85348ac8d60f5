package main

import (
	"fmt"
	"math/rand/v2"
)

// op is one of the contract's operations the workload drives.
type op int

const (
	opInfo op = iota
	opBuy
	opSend
	numOps
)

func (o op) String() string {
	switch o {
	case opInfo:
		return "info"
	case opBuy:
		return "buy"
	case opSend:
		return "sendCoin"
	}
	return fmt.Sprintf("op(%d)", int(o))
}

// The company's mix: 75% info, 15% buy, 10% sendCoin.
const (
	shareInfo = 0.75
	shareBuy  = 0.15
)

// maxTransfer is the largest amount a sendCoin of the workload moves (1..maxTransfer).
const maxTransfer = 25

// opFor maps a uniform x in [0, 1) to an operation in the company's proportions.
func opFor(x float64) op {
	switch {
	case x < shareInfo:
		return opInfo
	case x < shareInfo+shareBuy:
		return opBuy
	default:
		return opSend
	}
}

// request is one request of the workload; users are indexes into the seeded employees.
type request struct {
	op     op
	user   int
	to     int    // sendCoin: the recipient, never user
	item   string // buy
	amount int64  // sendCoin: 1..maxTransfer
}

// workload picks requests: random employees out of users, and with hotShare > 0 that share of
// all requests made by one hot employee (index 0), the rest spread over the others.
type workload struct {
	users    int
	hotShare float64
	items    []string
}

func (w workload) validate() error {
	if w.users < 2 {
		return fmt.Errorf("the workload needs at least 2 employees (sendCoin sends to another), got %d", w.users)
	}
	if w.hotShare < 0 || w.hotShare >= 1 {
		return fmt.Errorf("hot share must be in [0, 1), got %g", w.hotShare)
	}
	if len(w.items) == 0 {
		return fmt.Errorf("no items to buy")
	}
	return nil
}

// next draws the next request from r. It is called by the dispatcher alone, so one seeded r
// makes a run's sequence of requests reproducible.
func (w workload) next(r *rand.Rand) request {
	q := request{op: opFor(r.Float64()), user: w.pickUser(r)}
	switch q.op {
	case opBuy:
		q.item = w.items[r.IntN(len(w.items))]
	case opSend:
		q.to = pickOther(r, w.users, q.user)
		q.amount = 1 + r.Int64N(maxTransfer)
	}
	return q
}

func (w workload) pickUser(r *rand.Rand) int {
	if w.hotShare > 0 {
		if r.Float64() < w.hotShare {
			return 0
		}
		return 1 + r.IntN(w.users-1)
	}
	return r.IntN(w.users)
}

// pickOther returns a uniform index in [0, n) other than not.
func pickOther(r *rand.Rand, n, not int) int {
	j := r.IntN(n - 1)
	if j >= not {
		j++
	}
	return j
}
