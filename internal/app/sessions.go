package app

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNoSession means a console session is unknown, signed out or expired.
var ErrNoSession = errors.New("no such session: sign in again")

// Session is a signed-in console session. Token is the cookie's value, known only when the
// session is created: the database keeps its hash.
type Session struct {
	Token     string
	Username  string
	CSRFToken string
	Expires   time.Time
}

func sessionHash(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// CreateSession signs username in to the console until ttl from now, with fresh random session
// and CSRF tokens. Sessions that have expired are cleared on the way.
func (a *App) CreateSession(ctx context.Context, username string, ttl time.Duration) (Session, error) {
	s := Session{Token: rand.Text() + rand.Text(), Username: username, CSRFToken: rand.Text() + rand.Text()}
	err := a.pool.QueryRow(ctx, `
		WITH expired AS (DELETE FROM console_sessions WHERE expires_at < now())
		INSERT INTO console_sessions (id_hash, username, csrf_token, expires_at)
		VALUES ($1, $2, $3, now() + $4::interval) RETURNING expires_at`,
		sessionHash(s.Token), username, s.CSRFToken, ttl).Scan(&s.Expires)
	if err != nil {
		return Session{}, fmt.Errorf("create console session: %w", err)
	}
	return s, nil
}

// SessionOf returns the live session whose cookie value is token, or ErrNoSession.
func (a *App) SessionOf(ctx context.Context, token string) (Session, error) {
	s := Session{Token: token}
	err := a.pool.QueryRow(ctx, `SELECT username, csrf_token, expires_at FROM console_sessions
		WHERE id_hash = $1 AND expires_at > now()`, sessionHash(token)).Scan(&s.Username, &s.CSRFToken, &s.Expires)
	if errors.Is(err, pgx.ErrNoRows) {
		return Session{}, ErrNoSession
	}
	if err != nil {
		return Session{}, fmt.Errorf("read console session: %w", err)
	}
	return s, nil
}

// EndSession signs the session out; ending one that is gone already is no error.
func (a *App) EndSession(ctx context.Context, token string) error {
	if _, err := a.pool.Exec(ctx, `DELETE FROM console_sessions WHERE id_hash = $1`, sessionHash(token)); err != nil {
		return fmt.Errorf("end console session: %w", err)
	}
	return nil
}
