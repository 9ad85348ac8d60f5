package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/user"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ledger/ledger/domain"
	"github.com/ledger/ledger/eventstore"
	"github.com/ledger/ledger/internal/app"
	"github.com/ledger/ledger/internal/auth"
	"github.com/ledger/ledger/internal/usernames"
)

// runUsers runs the operators' account and role subcommands. Roles are given and taken only
// here, never over HTTP, and every change is recorded with who made it.
func runUsers(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	usage := func() {
		fmt.Fprintln(stderr, "usage: ledger users <create|grant|revoke|list|history> [flags]")
		fmt.Fprintln(stderr, "\n  create NAME --role ROLE --password-stdin   open NAME's account as signing up does, with ROLE")
		fmt.Fprintln(stderr, "  grant NAME ROLE                            give NAME the role")
		fmt.Fprintln(stderr, "  revoke NAME ROLE                           take the role from NAME")
		fmt.Fprintln(stderr, "  list                                       the employees who have a role")
		fmt.Fprintln(stderr, "  history [NAME]                             the record of role changes, oldest first")
		fmt.Fprintf(stderr, "\nROLE is %s. Run 'ledger users <command> -h' for its flags.\n", auth.RoleNames())
	}
	return subcommand("users", args, stderr, usage, map[string]func([]string) error{
		"create":  func(a []string) error { return runUsersCreate(ctx, a, stdin, stdout, stderr) },
		"grant":   func(a []string) error { return runUsersChange(ctx, "grant", a, stdout, stderr) },
		"revoke":  func(a []string) error { return runUsersChange(ctx, "revoke", a, stdout, stderr) },
		"list":    func(a []string) error { return runUsersList(ctx, a, stdout, stderr) },
		"history": func(a []string) error { return runUsersHistory(ctx, a, stdout, stderr) },
	})
}

// usersFlags are the flags of the users subcommands: the database, and for those that change
// roles who makes the change.
type usersFlags struct {
	fs    *flag.FlagSet
	dbURL *string
	by    *string
}

func newUsersFlags(name string, stderr io.Writer, changes bool) usersFlags {
	f := usersFlags{fs: newFlagSet("users "+name, stderr)}
	f.dbURL = databaseURLFlag(f.fs)
	if changes {
		f.by = f.fs.String("by", "", "the operator making the change, as recorded (default: the operating-system user)")
	}
	return f
}

// helpOK turns the -h "error" into success: the flags were printed, as asked.
func helpOK(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

// parse parses flags given before, between or after the positional arguments, and returns
// those. -h is not a failure: the flags were printed, as asked.
func (f usersFlags) parse(args []string) ([]string, error) {
	var pos []string
	for {
		if err := f.fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, flag.ErrHelp
			}
			return nil, errUsage
		}
		if f.fs.NArg() == 0 {
			break
		}
		pos = append(pos, f.fs.Arg(0))
		args = f.fs.Args()[1:]
	}
	if *f.dbURL == "" {
		fmt.Fprintf(f.fs.Output(), "%s: no database: set APP_POSTGRES_URL or pass --database-url\n", f.fs.Name())
		return nil, errUsage
	}
	return pos, nil
}

// want checks that the positional arguments are the ones named, from min of them on.
func (f usersFlags) want(pos []string, min int, names ...string) error {
	if len(pos) < min || len(pos) > len(names) {
		fmt.Fprintf(f.fs.Output(), "%s: want %s, got %d arguments\n", f.fs.Name(), strings.Join(names, " "), len(pos))
		return errUsage
	}
	return nil
}

// operator is who the record names for this change: --by, or else the operating-system user.
func (f usersFlags) operator() (app.Operator, error) {
	op := app.Operator{OSUser: osUser()}
	op.Actor = strings.TrimSpace(*f.by)
	if op.Actor == "" {
		op.Actor = op.OSUser
	}
	if op.Actor == "" {
		return op, errors.New("cannot tell who you are: name yourself with --by")
	}
	return op, nil
}

// osUser names the operating-system user running the command ("" if it cannot be told).
func osUser() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	if uid := os.Getuid(); uid >= 0 {
		return fmt.Sprintf("uid %d", uid)
	}
	return ""
}

func parseRoleArg(fs *flag.FlagSet, s string) (auth.Role, error) {
	r, err := auth.ParseRole(s)
	if err != nil {
		fmt.Fprintf(fs.Output(), "%s: %v\n", fs.Name(), err)
		return "", errUsage
	}
	return r, nil
}

// usersApp is the application layer over the database for one command.
func usersApp(ctx context.Context, url string) (*app.App, func(), error) {
	pool, err := auditPool(ctx, url)
	if err != nil {
		return nil, nil, err
	}
	return app.New(eventstore.New(pool), noWake{}, app.Config{}), pool.Close, nil
}

// noWake serves the application layer's read path, which these commands do not use.
type noWake struct{}

func (noWake) C() <-chan struct{} { return nil }

// userError says what went wrong with a user or role change in the operator's terms.
func userError(username string, err error) error {
	switch {
	case errors.Is(err, domain.ErrUnknownAccount):
		return fmt.Errorf("no employee named %q (create one with 'ledger users create')", username)
	case errors.Is(err, domain.ErrAccountExists):
		return fmt.Errorf("an employee named %q exists already (give a role with 'ledger users grant')", username)
	}
	return err
}

func runUsersCreate(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	f := newUsersFlags("create", stderr, true)
	role := f.fs.String("role", "", "the role to give: "+auth.RoleNames()+" (required)")
	fromStdin := f.fs.Bool("password-stdin", false, "read the password from standard input, up to the first newline (required)")
	pos, err := f.parse(args)
	if err != nil {
		return helpOK(err)
	}
	if err := f.want(pos, 1, "NAME"); err != nil {
		return err
	}
	// A new name is stored in its normal form, by the rule sign-up uses.
	name, err := usernames.New(pos[0])
	if err != nil {
		fmt.Fprintf(stderr, "ledger users create: %v\n", err)
		return errUsage
	}
	if *role == "" || !*fromStdin {
		fmt.Fprintln(stderr, "ledger users create: need --role and --password-stdin (a password on the command line would show in the process list)")
		return errUsage
	}
	r, err := parseRoleArg(f.fs, *role)
	if err != nil {
		return err
	}
	op, err := f.operator()
	if err != nil {
		return err
	}
	password, err := readPassword(stdin)
	if err != nil {
		return err
	}
	hash, err := auth.NewHasher(1).Hash(ctx, password)
	if err != nil {
		return err
	}
	ledger, done, err := usersApp(ctx, *f.dbURL)
	if err != nil {
		return err
	}
	defer done()
	id, err := ledger.CreateUser(ctx, name, hash, r, op)
	if err != nil {
		return userError(name, err)
	}
	fmt.Fprintf(stdout, "created %s (account %s) with the %s role, recorded as done by %s\n", name, id, r, op.Actor)
	return nil
}

// readPassword reads one line from r: the password, without its line ending.
func readPassword(r io.Reader) (string, error) {
	line, err := bufio.NewReaderSize(io.LimitReader(r, auth.MaxPasswordBytes+3), auth.MaxPasswordBytes+3).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read the password from standard input: %w", err)
	}
	line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	if line == "" || len(line) > auth.MaxPasswordBytes {
		return "", fmt.Errorf("the password read from standard input must be 1 to %d bytes", auth.MaxPasswordBytes)
	}
	return line, nil
}

func runUsersChange(ctx context.Context, action string, args []string, stdout, stderr io.Writer) error {
	f := newUsersFlags(action, stderr, true)
	pos, err := f.parse(args)
	if err != nil {
		return helpOK(err)
	}
	if err := f.want(pos, 2, "NAME", "ROLE"); err != nil {
		return err
	}
	name := pos[0]
	r, err := parseRoleArg(f.fs, pos[1])
	if err != nil {
		return err
	}
	op, err := f.operator()
	if err != nil {
		return err
	}
	ledger, done, err := usersApp(ctx, *f.dbURL)
	if err != nil {
		return err
	}
	defer done()
	if action == "grant" {
		err = ledger.GrantRole(ctx, name, r, op)
	} else {
		err = ledger.RevokeRole(ctx, name, r, op)
	}
	if err != nil {
		return userError(name, err)
	}
	if action == "grant" {
		fmt.Fprintf(stdout, "granted %s to %s, recorded as done by %s\n", r, name, op.Actor)
	} else {
		fmt.Fprintf(stdout, "revoked %s from %s, recorded as done by %s; running servers refuse it within their role cache time\n", r, name, op.Actor)
	}
	return nil
}

func runUsersList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newUsersFlags("list", stderr, false)
	pos, err := f.parse(args)
	if err != nil {
		return helpOK(err)
	}
	if err := f.want(pos, 0); err != nil {
		return err
	}
	ledger, done, err := usersApp(ctx, *f.dbURL)
	if err != nil {
		return err
	}
	defer done()
	users, err := ledger.UsersWithRoles(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "USERNAME\tROLES")
	for _, u := range users {
		fmt.Fprintf(tw, "%s\t%s\n", u.Username, u.Roles)
	}
	return tw.Flush()
}

func runUsersHistory(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newUsersFlags("history", stderr, false)
	pos, err := f.parse(args)
	if err != nil {
		return helpOK(err)
	}
	if err := f.want(pos, 0, "[NAME]"); err != nil {
		return err
	}
	var name string // "": everyone's changes
	if len(pos) == 1 {
		name = pos[0]
	}
	ledger, done, err := usersApp(ctx, *f.dbURL)
	if err != nil {
		return err
	}
	defer done()
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tAT\tACTION\tUSERNAME\tROLE\tBY\tOS USER\tDATABASE USER")
	const page = 1_000
	for after := int64(0); ; {
		changes, err := ledger.RoleChanges(ctx, name, after, page)
		if err != nil {
			return err
		}
		for _, c := range changes {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.ID, c.At.UTC().Format(time.RFC3339), c.Action, c.Username, c.Role, c.Actor, c.OSUser, c.DBUser)
		}
		if len(changes) < page {
			break
		}
		after = changes[len(changes)-1].ID
	}
	return tw.Flush()
}
