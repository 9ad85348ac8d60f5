package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/uuid"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/internal/app"
	"github.com/ledger/ledger/internal/auth"
	"github.com/ledger/ledger/internal/usernames"
)

// handler is an API handler that answers its own successes and returns its failures, which
// api answers (writeError).
type handler func(w http.ResponseWriter, r *http.Request) error

// api makes h an http.HandlerFunc that answers h's error, if any, with writeError.
func (s *Server) api(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			s.writeError(w, r, err)
		}
	}
}

func errorf(kind error, format string, args ...any) error {
	return fmt.Errorf("%w: %s", kind, fmt.Sprintf(format, args...))
}

// handleAuth logs an employee in, creating the employee (with the welcome allowance) on the
// first call for a username.
func (s *Server) handleAuth(w http.ResponseWriter, r *http.Request) error {
	obj, err := fields(w, r)
	if err != nil {
		return err
	}
	username, err := stringField(obj, "username")
	if err != nil {
		return err
	}
	password, err := stringField(obj, "password")
	if err != nil {
		return err
	}
	if err := domain.ValidateUsername(username); err != nil {
		return err
	}
	if password == "" || len(password) > maxPasswordBytes {
		return errorf(errBadRequest, "password must be 1 to %d bytes", maxPasswordBytes)
	}
	attempt := s.AuthLimiter.attempt(r, usernames.Lookup(username))
	if err := attempt.admit(); err != nil {
		return err
	}
	username, created, err := s.login(r, attempt, username, password)
	switch {
	case errors.Is(err, errBadCredentials):
		if lerr := attempt.failed(); lerr != nil {
			err = lerr // the guess is answered by the limit it ran into, and tells nothing
		}
	case err == nil && !created:
		err = attempt.admit() // failures that ran alongside used the allowance up
	}
	if err != nil {
		return err
	}
	token, err := s.Issuer.Issue(username)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct {
		Token string `json:"token"`
	}{token})
	return nil
}

var errBadCredentials = errorf(errUnauthorized, "wrong username or password")

// login checks the password of the account username means, or creates the account when none
// has the name. It returns the account's name as stored, and whether it was created. The
// password hasher's work is off the request's database deadline, which stops meanwhile (see
// offDeadline).
func (s *Server) login(r *http.Request, attempt loginAttempt, username, password string) (string, bool, error) {
	ctx := r.Context()
	id, err := s.Ledger.LookupIdentity(ctx, username)
	if errors.Is(err, domain.ErrUnknownAccount) {
		// Not stored as sent: maybe under its normal form (NFD josé is NFC josé), else new.
		name, nerr := usernames.New(username)
		if nerr != nil {
			return "", false, nerr
		}
		if name != username {
			id, err = s.Ledger.LookupIdentity(ctx, name)
		}
		if errors.Is(err, domain.ErrUnknownAccount) {
			if err := attempt.signup(); err != nil {
				return "", false, err
			}
			began := time.Now()
			cpu, cancel := offDeadline(r)
			hash, herr := s.Passwords.Hash(cpu, password)
			cancel()
			if herr != nil {
				return "", false, herr
			}
			ctx, cancel := resumeDeadline(r, began)
			defer cancel()
			_, _, oerr := s.Ledger.OpenAccount(ctx, name, hash)
			if !errors.Is(oerr, domain.ErrAccountExists) {
				return name, oerr == nil, oerr // created (nil), or failed
			}
			// Someone registered the name a moment ago: this is a login against their password.
			id, err = s.Ledger.LookupIdentity(ctx, name)
		}
	}
	if err != nil {
		return "", false, err
	}
	name, err := s.checkPassword(r, id, password)
	return name, false, err
}

// checkPassword checks password against the identity's hash, off the request's database
// deadline, and returns the name as stored; a wrong one is errBadCredentials.
func (s *Server) checkPassword(r *http.Request, id app.Identity, password string) (string, error) {
	cpu, cancel := offDeadline(r)
	defer cancel()
	if err := s.Passwords.Verify(cpu, id.PasswordHash, password); err != nil {
		if errors.Is(err, auth.ErrPasswordMismatch) {
			return "", errBadCredentials
		}
		return "", err
	}
	return id.Username, nil
}

// SignIn checks an existing employee's username and password for the console: the same check
// as POST /api/auth, under the same login limits (a failure here counts against the same
// allowances), except that an unknown username is a wrong one: signing in never opens an
// account. It returns the employee's name as stored.
func (s *Server) SignIn(r *http.Request, username, password string) (string, error) {
	if domain.ValidateUsername(username) != nil || password == "" || len(password) > maxPasswordBytes {
		return "", errBadCredentials
	}
	attempt := s.AuthLimiter.attempt(r, usernames.Lookup(username))
	if err := attempt.admit(); err != nil {
		return "", err
	}
	name, err := s.lookupAndCheck(r, username, password)
	switch {
	case errors.Is(err, errBadCredentials):
		if lerr := attempt.failed(); lerr != nil {
			err = lerr
		}
	case err == nil:
		err = attempt.admit()
	}
	if err != nil {
		return "", err
	}
	return name, nil
}

// lookupAndCheck finds the identity username means, as sent or under its normal form, and
// checks the password against it.
func (s *Server) lookupAndCheck(r *http.Request, username, password string) (string, error) {
	id, err := s.Ledger.LookupIdentity(r.Context(), username)
	if errors.Is(err, domain.ErrUnknownAccount) {
		if name, nerr := usernames.New(username); nerr == nil && name != username {
			id, err = s.Ledger.LookupIdentity(r.Context(), name)
		}
	}
	if errors.Is(err, domain.ErrUnknownAccount) {
		return "", errBadCredentials
	}
	if err != nil {
		return "", err
	}
	return s.checkPassword(r, id, password)
}

func (s *Server) account(r *http.Request) (uuid.UUID, error) {
	id, err := s.Ledger.AccountID(r.Context(), claimsOf(r).Username)
	if errors.Is(err, domain.ErrUnknownAccount) {
		// A valid token for an employee this ledger does not know (a restored database).
		return uuid.Nil, errorf(errUnauthorized, "unknown employee")
	}
	return id, err
}

type infoResponse struct {
	Coins       int64           `json:"coins"`
	Inventory   []inventoryItem `json:"inventory"`
	CoinHistory coinHistory     `json:"coinHistory"`
}

type inventoryItem struct {
	Type     string `json:"type"`
	Quantity int64  `json:"quantity"`
}

type coinHistory struct {
	Received []receivedEntry `json:"received"`
	Sent     []sentEntry     `json:"sent"`
}

type receivedEntry struct {
	FromUser string `json:"fromUser"`
	Amount   int64  `json:"amount"`
}

type sentEntry struct {
	ToUser string `json:"toUser"`
	Amount int64  `json:"amount"`
}

func (s *Server) handleInfo(w http.ResponseWriter, r *http.Request) error {
	id, err := s.account(r)
	if err != nil {
		return err
	}
	in, err := s.info(r, id)
	if err != nil {
		return err
	}
	resp := infoResponse{Coins: in.Coins, Inventory: make([]inventoryItem, 0, len(in.Inventory)),
		CoinHistory: coinHistory{Received: make([]receivedEntry, 0, len(in.Received)), Sent: make([]sentEntry, 0, len(in.Sent))}}
	for _, h := range in.Inventory {
		resp.Inventory = append(resp.Inventory, inventoryItem{Type: h.Item, Quantity: h.Quantity})
	}
	for _, t := range in.Received {
		resp.CoinHistory.Received = append(resp.CoinHistory.Received, receivedEntry{FromUser: t.Counterpart, Amount: t.Amount})
	}
	for _, t := range in.Sent {
		resp.CoinHistory.Sent = append(resp.CoinHistory.Sent, sentEntry{ToUser: t.Counterpart, Amount: t.Amount})
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

func (s *Server) handleSendCoin(w http.ResponseWriter, r *http.Request) error {
	ctx, err := idempotencyContext(r)
	if err != nil {
		return err
	}
	_, toUser, n, err := moveRequest(w, r)
	if err != nil {
		return err
	}
	toUser = usernames.Lookup(toUser)
	amount, err := domain.PositiveAmount(n)
	if err != nil {
		return err
	}
	if toUser == claimsOf(r).Username {
		return domain.ErrSelfTransfer
	}
	if err := domain.ValidateUsername(toUser); err != nil {
		return fmt.Errorf("%w: recipient %v", domain.ErrUnknownAccount, err)
	}
	from, err := s.account(r)
	if err != nil {
		return err
	}
	if _, err := s.Ledger.Transfer(ctx, from, toUser, amount); err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

// moveRequest reads a body that moves coins to someone: toUser a string and amount an
// integer; other fields are the caller's to read or to ignore. Checking the amount's range is
// left to the caller, after any fields of its own.
func moveRequest(w http.ResponseWriter, r *http.Request) (map[string]jsontext.Value, string, int64, error) {
	obj, err := fields(w, r)
	if err != nil {
		return nil, "", 0, err
	}
	toUser, err := stringField(obj, "toUser")
	if err != nil {
		return nil, "", 0, err
	}
	if err := storable("toUser", toUser); err != nil {
		return nil, "", 0, err
	}
	n, err := intField(obj, "amount")
	if err != nil {
		return nil, "", 0, err
	}
	return obj, toUser, n, nil
}

func (s *Server) handleBuy(w http.ResponseWriter, r *http.Request) error {
	item, err := pathParam(r, "item")
	if err != nil {
		return err
	}
	ctx, err := idempotencyContext(r)
	if err != nil {
		return err
	}
	id, err := s.account(r)
	if err != nil {
		return err
	}
	if _, err := s.Ledger.Buy(ctx, id, item); err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

// handleGrant lets an admin add coins to an employee's account.
func (s *Server) handleGrant(w http.ResponseWriter, r *http.Request) error {
	c := claimsOf(r)
	if err := s.requireRole(r, "granting coins", auth.RoleAdmin); err != nil {
		return err
	}
	ctx, err := idempotencyContext(r)
	if err != nil {
		return err
	}
	obj, toUser, n, err := moveRequest(w, r)
	if err != nil {
		return err
	}
	toUser = usernames.Lookup(toUser)
	reason, err := stringField(obj, "reason")
	if err != nil {
		return err
	}
	amount, err := domain.PositiveAmount(n)
	if err != nil {
		return err
	}
	if _, err := s.Ledger.Grant(ctx, c.Username, toUser, amount, reason); err != nil {
		return err
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

func (s *Server) handleHealth(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	if err := s.Ready(ctx); err != nil {
		s.log.WarnContext(r.Context(), "not ready", "err", err)
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "reason": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}
