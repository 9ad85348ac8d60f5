package auth

import (
	"container/list"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

// ErrInvalidToken is wrapped by every Verify failure so HTTP handlers can map
// the whole family to 401 with a single errors.Is check.
var ErrInvalidToken = errors.New("invalid token")

const (
	// rolesClaim names the bearer's roles when the token was minted: a hint for clients, never
	// trusted for a privileged request, which asks the database. Private and short because it
	// rides on every request.
	rolesClaim = "rol"
	// maxTokenLen caps work done on attacker-supplied input before any
	// cryptography; our own tokens are a few hundred bytes.
	maxTokenLen = 8 << 10
	// clockSkew tolerates small drift between replicas without meaningfully
	// extending a token's life.
	clockSkew = 5 * time.Second
)

// Claims is what a verified token asserts about its bearer.
type Claims struct {
	Username string
	// Roles are the roles the token names: only a hint (see rolesClaim).
	Roles     Roles
	ExpiresAt time.Time
}

// Issuer mints session tokens. It is safe for concurrent use.
type Issuer struct {
	key      ed25519.PrivateKey
	issuer   string
	audience string
	ttl      time.Duration
	now      func() time.Time // replaced in tests to mint tokens at chosen times
}

// NewIssuer returns an Issuer whose tokens carry the given iss and aud and
// expire ttl after issue. Keeping ttl short is what makes the absence of a
// revocation list acceptable.
func NewIssuer(key ed25519.PrivateKey, issuer, audience string, ttl time.Duration) *Issuer {
	return &Issuer{key: key, issuer: issuer, audience: audience, ttl: ttl, now: time.Now}
}

// Issue returns a signed compact JWT for username naming its roles, as a hint. The roles claim
// is only emitted when there are roles so ordinary tokens stay minimal.
func (i *Issuer) Issue(username string, roles ...Role) (string, error) {
	if username == "" {
		return "", errors.New("auth: issuing token: empty username")
	}
	if i.ttl <= 0 {
		return "", fmt.Errorf("auth: issuing token: non-positive ttl %s", i.ttl)
	}
	if len(i.key) != ed25519.PrivateKeySize {
		return "", fmt.Errorf("auth: issuing token: invalid Ed25519 private key length %d", len(i.key))
	}
	// A unique jti lets later features (audit, revocation) name a token
	// without storing the token itself.
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", fmt.Errorf("auth: issuing token: generating jti: %w", err)
	}
	now := i.now()
	b := jwt.NewBuilder().
		Subject(username).
		Issuer(i.issuer).
		Audience([]string{i.audience}).
		IssuedAt(now).
		NotBefore(now).
		Expiration(now.Add(i.ttl)).
		JwtID(base64.RawURLEncoding.EncodeToString(id[:]))
	if rs := RolesOf(roles...); rs != 0 {
		names := make([]string, 0, len(roles))
		for _, r := range rs.List() {
			names = append(names, string(r))
		}
		b = b.Claim(rolesClaim, names)
	}
	tok, err := b.Build()
	if err != nil {
		return "", fmt.Errorf("auth: issuing token: building claims: %w", err)
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(jwa.EdDSA, i.key))
	if err != nil {
		return "", fmt.Errorf("auth: issuing token: signing: %w", err)
	}
	return string(signed), nil
}

// Verifier checks session tokens and remembers recently verified ones so a
// client hammering the API does not pay for a signature check per request.
// It is safe for concurrent use.
type Verifier struct {
	key      ed25519.PublicKey
	issuer   string
	audience string
	now      func() time.Time // replaced in tests to exercise expiry
	cache    *tokenCache      // nil when caching is disabled
	hits     atomic.Uint64
	misses   atomic.Uint64
}

// NewVerifier returns a Verifier accepting only EdDSA tokens signed by key
// for the given iss and aud. cacheSize bounds how many verified tokens are
// remembered; 0 (or less) disables the cache.
func NewVerifier(key ed25519.PublicKey, issuer, audience string, cacheSize int) *Verifier {
	v := &Verifier{key: key, issuer: issuer, audience: audience, now: time.Now}
	if cacheSize > 0 {
		v.cache = newTokenCache(cacheSize)
	}
	return v
}

// CacheStats reports cache hits and misses since the Verifier was created,
// so operators can tell whether the cache size is earning its memory.
func (v *Verifier) CacheStats() (hits, misses uint64) {
	return v.hits.Load(), v.misses.Load()
}

// tokenError keeps the client-facing message free of library internals while
// still exposing the underlying cause to errors.Is/As for server-side logs.
type tokenError struct {
	reason string
	cause  error
}

func (e *tokenError) Error() string { return ErrInvalidToken.Error() + ": " + e.reason }

func (e *tokenError) Unwrap() []error {
	if e.cause == nil {
		return []error{ErrInvalidToken}
	}
	return []error{ErrInvalidToken, e.cause}
}

func invalid(reason string, cause error) error {
	return &tokenError{reason: reason, cause: cause}
}

// Verify returns the claims of a valid token. Every failure wraps
// ErrInvalidToken and its message is safe to show to the client.
func (v *Verifier) Verify(token string) (Claims, error) {
	if token == "" {
		return Claims{}, invalid("empty token", nil)
	}
	if len(token) > maxTokenLen {
		return Claims{}, invalid("token too large", nil)
	}
	// Only compact serialisation is ours; refusing anything else up front
	// keeps the JSON form (multiple signatures, unprotected headers) and
	// whitespace-padded variants out of reach before any work is done.
	if !isCompactJWS(token) {
		return Claims{}, invalid("malformed token", nil)
	}

	var key [sha256.Size]byte
	if v.cache != nil {
		key = sha256.Sum256([]byte(token))
		if c, ok := v.cache.get(key, v.now()); ok {
			v.hits.Add(1)
			return c, nil
		}
		v.misses.Add(1)
	}

	c, from, err := v.parse(token)
	if err != nil {
		return Claims{}, err
	}
	if v.cache != nil && v.now().Before(c.ExpiresAt) {
		v.cache.put(key, c, from)
	}
	return c, nil
}

// isCompactJWS reports whether s is three dot-separated base64url segments.
func isCompactJWS(s string) bool {
	dots := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '.':
			dots++
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return dots == 2
}

// parse verifies token and returns its claims and the earliest time the checks accept it at
// (by nbf and iat, within clockSkew), zero if it names none.
func (v *Verifier) parse(token string) (Claims, time.Time, error) {
	// Re-encoding the header or payload breaks the signature, but the
	// signature's own encoding is unprotected: lenient base64 would let its
	// unused trailing bits vary, giving one token several spellings that all
	// verify and each take a cache slot.
	encSig := token[strings.LastIndexByte(token, '.')+1:]
	sig, err := base64.RawURLEncoding.Strict().DecodeString(encSig)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return Claims{}, time.Time{}, invalid("bad signature", err)
	}

	tok, err := jwt.Parse([]byte(token),
		// The algorithm is fixed by us, never read from the header, which
		// rules out "none" and HMAC-with-public-key confusion.
		jwt.WithKey(jwa.EdDSA, v.key),
		jwt.WithValidate(true),
		jwt.WithIssuer(v.issuer),
		jwt.WithAudience(v.audience),
		jwt.WithRequiredClaim(jwt.ExpirationKey),
		jwt.WithRequiredClaim(jwt.SubjectKey),
		jwt.WithAcceptableSkew(clockSkew),
		jwt.WithClock(jwt.ClockFunc(v.now)),
	)
	if err != nil {
		return Claims{}, time.Time{}, invalid(parseFailureReason(err), err)
	}
	if tok.Subject() == "" {
		return Claims{}, time.Time{}, invalid("empty subject", nil)
	}
	c := Claims{Username: tok.Subject(), ExpiresAt: tok.Expiration()}
	if raw, ok := tok.Get(rolesClaim); ok {
		roles, err := parseRoles(raw)
		if err != nil {
			return Claims{}, time.Time{}, invalid("malformed roles claim", err)
		}
		c.Roles = roles
	}
	return c, validFrom(tok.NotBefore(), tok.IssuedAt()), nil
}

// parseRoles reads the roles claim: a JSON array of role names.
func parseRoles(raw any) (Roles, error) {
	list, ok := raw.([]any)
	if !ok {
		return 0, fmt.Errorf("roles claim is %T, want an array", raw)
	}
	var rs Roles
	for _, v := range list {
		name, ok := v.(string)
		if !ok {
			return 0, fmt.Errorf("role %v is not a string", v)
		}
		r, err := ParseRole(name)
		if err != nil {
			return 0, err
		}
		rs |= RolesOf(r)
	}
	return rs, nil
}

// validFrom is the earliest time jwt.Validate accepts a token with these nbf and iat: it
// ignores an absent (zero or epoch) claim, truncates both sides to whole seconds and allows
// clockSkew. A cache hit must refuse the token before it, as a check would; the result is a
// whole second, so comparing it with an untruncated clock gives the checks' answer.
func validFrom(nbf, iat time.Time) time.Time {
	var from time.Time
	for _, t := range []time.Time{nbf, iat} {
		if t.IsZero() || t.Unix() == 0 {
			continue
		}
		if t = t.Truncate(time.Second).Add(-clockSkew); t.After(from) {
			from = t
		}
	}
	return from
}

func parseFailureReason(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired()):
		return "token expired"
	case errors.Is(err, jwt.ErrTokenNotYetValid()), errors.Is(err, jwt.ErrInvalidIssuedAt()):
		return "token not yet valid"
	case errors.Is(err, jwt.ErrInvalidIssuer()):
		return "wrong issuer"
	case errors.Is(err, jwt.ErrInvalidAudience()):
		return "wrong audience"
	case errors.Is(err, jwt.ErrRequiredClaim()):
		return "missing required claim"
	case jws.IsVerificationError(err):
		return "bad signature"
	default:
		return "malformed token"
	}
}

// tokenCache is a fixed-capacity LRU of verified claims keyed by the token's
// SHA-256, so memory stays bounded and raw bearer tokens are not retained.
// Only tokens that passed every check enter. Entries need no tag of the key
// that verified them: a Verifier's key never changes (a new key means a new
// Verifier, with an empty cache), and there is no revocation list to consult.
type tokenCache struct {
	mu    sync.Mutex
	size  int
	ll    *list.List // front is most recently used
	items map[[sha256.Size]byte]*list.Element
}

type cacheEntry struct {
	key       [sha256.Size]byte
	claims    Claims
	validFrom time.Time // see validFrom; zero when the token names no nbf or iat
}

func newTokenCache(size int) *tokenCache {
	return &tokenCache{size: size, ll: list.New(), items: make(map[[sha256.Size]byte]*list.Element, size)}
}

// get serves an entry only while its token is unexpired; an expired entry is
// dropped on sight so it cannot outlive exp by sitting in the cache. The
// expiry test is stricter than the checks (no skew): past exp, a token within
// the skew is verified afresh. Before validFrom (a clock stepped back) it is a
// miss too, and the checks refuse the token as not yet valid.
func (c *tokenCache) get(key [sha256.Size]byte, now time.Time) (Claims, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		return Claims{}, false
	}
	e := el.Value.(*cacheEntry)
	if !now.Before(e.claims.ExpiresAt) {
		c.ll.Remove(el)
		delete(c.items, key)
		return Claims{}, false
	}
	if now.Before(e.validFrom) {
		return Claims{}, false
	}
	c.ll.MoveToFront(el)
	return e.claims, true
}

func (c *tokenCache) put(key [sha256.Size]byte, claims Claims, from time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		e := el.Value.(*cacheEntry)
		e.claims, e.validFrom = claims, from
		c.ll.MoveToFront(el)
		return
	}
	if c.ll.Len() >= c.size {
		oldest := c.ll.Back()
		c.ll.Remove(oldest)
		delete(c.items, oldest.Value.(*cacheEntry).key)
	}
	c.items[key] = c.ll.PushFront(&cacheEntry{key: key, claims: claims, validFrom: from})
}

func (c *tokenCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}
