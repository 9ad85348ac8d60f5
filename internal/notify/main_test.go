package notify_test

import (
	"os"
	"testing"

	"github.com/ledger/ledger/internal/pgtest"
)

var db *pgtest.Database

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, "notify", &db)) }
