#!/usr/bin/env bash
# Finds or starts the PostgreSQL server the ledger runs and tests against.
#
#   .ci/postgres.sh url VAR [DB]  print a server URL: $VAR when set; else a server answering on
#                             127.0.0.1:5432; else a throwaway cluster in .data/pg started with
#                             this machine's PostgreSQL binaries; else explain how to get one.
#                             DB (default postgres) names the database in a URL built here.
#   .ci/postgres.sh stop      stop the throwaway cluster if it runs.
#
# LEDGER_LOCAL_CLUSTER=1 skips the probe of 127.0.0.1:5432 and always uses the throwaway cluster.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
data="$root/.data"
cluster="$data/pg"
port="${LEDGER_LOCAL_PG_PORT:-54329}"

say() { printf '%s\n' "$*" >&2; }

find_bindir() {
	if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
		pg_config --bindir
		return
	fi
	local d
	for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r) /usr/local/pgsql/bin; do
		if [ -x "$d/initdb" ]; then
			echo "$d"
			return
		fi
	done
	if command -v initdb >/dev/null 2>&1; then
		dirname "$(command -v initdb)"
		return
	fi
	return 1
}

# PostgreSQL refuses to run as root; run its binaries as the postgres user then.
as_owner() {
	if [ "$(id -u)" = 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

answers() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

start_cluster() {
	local bin
	if ! bin=$(find_bindir); then
		say "No PostgreSQL found: nothing answers on 127.0.0.1:5432 and no initdb/pg_ctl on this machine."
		say "Either set LEDGER_DATABASE_URL (tests: LEDGER_TEST_DATABASE_URL) to a server's URL,"
		say "or install PostgreSQL (Debian/Ubuntu: apt-get install postgresql), then run this again."
		exit 1
	fi
	if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
		say "Running as root and there is no 'postgres' user to run the throwaway cluster as."
		say "Create one (useradd --system postgres) or run as an ordinary user."
		exit 1
	fi
	mkdir -p "$data"
	exec 9>"$data/pg.lock"
	flock 9 # several make invocations at once start one cluster
	if [ ! -f "$cluster/PG_VERSION" ]; then
		say "Creating a throwaway PostgreSQL cluster in $cluster"
		mkdir -p "$cluster"
		[ "$(id -u)" = 0 ] && chown postgres "$cluster" "$data"
		as_owner "$bin/initdb" -D "$cluster" -U postgres -A trust -E UTF8 >"$data/initdb.log" 2>&1 ||
			{ say "initdb failed; see $data/initdb.log"; exit 1; }
	fi
	if ! as_owner "$bin/pg_ctl" -D "$cluster" status >/dev/null 2>&1; then
		say "Starting the throwaway PostgreSQL cluster on 127.0.0.1:$port"
		as_owner "$bin/pg_ctl" -D "$cluster" -w -t 60 -l "$data/pg.log" \
			-o "-p $port -k $data -c listen_addresses=127.0.0.1 -c max_connections=300 -c idle_in_transaction_session_timeout=60s" \
			start >/dev/null || { say "pg_ctl start failed; see $data/pg.log"; exit 1; }
	fi
	echo "postgres://postgres@127.0.0.1:$port/$db?sslmode=disable"
}

case "${1:-}" in
url)
	var="${2:-LEDGER_DATABASE_URL}"
	db="${3:-postgres}"
	if [ -n "${!var:-}" ]; then
		echo "${!var}"
	elif [ "${LEDGER_LOCAL_CLUSTER:-}" != 1 ] && answers 127.0.0.1 5432; then
		echo "postgres://postgres@127.0.0.1:5432/$db?sslmode=disable"
	else
		start_cluster
	fi
	;;
stop)
	if [ -f "$cluster/PG_VERSION" ] && bin=$(find_bindir); then
		as_owner "$bin/pg_ctl" -D "$cluster" -m fast stop >/dev/null 2>&1 || true
	fi
	;;
*)
	say "usage: $0 url [VAR] | stop"
	exit 2
	;;
esac
