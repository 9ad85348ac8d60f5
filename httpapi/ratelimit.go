package httpapi

import (
	"container/list"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Brute-force protection of POST /api/auth. Only failed logins (a wrong password) count:
// logging in, and the first login that creates an employee, cost nothing, so a whole office
// behind one address can log in every morning. Failures are counted twice, per username (a
// password guessed from many addresses) and per client address (many usernames tried from
// one), each in a token bucket: a burst of failures is allowed, then one more each
// Window/burst. While either bucket is empty, every attempt for that username or from that
// client is refused with 429 and Retry-After, before its password is checked; a correct
// password does not get through either, or the limit would not stop a guesser.
//
// Each attempt takes a token from both buckets before the password is checked, and gives them
// back unless it failed, so concurrent guesses cannot overdraw a bucket.

// DefaultMaxTracked bounds the usernames and the clients the limiter tracks, each.
const DefaultMaxTracked = 100_000

// AuthLimits configures the brute-force protection of POST /api/auth.
type AuthLimits struct {
	// UserFailures is how many failed logins to one username are allowed at once; 0 turns the
	// per-username limit off.
	UserFailures int
	// ClientFailures is the same for one client address (an IPv6 client by its /64 network);
	// 0 turns the per-client limit off.
	ClientFailures int
	// Window is how long a spent allowance takes to come back in full.
	Window time.Duration
	// TrustedProxies are the reverse proxies whose X-Forwarded-For names the client. A request
	// from anywhere else is the client's own, whatever headers it carries.
	TrustedProxies []netip.Prefix
	// MaxTracked bounds the usernames and the clients remembered, each (default
	// DefaultMaxTracked); past it, the one seen least recently is forgotten.
	MaxTracked int
}

// AuthLimiter limits failed logins. A nil *AuthLimiter limits nothing.
type AuthLimiter struct {
	users, clients *buckets // nil: that limit is off
	trusted        []netip.Prefix
	now            func() time.Time
}

// NewAuthLimiter returns a limiter for l, or nil when l limits nothing.
func NewAuthLimiter(l AuthLimits) *AuthLimiter {
	if (l.UserFailures <= 0 && l.ClientFailures <= 0) || l.Window <= 0 {
		return nil
	}
	if l.MaxTracked <= 0 {
		l.MaxTracked = DefaultMaxTracked
	}
	a := &AuthLimiter{trusted: l.TrustedProxies, now: time.Now}
	if l.UserFailures > 0 {
		a.users = newBuckets(l.UserFailures, l.Window, l.MaxTracked)
	}
	if l.ClientFailures > 0 {
		a.clients = newBuckets(l.ClientFailures, l.Window, l.MaxTracked)
	}
	return a
}

var errTooManyRequests = errors.New("too many requests")

// tooManyAttempts refuses a login while its username or client is out of attempts.
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

// attempt admits one login attempt for username from r's client, or refuses it with a
// *tooManyAttempts. The returned func must be called with the attempt's outcome.
func (l *AuthLimiter) attempt(r *http.Request, username string) (done func(failed bool), err error) {
	if l == nil {
		return func(bool) {}, nil
	}
	now := l.now()
	client := l.client(r)
	userWait, userOK := l.users.take(username, now)
	clientWait, clientOK := l.clients.take(client, now)
	if userOK && clientOK {
		return func(failed bool) {
			if !failed {
				now := l.now()
				l.users.give(username, now)
				l.clients.give(client, now)
			}
		}, nil
	}
	if userOK {
		l.users.give(username, now)
	}
	if clientOK {
		l.clients.give(client, now)
	}
	e := &tooManyAttempts{retryAfter: max(userWait, clientWait)}
	who := "for this username"
	switch {
	case !userOK && !clientOK:
		who = "for this username and from this address"
	case !clientOK:
		who = "from this address"
	}
	e.msg = fmt.Sprintf("too many failed logins %s; try again in %d seconds", who, e.retryAfterSeconds())
	return nil, e
}

// client names the client of r: its remote address, or, when that is a trusted proxy, the
// nearest address in X-Forwarded-For that is not one. An IPv6 client is named by its /64, the
// block one host usually holds.
func (l *AuthLimiter) client(r *http.Request) string {
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

// buckets is a token bucket per key in a bounded map. A bucket holds up to burst tokens and
// gains rate tokens a second. A bucket that a successful attempt leaves full says nothing a new
// one would not, so give drops it; when the map is full, the bucket touched least recently (the
// one that has had the longest to refill) is forgotten. Memory stays bounded whatever names
// clients send.
type buckets struct {
	burst, rate float64
	max         int

	mu  sync.Mutex
	m   map[string]*list.Element // of *bucket
	lru list.List                // most recently touched first
}

type bucket struct {
	key    string
	tokens float64
	at     time.Time
}

func newBuckets(burst int, window time.Duration, maxKeys int) *buckets {
	return &buckets{burst: float64(burst), rate: float64(burst) / window.Seconds(), max: maxKeys,
		m: make(map[string]*list.Element)}
}

// refill brings b's tokens up to now.
func (bs *buckets) refill(b *bucket, now time.Time) {
	if elapsed := now.Sub(b.at).Seconds(); elapsed > 0 {
		b.tokens = min(bs.burst, b.tokens+elapsed*bs.rate)
	}
	b.at = now
}

// take takes a token of key's bucket, or says how long until there is one. A nil *buckets
// (a limit turned off) always has one.
func (bs *buckets) take(key string, now time.Time) (time.Duration, bool) {
	if bs == nil {
		return 0, true
	}
	bs.mu.Lock()
	defer bs.mu.Unlock()
	var b *bucket
	if e, ok := bs.m[key]; ok {
		bs.lru.MoveToFront(e)
		b = e.Value.(*bucket)
		bs.refill(b, now)
	} else {
		if len(bs.m) >= bs.max {
			oldest := bs.lru.Back()
			bs.lru.Remove(oldest)
			delete(bs.m, oldest.Value.(*bucket).key)
		}
		b = &bucket{key: key, tokens: bs.burst, at: now}
		bs.m[key] = bs.lru.PushFront(b)
	}
	if b.tokens >= 1 {
		b.tokens--
		return 0, true
	}
	// To the millisecond: float rounding must not turn 40s into a Retry-After of 41.
	return time.Duration((1 - b.tokens) / bs.rate * float64(time.Second)).Round(time.Millisecond), false
}

// give returns a token that take took for an attempt that did not fail.
func (bs *buckets) give(key string, now time.Time) {
	if bs == nil {
		return
	}
	bs.mu.Lock()
	defer bs.mu.Unlock()
	e, ok := bs.m[key]
	if !ok {
		return // forgotten meanwhile: a new bucket is full anyway
	}
	b := e.Value.(*bucket)
	bs.refill(b, now)
	b.tokens = min(bs.burst, b.tokens+1)
	if b.tokens >= bs.burst {
		bs.lru.Remove(e)
		delete(bs.m, key)
	}
}
