# The ledger's developer commands. `make run` and `make test` find a PostgreSQL server or start
# a throwaway one (.ci/postgres.sh); nothing else needs installing beyond Go.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
GO ?= go
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
BENCH_TIME ?= 10s

.PHONY: all build run test test-faults fuzz lint bench bench-relay loadtest wrk console-screenshots db-stop clean

all: build

build:
	$(GO) build -buildvcs=auto -o bin/ledger ./cmd/ledger

## run: migrate and serve the ledger on :8080 against APP_POSTGRES_URL / LEDGER_DATABASE_URL, or
## the database "ledger" on a local server (created if missing; a throwaway cluster if none runs).
## The events go to APP_NATS_URL, or to a NATS server answering on 127.0.0.1:4222; without one
## the ledger runs without publishing them.
run: build
	url="$${APP_POSTGRES_URL:-$${LEDGER_DATABASE_URL:-}}"; \
	[ -n "$$url" ] || url=$$(.ci/postgres.sh url LEDGER_DATABASE_URL ledger); \
	nats="$${APP_NATS_URL:-}"; \
	if [ -z "$$nats" ] && (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; then nats=nats://127.0.0.1:4222; fi; \
	APP_POSTGRES_URL="$$url" APP_NATS_URL="$$nats" ./bin/ledger serve --create-database

## test: every test, with the race detector, against a real PostgreSQL. The relay's tests start
## NATS servers of their own (nats-server must be installed); the alert rules' test, promtool.
test:
	@command -v chromium >/dev/null 2>&1 || [ -n "$${LEDGER_CHROMIUM:-}" ] || \
		echo "make test: no chromium here, so the console's browser tests will skip; install it with 'sudo apt-get install -y chromium' (Debian) or name a Chrome binary in LEDGER_CHROMIUM"
	@command -v nats-server >/dev/null 2>&1 || \
		echo "make test: no nats-server here, so the relay's tests will fail; install it with 'sudo apt-get install -y nats-server' (Debian)"
	@command -v promtool >/dev/null 2>&1 || \
		echo "make test: no promtool here, so the alert rules' tests will fail; install it with 'sudo apt-get install -y prometheus' (Debian)"
	url=$$(.ci/postgres.sh url LEDGER_TEST_DATABASE_URL); \
	LEDGER_TEST_DATABASE_URL="$$url" $(GO) test -race -count=1 -timeout 30m ./...

## console-screenshots: the console's browser tests, writing their screenshots of every page to
## docs/console/ (the README shows them). Needs chromium (Debian: apt-get install -y chromium).
console-screenshots:
	url=$$(.ci/postgres.sh url LEDGER_TEST_DATABASE_URL); \
	LEDGER_TEST_DATABASE_URL="$$url" LEDGER_CONSOLE_SCREENSHOTS="$(CURDIR)/docs/console" \
		$(GO) test -count=1 -run '^TestConsole' -v ./cmd/ledger/ | grep -E '^(---|ok|FAIL)|screenshot:'

## test-faults: the fault drills at length: more crashes and longer traffic between them than
## the short versions make test runs (kill -9 during traffic, replica takeover, a failing
## projector, PostgreSQL restarted under load).
FAULT_ROUNDS ?= 20
FAULT_TRAFFIC ?= 3s
test-faults:
	url=$$(.ci/postgres.sh url LEDGER_TEST_DATABASE_URL); \
	LEDGER_TEST_DATABASE_URL="$$url" LEDGER_FAULT_ROUNDS=$(FAULT_ROUNDS) LEDGER_FAULT_TRAFFIC=$(FAULT_TRAFFIC) \
		$(GO) test -race -count=1 -timeout 60m -run '^TestFault' -v ./cmd/ledger/

## fuzz: every fuzz target (func Fuzz... in a _test.go file) for FUZZTIME each, starting from
## its committed seed corpus (testdata/fuzz/). go test fuzzes one target of one package per run.
## A failing input is written to the package's testdata/fuzz/ and stops the run. Packages whose
## tests set up a database get the server make test uses. FUZZTIME is a count of executions,
## not a duration: with a duration, Go 1.26's fuzz coordinator can report its own deadline as a
## failure ("context deadline exceeded", golang/go#75804).
FUZZTIME ?= 50000x
FUZZMINIMIZETIME ?= 2s
fuzz:
	url=$$(.ci/postgres.sh url LEDGER_TEST_DATABASE_URL); \
	$(GO) list -f '{{.ImportPath}}{{range .TestGoFiles}} {{$$.Dir}}/{{.}}{{end}}{{range .XTestGoFiles}} {{$$.Dir}}/{{.}}{{end}}' ./... | \
	while read -r pkg files; do \
		[ -n "$$files" ] || continue; \
		for target in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$files); do \
			echo "== $$pkg $$target ($(FUZZTIME))"; \
			LEDGER_TEST_DATABASE_URL="$$url" $(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) \
				-fuzzminimizetime $(FUZZMINIMIZETIME) "$$pkg" </dev/null; \
		done; \
	done

## lint: go vet and staticcheck (fetched through the module proxy on first use).
lint:
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

## bench: event store benchmarks, next to pgbench running the same SQL on the same server.
bench: build
	url=$$(.ci/postgres.sh url LEDGER_TEST_DATABASE_URL); \
	db="ledger_bench_$$$$"; base="$${url%/*}"; query=""; [[ "$$url" == *\?* ]] && query="?$${url#*\?}"; \
	psql "$$url" -qc "CREATE DATABASE $$db"; \
	trap 'psql "$$url" -qc "DROP DATABASE IF EXISTS $$db WITH (FORCE)"' EXIT; \
	./bin/ledger migrate --database-url "$$base/$$db$$query" >/dev/null; \
	echo "== pgbench: the append SQL, 16 clients, $(BENCH_TIME)"; \
	pgbench -n -M prepared -c 16 -j 2 -T $(BENCH_TIME:%s=%) -f eventstore/testdata/append.pgbench "$$base/$$db$$query" | grep -E 'tps|latency average'; \
	echo "== go benchmarks"; \
	LEDGER_TEST_DATABASE_URL="$$url" $(GO) test -run '^$$' -bench . -benchtime $(BENCH_TIME) ./eventstore/

## bench-relay: the relay's benchmarks against a throwaway NATS server each: catch-up of a backlog
## of RELAY_EVENTS events into JetStream by lanes, JetStream's own publishing, and the time from an
## append to its event read back from JetStream at 2,000 appends/s.
RELAY_EVENTS ?= 100000
bench-relay:
	url=$$(.ci/postgres.sh url LEDGER_TEST_DATABASE_URL); \
	LEDGER_TEST_DATABASE_URL="$$url" LEDGER_BENCH_EVENTS=$(RELAY_EVENTS) \
		$(GO) test -run '^$$' -bench 'CatchUp|LiveLatency' -benchtime 1x -timeout 60m ./internal/relay/; \
	$(GO) test -run '^$$' -bench JetStreamPublish -benchtime 50000x ./internal/relay/

## loadtest: the load tool's PROFILE (default sla) at a constant arrival rate. By default it
## starts bin/ledger on a fresh database (on the server make run uses), seeds the employees, and
## stops the server and drops the database afterwards. LOADTEST_TARGET=http://host:port loads a
## running ledger instead (LOADTEST_FLAGS then names its database and signing key, or seed files).
## The report is printed; the JSON result goes to loadtest/results/.
PROFILE ?= sla
LOADTEST_TARGET ?=
LOADTEST_FLAGS ?=
loadtest: build
	$(GO) build -o bin/loadtest ./loadtest
	mkdir -p loadtest/results
	out="loadtest/results/$(PROFILE)-$$(date +%Y%m%d-%H%M%S).json"; \
	if [ -n "$(LOADTEST_TARGET)" ]; then \
		./bin/loadtest --profile "$(PROFILE)" --target "$(LOADTEST_TARGET)" --out "$$out" $(LOADTEST_FLAGS); \
	else \
		url="$${APP_POSTGRES_URL:-$${LEDGER_DATABASE_URL:-}}"; \
		[ -n "$$url" ] || url=$$(.ci/postgres.sh url LEDGER_DATABASE_URL postgres); \
		./bin/loadtest --profile "$(PROFILE)" --server-bin bin/ledger --database-url "$$url" --fresh-database \
			--out "$$out" $(LOADTEST_FLAGS); \
	fi

## wrk: the company's mix through an independent generator, wrk (Debian package wrk) running
## loadtest/wrk/mix.lua. Starts WRK_SERVER_BIN (default: bin/ledger, built) on a fresh database on
## the server make run uses, has it seed WRK_USERS employees, runs wrk WRK_WARMUP unmeasured and
## then WRK_DURATION measured over WRK_CONNECTIONS connections, and prints requests/s, p99, the
## status codes and the server + PostgreSQL CPU per request (the machine's busy CPU from
## /proc/stat over the measured run less wrk's own, over the requests); then stops the server
## and drops the database. The JSON result goes to loadtest/results/.
WRK_SERVER_BIN ?= bin/ledger
WRK_CONNECTIONS ?= 64
WRK_THREADS ?= 2
WRK_DURATION ?= 30s
WRK_WARMUP ?= 10s
WRK_USERS ?= 10000
wrk: build
	$(GO) build -o bin/loadtest ./loadtest
	mkdir -p loadtest/results
	url="$${APP_POSTGRES_URL:-$${LEDGER_DATABASE_URL:-}}"; \
	[ -n "$$url" ] || url=$$(.ci/postgres.sh url LEDGER_DATABASE_URL postgres); \
	./bin/loadtest --wrk loadtest/wrk/mix.lua --server-bin "$(WRK_SERVER_BIN)" --database-url "$$url" --fresh-database \
		--users $(WRK_USERS) --conns $(WRK_CONNECTIONS) --wrk-threads $(WRK_THREADS) \
		--warmup $(WRK_WARMUP) --duration $(WRK_DURATION) --out "loadtest/results/wrk-$$(date +%Y%m%d-%H%M%S).json"

db-stop:
	.ci/postgres.sh stop

clean:
	rm -rf bin
