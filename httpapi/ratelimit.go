package httpapi

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"strings"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"
)

// Abuse protection of POST /api/auth, in token buckets (golang.org/x/time/rate) kept in bounded
// maps (golang-lru):
//
//   - Failed logins (a wrong password) are counted per username from one client address, per
//     client address, and per username from anywhere, the last with a higher, slower allowance.
//     A guesser at one address is stopped by the first two; one spread over many addresses by
//     the third, a ceiling that a victim's own attempts from elsewhere stay under until that
//     many failures were made. Logins that succeed cost nothing.
//   - New accounts are counted per client address, since each one is given coins.
//
// An attempt is refused with 429 before its password is checked while one of its allowances is
// spent; a failure is charged only once verified. Attempts running at once are all admitted,
// so the outcome is checked against the allowances again: a failure that found nothing left to
// charge, or a success after failures of the same key used up what was left, answers 429 too,
// so a burst of concurrent guesses learns no more than the allowance.

// DefaultMaxTracked bounds the keys each allowance tracks.
const DefaultMaxTracked = 100_000

// AuthLimits configures the abuse protection of POST /api/auth. A count of 0 turns its limit off.
type AuthLimits struct {
	// UserClientFailures is how many failed logins to one username from one client address are
	// allowed at once, and ClientFailures how many from one client address to any usernames;
	// both come back in full over Window.
	UserClientFailures, ClientFailures int
	Window                             time.Duration
	// UserFailures is the ceiling of failed logins to one username from all addresses together;
	// it comes back in full over UserWindow.
	UserFailures int
	UserWindow   time.Duration
	// SignupsPerHour is how many accounts one client address may create an hour.
	SignupsPerHour int
	// TrustedProxies are the reverse proxies whose X-Forwarded-For names the client. A request
	// from anywhere else is the client's own, whatever headers it carries.
	TrustedProxies []netip.Prefix
	// MaxTracked bounds the keys remembered by each allowance (default DefaultMaxTracked); past
	// it, the one used least recently is forgotten.
	MaxTracked int
}

// AuthLimiter applies AuthLimits. A nil *AuthLimiter limits nothing.
type AuthLimiter struct {
	userClient, client, user, signup *allowance // nil: that limit is off
	trusted                          []netip.Prefix
	now                              func() time.Time
}

// NewAuthLimiter returns a limiter for l, or nil when l limits nothing.
func NewAuthLimiter(l AuthLimits) *AuthLimiter {
	if l.MaxTracked <= 0 {
		l.MaxTracked = DefaultMaxTracked
	}
	a := &AuthLimiter{
		userClient: newAllowance(l.UserClientFailures, l.Window, l.MaxTracked,
			"too many failed logins for this username from this address"),
		client:  newAllowance(l.ClientFailures, l.Window, l.MaxTracked, "too many failed logins from this address"),
		user:    newAllowance(l.UserFailures, l.UserWindow, l.MaxTracked, "too many failed logins for this username"),
		signup:  newAllowance(l.SignupsPerHour, time.Hour, l.MaxTracked, "too many new accounts from this address"),
		trusted: l.TrustedProxies,
		now:     time.Now,
	}
	if a.userClient == nil && a.client == nil && a.user == nil && a.signup == nil {
		return nil
	}
	return a
}

var errTooManyRequests = errors.New("too many requests")

// tooManyAttempts refuses a request while one of its allowances is spent.
type tooManyAttempts struct {
	msg        string
	retryAfter time.Duration
}

func (e *tooManyAttempts) Error() string { return e.msg }
func (e *tooManyAttempts) Unwrap() error { return errTooManyRequests }

// retryAfterSeconds is the Retry-After value: whole seconds, rounded up, at least 1.
func (e *tooManyAttempts) retryAfterSeconds() int {
	return max(1, int(math.Ceil(e.retryAfter.Seconds())))
}

// loginAttempt is one POST /api/auth as the limiter sees it.
type loginAttempt struct {
	l                  *AuthLimiter
	user, client, pair string
}

// attempt starts the limiter's view of a login of username from r's client.
func (l *AuthLimiter) attempt(r *http.Request, username string) loginAttempt {
	if l == nil {
		return loginAttempt{}
	}
	c := l.clientOf(r)
	// NUL cannot occur in a username, so the pair's key is unambiguous.
	return loginAttempt{l: l, user: username, client: c, pair: username + "\x00" + c}
}

// admit refuses the attempt while one of its failure allowances is spent. It is asked before
// the password is checked, and again after a correct one.
func (a loginAttempt) admit() error {
	if a.l == nil {
		return nil
	}
	now := a.l.now()
	return refusal(a.l.userClient.spent(a.pair, now), a.l.client.spent(a.client, now), a.l.user.spent(a.user, now))
}

// failed charges a verified failure to every allowance of the attempt. It returns a refusal when
// one of them had nothing left (the attempt ran alongside others that spent it), to be answered
// instead of the failure.
func (a loginAttempt) failed() error {
	if a.l == nil {
		return nil
	}
	now := a.l.now()
	// Every allowance is charged, whatever the others say: the guess was made.
	pair, client, user := a.l.userClient.take(a.pair, now), a.l.client.take(a.client, now), a.l.user.take(a.user, now)
	if pair && client && user {
		return nil
	}
	return refusal(a.l.userClient.spent(a.pair, now), a.l.client.spent(a.client, now), a.l.user.spent(a.user, now),
		&tooManyAttempts{msg: "too many failed logins", retryAfter: time.Second})
}

// signup takes one of the client's new accounts, or refuses it. A token taken for an account
// that then is not created (its name was taken a moment before) is not given back.
func (a loginAttempt) signup() error {
	if a.l == nil || a.l.signup.take(a.client, a.l.now()) {
		return nil
	}
	now := a.l.now()
	return refusal(a.l.signup.spent(a.client, now), &tooManyAttempts{msg: "too many new accounts from this address", retryAfter: time.Second})
}

// refusal is the refusal with the longest wait among refusals, or nil when there is none.
func refusal(refusals ...*tooManyAttempts) error {
	var worst *tooManyAttempts
	for _, r := range refusals {
		if r != nil && (worst == nil || r.retryAfter > worst.retryAfter) {
			worst = r
		}
	}
	if worst == nil {
		return nil
	}
	worst.msg = fmt.Sprintf("%s; try again in %d seconds", worst.msg, worst.retryAfterSeconds())
	return worst
}

// allowance is a token bucket per key: n tokens, coming back in full over a window. The keys
// are bounded; the one used least recently is forgotten first, having had the longest to refill.
type allowance struct {
	every rate.Limit
	burst int
	keys  *lru.Cache[string, *rate.Limiter]
	msg   string
}

// newAllowance returns an allowance of n per window, or nil (no limit) when n or window is 0.
func newAllowance(n int, window time.Duration, maxKeys int, msg string) *allowance {
	if n <= 0 || window <= 0 {
		return nil
	}
	keys, err := lru.New[string, *rate.Limiter](maxKeys)
	if err != nil {
		panic(err) // only for a size below 1, which NewAuthLimiter rules out
	}
	return &allowance{every: rate.Limit(float64(n) / window.Seconds()), burst: n, keys: keys, msg: msg}
}

// spent refuses key while its bucket has no whole token; a key never charged has a full one.
func (a *allowance) spent(key string, now time.Time) *tooManyAttempts {
	if a == nil {
		return nil
	}
	lim, ok := a.keys.Peek(key)
	if !ok {
		return nil
	}
	missing := 1 - lim.TokensAt(now)
	if missing <= 0 {
		return nil
	}
	// To the millisecond: float rounding must not turn 40s into a Retry-After of 41.
	wait := time.Duration(missing / float64(a.every) * float64(time.Second)).Round(time.Millisecond)
	return &tooManyAttempts{msg: a.msg, retryAfter: wait}
}

// take takes a token from key's bucket, reporting whether it had one.
func (a *allowance) take(key string, now time.Time) bool {
	if a == nil {
		return true
	}
	lim, ok := a.keys.Get(key)
	if !ok {
		// Another request may add the key meanwhile; then its limiter is the one.
		fresh := rate.NewLimiter(a.every, a.burst)
		if lim, ok, _ = a.keys.PeekOrAdd(key, fresh); !ok {
			lim = fresh
		}
	}
	return lim.AllowN(now, 1)
}

// clientOf names the client of r: its remote address, or, when that is a trusted proxy, the
// nearest address in X-Forwarded-For that is not one. An IPv6 client is named by its /64, the
// block one host usually holds.
func (l *AuthLimiter) clientOf(r *http.Request) string {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr // not an IP connection; the address is all there is
	}
	addr := ap.Addr().Unmap()
	if l.trusts(addr) {
		addr = l.forwardedFor(r, addr)
	}
	if addr.Is6() {
		return netip.PrefixFrom(addr, 64).Masked().String()
	}
	return addr.String()
}

func (l *AuthLimiter) trusts(addr netip.Addr) bool {
	for _, p := range l.trusted {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// forwardedFor walks X-Forwarded-For from its end, where the trusted proxies appended what
// they saw, past the trusted proxies, to the address that connected to the first of them.
// Entries further left are whatever the client sent and are ignored. Without a usable entry
// the request is the proxy's own.
func (l *AuthLimiter) forwardedFor(r *http.Request, proxy netip.Addr) netip.Addr {
	var hops []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(v, ",")...)
	}
	for i := len(hops) - 1; i >= 0; i-- {
		hop := strings.TrimSpace(hops[i])
		addr, err := netip.ParseAddr(hop)
		if err != nil {
			ap, perr := netip.ParseAddrPort(hop)
			if perr != nil {
				return proxy
			}
			addr = ap.Addr()
		}
		addr = addr.Unmap()
		if !l.trusts(addr) {
			return addr
		}
		proxy = addr
	}
	return proxy
}
