package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/internal/auth"
)

// Errors of role changes.
var (
	// ErrRoleHeld: the employee has the role already.
	ErrRoleHeld = errors.New("already has the role")
	// ErrRoleNotHeld: the employee does not have the role.
	ErrRoleNotHeld = errors.New("does not have the role")
)

// Operator says who changes roles: Actor is the name the operator gives (or their
// operating-system user), OSUser the operating-system user that ran the command ("" when
// unknown). The database records the role it was connected as itself.
type Operator struct {
	Actor, OSUser string
}

func (o Operator) validate() error {
	if o.Actor == "" {
		return errors.New("a role change needs the name of the operator who makes it")
	}
	return nil
}

// roleCacheSize bounds the employees whose roles are cached; only privileged requests read
// roles, so few are.
const roleCacheSize = 10_000

// Role change actions, as recorded.
const (
	ActionCreate = "create"
	ActionGrant  = "grant"
	ActionRevoke = "revoke"
)

// RoleChange is one entry of the append-only record of role changes.
type RoleChange struct {
	ID       int64     `json:"id"`
	At       time.Time `json:"at"`
	Action   string    `json:"action"`
	Username string    `json:"username"`
	Role     auth.Role `json:"role"`
	Actor    string    `json:"actor"`
	OSUser   string    `json:"osUser"`
	DBUser   string    `json:"dbUser"`
}

// recordRoleChange is the statement that writes a role change and its record at once: its
// first argument is a data-modifying statement returning (username, role) for each row it
// changed; the record gets $3 (actor), $4 (OS user) and the action.
func recordRoleChange(change, action string) string {
	return `WITH changed AS (` + change + `)
		INSERT INTO role_changes (action, username, role, actor, os_user)
		SELECT '` + action + `', username, role, $3::text, $4::text FROM changed`
}

// CreateUser opens an employee's account as signing up does (identity, opening events and
// welcome grant) and gives it role, all in one transaction, recording who did it. A username
// taken is domain.ErrAccountExists.
func (a *App) CreateUser(ctx context.Context, username, passwordHash string, role auth.Role, by Operator) (uuid.UUID, error) {
	if err := by.validate(); err != nil {
		return uuid.Nil, err
	}
	id, _, err := a.openAccount(ctx, username, passwordHash, func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, recordRoleChange(
			`INSERT INTO user_roles (username, role) VALUES ($1, $2) RETURNING username, role`, ActionCreate),
			username, role, by.Actor, by.OSUser)
		return err
	})
	return id, err
}

// GrantRole gives username role, recording who did it. An employee this ledger does not know is
// domain.ErrUnknownAccount; one who has the role is ErrRoleHeld.
func (a *App) GrantRole(ctx context.Context, username string, role auth.Role, by Operator) error {
	if err := by.validate(); err != nil {
		return err
	}
	tag, err := a.pool.Exec(ctx, recordRoleChange(
		`INSERT INTO user_roles (username, role) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING username, role`, ActionGrant),
		username, role, by.Actor, by.OSUser)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23503" { // foreign_key_violation: no such employee
		return fmt.Errorf("%w: %q", domain.ErrUnknownAccount, username)
	}
	if err != nil {
		return fmt.Errorf("grant %s to %q: %w", role, username, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%q %w %s", username, ErrRoleHeld, role)
	}
	return nil
}

// RevokeRole takes role from username, recording who did it. An employee this ledger does not
// know is domain.ErrUnknownAccount; one who does not have the role is ErrRoleNotHeld.
func (a *App) RevokeRole(ctx context.Context, username string, role auth.Role, by Operator) error {
	if err := by.validate(); err != nil {
		return err
	}
	tag, err := a.pool.Exec(ctx, recordRoleChange(
		`DELETE FROM user_roles WHERE username = $1 AND role = $2 RETURNING username, role`, ActionRevoke),
		username, role, by.Actor, by.OSUser)
	if err != nil {
		return fmt.Errorf("revoke %s from %q: %w", role, username, err)
	}
	if tag.RowsAffected() > 0 {
		return nil
	}
	if _, err := a.LookupIdentity(ctx, username); err != nil {
		return err
	}
	return fmt.Errorf("%q %w %s", username, ErrRoleNotHeld, role)
}

// Roles returns the roles username has now (none for an unknown employee). With
// Config.RoleCacheTTL set, an answer is reused for at most that long, so a revoked role stops
// working within it.
func (a *App) Roles(ctx context.Context, username string) (auth.Roles, error) {
	if a.roles != nil {
		if rs, ok := a.roles.Get(username); ok {
			return rs, nil
		}
	}
	rows, err := a.pool.Query(ctx, `SELECT role FROM user_roles WHERE username = $1`, username)
	if err != nil {
		return 0, fmt.Errorf("roles of %q: %w", username, err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, fmt.Errorf("roles of %q: %w", username, err)
	}
	rs, err := rolesOf(names)
	if err != nil {
		return 0, fmt.Errorf("roles of %q: %w", username, err)
	}
	if a.roles != nil {
		a.roles.Add(username, rs)
	}
	return rs, nil
}

func rolesOf(names []string) (auth.Roles, error) {
	var rs auth.Roles
	for _, n := range names {
		r, err := auth.ParseRole(n)
		if err != nil {
			return 0, err
		}
		rs |= auth.RolesOf(r)
	}
	return rs, nil
}

// RoleChanges returns up to limit entries of the record of role changes after the entry with
// id after, oldest first; only those of username when it is not "".
func (a *App) RoleChanges(ctx context.Context, username string, after int64, limit int) ([]RoleChange, error) {
	var changes []RoleChange
	err := a.read(ctx, func(ctx context.Context, on reader) error {
		rows, err := on.pool.Query(ctx, `SELECT id, at, action, username, role, actor, os_user, db_user
			FROM role_changes WHERE id > $1 AND ($2 = '' OR username = $2) ORDER BY id LIMIT $3`, after, username, limit)
		if err != nil {
			return fmt.Errorf("read role changes: %w", err)
		}
		changes, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (RoleChange, error) {
			var c RoleChange
			err := row.Scan(&c.ID, &c.At, &c.Action, &c.Username, &c.Role, &c.Actor, &c.OSUser, &c.DBUser)
			return c, err
		})
		if err != nil {
			return fmt.Errorf("read role changes: %w", err)
		}
		return nil
	})
	return changes, err
}

// UserRoles is an employee who has at least one role.
type UserRoles struct {
	Username string
	Roles    auth.Roles
}

// UsersWithRoles lists the employees who have a role, by name.
func (a *App) UsersWithRoles(ctx context.Context) ([]UserRoles, error) {
	rows, err := a.pool.Query(ctx, `SELECT username, array_agg(role ORDER BY role) FROM user_roles GROUP BY username ORDER BY username`)
	if err != nil {
		return nil, fmt.Errorf("list roles: %w", err)
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (UserRoles, error) {
		var u UserRoles
		var names []string
		if err := row.Scan(&u.Username, &names); err != nil {
			return u, fmt.Errorf("list roles: %w", err)
		}
		rs, err := rolesOf(names)
		u.Roles = rs
		return u, err
	})
}
