package app

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/eventstore"
)

// Idempotency keys make a command safe to retry: a client that does not know whether its
// request ran (a timeout, a dropped connection) sends it again under the same key and gets the
// first outcome instead of a second execution.
//
// A keyed command that succeeds records its key in the transaction that appends its events
// (eventstore.InTransaction), so the key exists exactly when the effect does. A command the
// domain refuses (not enough coin, an unknown item or recipient, ...) records the refusal in a
// short transaction of its own: a retry replays it instead of deciding again, which could give
// a different answer after other commands. Failures that are no answer (the account stayed
// busy, the database failed, the request was cancelled) record nothing and may be retried.
//
// Whichever request records a key first decides its outcome; a request that loses that race
// (its insert finds the key taken) rolls back and replays the winner's outcome. So concurrent
// requests with one key wait for the first: in this process they queue on the account's lock,
// across processes on the stream lock or the key's row, and then return its result.
//
// Requests without a key take none of these steps and keep the store's group commit.

// MaxIdempotencyKeyLength is the longest idempotency key, in bytes.
const MaxIdempotencyKeyLength = 255

// DefaultIdempotencyRetention is how long a key is remembered unless Config says otherwise.
const DefaultIdempotencyRetention = 24 * time.Hour

// idempotencyCleanupEvery is how often RunIdempotencyCleanup deletes expired keys.
const idempotencyCleanupEvery = 10 * time.Minute

var (
	// ErrInvalidIdempotencyKey: a key is empty, too long, or not printable ASCII.
	ErrInvalidIdempotencyKey = errors.New("invalid idempotency key")
	// ErrIdempotencyKeyReused: a key already names a different request of the same caller.
	ErrIdempotencyKeyReused = errors.New("idempotency key already used for a different request")
)

// errKeyTaken means another request recorded the key first; its outcome is replayed.
var errKeyTaken = errors.New("idempotency key recorded by another request")

// ValidateIdempotencyKey checks a key: 1 to 255 printable ASCII characters (space to tilde).
func ValidateIdempotencyKey(key string) error {
	if key == "" || len(key) > MaxIdempotencyKeyLength {
		return fmt.Errorf("%w: must be 1 to %d printable ASCII characters, got %d bytes",
			ErrInvalidIdempotencyKey, MaxIdempotencyKeyLength, len(key))
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; c < ' ' || c > '~' {
			return fmt.Errorf("%w: must be printable ASCII characters only, byte %d is 0x%02x",
				ErrInvalidIdempotencyKey, i+1, c)
		}
	}
	return nil
}

// WithIdempotencyKey marks the commands run under ctx as the request that caller (the
// authenticated username) sent under key. Keys are scoped to their caller. The key is also
// recorded in the metadata of the events the commands append.
func WithIdempotencyKey(ctx context.Context, caller, key string) context.Context {
	rc, _ := ctx.Value(requestKey{}).(RequestContext)
	rc.Caller, rc.IdempotencyKey = caller, key
	return WithRequest(ctx, rc)
}

// commandRequest is what a key's request hash covers: the command and its arguments in a
// fixed encoding, so that two requests differing only in form (field order, white space, 5.0
// for 5) are the same request.
type commandRequest struct {
	Command string `json:"command"`
	Item    string `json:"item"`
	ToUser  string `json:"toUser"`
	Amount  int64  `json:"amount"`
	Reason  string `json:"reason"`
}

func (c commandRequest) hash() []byte {
	b, err := json.Marshal(c)
	if err != nil {
		panic(fmt.Sprintf("encode command request: %v", err)) // strings and an integer always encode
	}
	sum := sha256.Sum256(b)
	return sum[:]
}

// keyed is one run of a command under an idempotency key; nil means the request has none.
type keyed struct {
	caller, key, command string
	hash                 []byte
	retention            time.Duration
}

// record returns the append options that record a successful run with its events, in their
// transaction; accounts are those whose new versions the outcome reports. Without a key there
// are none, and the append can share a group commit.
func (k *keyed) record(accounts ...uuid.UUID) []eventstore.AppendOption {
	if k == nil {
		return nil
	}
	streams := make([]string, len(accounts))
	for i, id := range accounts {
		streams[i] = domain.StreamID(id)
	}
	return []eventstore.AppendOption{eventstore.InTransaction(func(ctx context.Context, tx pgx.Tx) error {
		var ok bool
		err := tx.QueryRow(ctx, recordDoneSQL, k.caller, k.key, k.hash, k.command, accounts, streams,
			k.retention.Microseconds()).Scan(&ok)
		if errors.Is(err, pgx.ErrNoRows) {
			return errKeyTaken
		}
		if err != nil {
			return fmt.Errorf("record idempotency key: %w", err)
		}
		return nil
	})}
}

// claimKey takes the key over from an expired use; a live one is left alone, and the statement
// then returns no row.
const claimKey = `
ON CONFLICT (caller, key) DO UPDATE
SET request_hash = excluded.request_hash, command = excluded.command, outcome = excluded.outcome,
    versions = excluded.versions, checkpoint_tx = excluded.checkpoint_tx,
    checkpoint_position = excluded.checkpoint_position, refusal_kind = excluded.refusal_kind,
    refusal_message = excluded.refusal_message, created_at = excluded.created_at,
    expires_at = excluded.expires_at
WHERE k.expires_at <= now()
RETURNING true`

// recordDoneSQL runs in the append's transaction, after its events and stream heads are
// written: it reads the accounts' new versions and the place of the transaction's last event.
const recordDoneSQL = `
INSERT INTO idempotency_keys AS k (caller, key, request_hash, command, outcome, versions,
                                   checkpoint_tx, checkpoint_position, expires_at)
SELECT $1, $2, $3, $4, 'done',
       (SELECT jsonb_object_agg(a.id, s.version)
        FROM unnest($5::uuid[], $6::text[]) AS a(id, stream_id) JOIN streams s USING (stream_id)),
       pg_current_xact_id(),
       (SELECT max(global_position) FROM events WHERE transaction_id = pg_current_xact_id()),
       now() + $7::bigint * interval '1 microsecond'` + claimKey

const recordRefusalSQL = `
INSERT INTO idempotency_keys AS k (caller, key, request_hash, command, outcome, refusal_kind,
                                   refusal_message, expires_at)
VALUES ($1, $2, $3, $4, 'refused', $5, $6, now() + $7::bigint * interval '1 microsecond')` + claimKey

// refusals are the domain's answers to a command that a key records and replays, by a stable
// name. Anything else is a failure, not an answer.
var refusals = []struct {
	kind string
	err  error
}{
	{"insufficient_funds", domain.ErrInsufficientFunds},
	{"unknown_item", domain.ErrUnknownItem},
	{"self_transfer", domain.ErrSelfTransfer},
	{"unknown_account", domain.ErrUnknownAccount},
	{"invalid_amount", domain.ErrInvalidAmount},
	{"amount_overflow", domain.ErrAmountOverflow},
	{"invalid_username", domain.ErrInvalidUsername},
	{"invalid_reason", domain.ErrInvalidReason},
}

func refusalKind(err error) (string, bool) {
	for _, r := range refusals {
		if errors.Is(err, r.err) {
			return r.kind, true
		}
	}
	return "", false
}

// replayedRefusal is a recorded refusal given again: the same domain error (for errors.Is and
// so the same status) with the message the first request got.
type replayedRefusal struct {
	kind error
	msg  string
}

func (e *replayedRefusal) Error() string { return e.msg }
func (e *replayedRefusal) Unwrap() error { return e.kind }

// maxKeyRounds bounds how often a keyed command looks its key up again after losing the race
// to record it. One round more than one is all it takes unless keys expire meanwhile.
const maxKeyRounds = 3

// idempotent runs a command. Without an idempotency key in ctx, run just runs. With one, the
// command runs at most once per caller and key: a recorded outcome is replayed, a different
// request under a recorded key is ErrIdempotencyKeyReused, and a refusal is recorded before it
// is returned.
func (a *App) idempotent(ctx context.Context, req commandRequest, run func(k *keyed) (Result, error)) (Result, error) {
	rc, _ := ctx.Value(requestKey{}).(RequestContext)
	if rc.IdempotencyKey == "" {
		return run(nil)
	}
	if err := ValidateIdempotencyKey(rc.IdempotencyKey); err != nil {
		return Result{}, err
	}
	if rc.Caller == "" {
		return Result{}, errors.New("an idempotency key needs the caller it belongs to")
	}
	k := &keyed{caller: rc.Caller, key: rc.IdempotencyKey, command: req.Command, hash: req.hash(),
		retention: a.cfg.IdempotencyRetention}
	for range maxKeyRounds {
		res, found, err := a.replay(ctx, k)
		if found || err != nil {
			return res, err
		}
		res, err = run(k)
		if err == nil {
			return res, nil
		}
		if !errors.Is(err, errKeyTaken) {
			kind, refused := refusalKind(err)
			if !refused {
				return Result{}, err
			}
			var ok bool
			serr := a.pool.QueryRow(ctx, recordRefusalSQL, k.caller, k.key, k.hash, k.command, kind, err.Error(),
				k.retention.Microseconds()).Scan(&ok)
			if serr == nil {
				return Result{}, err
			}
			if !errors.Is(serr, pgx.ErrNoRows) {
				return Result{}, fmt.Errorf("record refusal under idempotency key: %w", serr)
			}
		}
		// Another request recorded the key first: the next round replays its outcome.
	}
	return Result{}, fmt.Errorf("%w: idempotency key %q was recorded and expired again while this request ran", ErrBusy, k.key)
}

// replay returns the outcome recorded under k, if there is a live one.
func (a *App) replay(ctx context.Context, k *keyed) (Result, bool, error) {
	var (
		hash             []byte
		command, outcome string
		versions         []byte
		cpTx             *uint64
		cpPos            *int64
		kind, msg        *string
	)
	err := a.pool.QueryRow(ctx, `
		SELECT request_hash, command, outcome, versions, checkpoint_tx, checkpoint_position,
		       refusal_kind, refusal_message
		FROM idempotency_keys WHERE caller = $1 AND key = $2 AND expires_at > now()`, k.caller, k.key).
		Scan(&hash, &command, &outcome, &versions, &cpTx, &cpPos, &kind, &msg)
	if errors.Is(err, pgx.ErrNoRows) {
		return Result{}, false, nil
	}
	if err != nil {
		return Result{}, false, fmt.Errorf("look up idempotency key: %w", err)
	}
	if !bytes.Equal(hash, k.hash) {
		if command != k.command {
			return Result{}, true, fmt.Errorf("%w: key %q was first used for %s; send a new key for a new request",
				ErrIdempotencyKeyReused, k.key, command)
		}
		return Result{}, true, fmt.Errorf("%w: key %q was first used for %s with other arguments; send a new key for a new request",
			ErrIdempotencyKeyReused, k.key, command)
	}
	switch {
	case outcome == "refused" && kind != nil && msg != nil:
		for _, r := range refusals {
			if r.kind == *kind {
				return Result{}, true, &replayedRefusal{kind: r.err, msg: *msg}
			}
		}
		return Result{}, true, fmt.Errorf("idempotency key %q records refusal %q, which this version does not know", k.key, *kind)
	case outcome == "done" && cpTx != nil && cpPos != nil:
		var byID map[uuid.UUID]int64
		if err := json.Unmarshal(versions, &byID); err != nil {
			return Result{}, true, fmt.Errorf("idempotency key %q: recorded versions: %w", k.key, err)
		}
		return Result{Versions: byID, Checkpoint: eventstore.Checkpoint{TransactionID: *cpTx, Position: *cpPos}}, true, nil
	}
	return Result{}, true, fmt.Errorf("idempotency key %q: incomplete %q outcome", k.key, outcome)
}

// DeleteExpiredIdempotencyKeys deletes the keys whose retention has passed, in batches that
// are short statements of their own, and returns how many it deleted. Expired keys are already
// ignored by commands; this only reclaims their space.
func (a *App) DeleteExpiredIdempotencyKeys(ctx context.Context) (int64, error) {
	const batch = 10_000
	var total int64
	for {
		tag, err := a.pool.Exec(ctx, `
			DELETE FROM idempotency_keys k
			USING (SELECT caller, key FROM idempotency_keys WHERE expires_at <= now() LIMIT $1) d
			WHERE k.caller = d.caller AND k.key = d.key AND k.expires_at <= now()`, batch)
		if err != nil {
			return total, fmt.Errorf("delete expired idempotency keys: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < batch {
			return total, nil
		}
	}
}

// RunIdempotencyCleanup deletes expired idempotency keys now and every ten minutes until ctx
// ends. A failed round is logged and the next one tries again.
func (a *App) RunIdempotencyCleanup(ctx context.Context, log *slog.Logger) {
	t := time.NewTicker(idempotencyCleanupEvery)
	defer t.Stop()
	for {
		n, err := a.DeleteExpiredIdempotencyKeys(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			log.WarnContext(ctx, "idempotency key cleanup failed", "err", err, "deleted", n)
		case n > 0:
			log.DebugContext(ctx, "expired idempotency keys deleted", "deleted", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
