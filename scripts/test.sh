#!/usr/bin/env bash
# Command 2: install everything the tests need, then run the whole suite:
# ruff, mypy --strict, import contracts, and pytest on SQLite and on a fresh
# PostgreSQL database. Every step runs; the exit code says whether all passed.
#
# Environment:
#   CI=true                      a missing service fails the run instead of skipping tests
#   HOSTPLANE_TEST_PG_ADMIN_URL  a PostgreSQL URL with CREATE DATABASE rights
#                                (default: postgres@127.0.0.1:5432, else the local socket)
#   PYTEST_ARGS                  extra arguments for both pytest runs
#   HOSTPLANE_TEST_SEQUENTIAL=1  run the SQLite and PostgreSQL passes one after the other
#   DOCKER_HOST                  set by the Podman step (scripts/podman.sh) for the container tests
set -uo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
failures=()
run_step() {
    local name="$1"; shift
    step "$name"
    if "$@"; then return 0; fi
    failures+=("$name")
    return 1
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_postgres() {
    if ! command -v pg_ctlcluster >/dev/null; then
        step "installing PostgreSQL"
        apt_install postgresql || return 1
    fi
    local cluster
    cluster="$(ls /etc/postgresql | sort -V | tail -1)"
    if ! pg_lsclusters --no-header 2>/dev/null | grep -q online; then
        as_root pg_ctlcluster --skip-systemctl-redirect "$cluster" main start || return 1
    fi
    for _ in $(seq 1 30); do
        pg_isready -q && return 0
        sleep 0.5
    done
    echo "PostgreSQL did not become ready" >&2
    return 1
}

ensure_redis() {
    if ! command -v redis-server >/dev/null; then
        step "installing Redis"
        apt_install redis-server || return 1
    fi
    if ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
        mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
        redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
            --dir /var/lib/redis --logfile /var/log/redis/ci.log || return 1
        for _ in $(seq 1 30); do
            redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && return 0
            sleep 0.2
        done
        echo "Redis did not start" >&2
        return 1
    fi
}

# A PostgreSQL URL (libpq form) that may create databases.
pg_admin_url() {
    if [ -n "${HOSTPLANE_TEST_PG_ADMIN_URL:-}" ]; then echo "$HOSTPLANE_TEST_PG_ADMIN_URL"; return; fi
    if psql "postgresql://postgres@127.0.0.1:5432/postgres" -qAtc 'select 1' >/dev/null 2>&1; then
        echo "postgresql://postgres@127.0.0.1:5432/postgres"; return
    fi
    # A fresh Debian install: peer authentication on the socket. Give this OS
    # user a superuser role and use the socket.
    local me; me="$(id -un)"
    if ! psql -d postgres -qAtc 'select 1' >/dev/null 2>&1; then
        as_root su postgres -c "createuser --superuser '$me'" >/dev/null 2>&1 || true
    fi
    echo "postgresql:///postgres?host=/var/run/postgresql"
}

with_database() {
    # $1: libpq admin URL, $2: database name; prints the asyncpg URL of the new database.
    psql "$1" -qAtc "CREATE DATABASE \"$2\"" >/dev/null || return 1
    python3 - "$1" "$2" <<'PY'
import sys
from urllib.parse import urlsplit, urlunsplit
admin, name = sys.argv[1], sys.argv[2]
parts = urlsplit(admin)
print(urlunsplit(("postgresql+asyncpg", parts.netloc, "/" + name, parts.query, "")))
PY
}

export PYTHONDONTWRITEBYTECODE=1
if [ "${CI:-}" = "true" ]; then export HOSTPLANE_REQUIRE_SERVICES=1; fi

ensure_tools() {
    # What the agent's tests run real servers with: bubblewrap for the sandbox,
    # a system python3 inside it; GNU tar and zstd to check that backup
    # archives interoperate with the standard tools.
    command -v bwrap >/dev/null && [ -x /usr/bin/python3 ] && command -v zstd >/dev/null \
        && command -v tar >/dev/null && return 0
    step "installing bubblewrap, tar and zstd"
    apt_install bubblewrap python3 tar zstd
}

ensure_podman() {
    # Podman's Docker-compatible API for the agent's container runtime
    # (scripts/podman.sh is idempotent); its last line is DOCKER_HOST=...
    local out
    out="$(bash scripts/podman.sh)" || return 1
    export DOCKER_HOST="${out##*DOCKER_HOST=}"
    [ -n "$DOCKER_HOST" ]
}

run_step "tools: bubblewrap, tar, zstd" ensure_tools
run_step "services: Podman" ensure_podman
run_step "services: PostgreSQL" ensure_postgres
run_step "services: Redis" ensure_redis

step "python environment"
. scripts/bootstrap-python.sh
if ! bootstrap_python dev; then
    echo "could not install the Python environment" >&2
    exit 1
fi

run_step "ruff" .venv/bin/ruff check src tests bench
run_step "ruff format" .venv/bin/ruff format --check src tests bench
run_step "mypy --strict" .venv/bin/mypy
run_step "import contracts" .venv/bin/lint-imports

# The two pytest passes run side by side unless HOSTPLANE_TEST_SEQUENTIAL=1:
# much of the suite waits on real processes, so together they take far less
# than one after the other, even on two cores. Each pass writes its own log,
# printed whole when it ends.
sqlite_pass() {
    # shellcheck disable=SC2086
    env HOSTPLANE_TEST_DATABASE_URL= .venv/bin/pytest ${PYTEST_ARGS:-}
}
postgres_pass() {
    # shellcheck disable=SC2086
    env HOSTPLANE_TEST_DATABASE_URL="$pg_url" .venv/bin/pytest ${PYTEST_ARGS:-}
}

admin_url="$(pg_admin_url)"
database="hostplane_test_$(date +%s)_$$"
cleanup() { psql "$admin_url" -qAtc "DROP DATABASE IF EXISTS \"$database\" WITH (FORCE)" >/dev/null 2>&1 || true; }
trap cleanup EXIT
pg_url=""
if ! pg_url="$(with_database "$admin_url" "$database")"; then
    failures+=("create the PostgreSQL test database")
    pg_url=""
fi

if [ "${HOSTPLANE_TEST_SEQUENTIAL:-}" = "1" ]; then
    run_step "pytest on SQLite" sqlite_pass
    [ -n "$pg_url" ] && run_step "pytest on PostgreSQL" postgres_pass
else
    logs="$(mktemp -d)"
    step "pytest on SQLite and on PostgreSQL, side by side"
    sqlite_pass >"$logs/sqlite.log" 2>&1 &
    sqlite_pid=$!
    pg_pid=""
    if [ -n "$pg_url" ]; then
        postgres_pass >"$logs/postgresql.log" 2>&1 &
        pg_pid=$!
    fi
    started=$SECONDS
    while kill -0 "$sqlite_pid" 2>/dev/null || { [ -n "$pg_pid" ] && kill -0 "$pg_pid" 2>/dev/null; }; do
        sleep 30
        echo "  ... $(( (SECONDS - started) / 60 )) min"
    done
    wait "$sqlite_pid"; sqlite_rc=$?
    step "pytest on SQLite"
    cat "$logs/sqlite.log"
    [ "$sqlite_rc" = 0 ] || failures+=("pytest on SQLite")
    if [ -n "$pg_pid" ]; then
        wait "$pg_pid"; pg_rc=$?
        step "pytest on PostgreSQL"
        cat "$logs/postgresql.log"
        [ "$pg_rc" = 0 ] || failures+=("pytest on PostgreSQL")
    fi
    rm -rf "$logs"
fi

echo
if [ ${#failures[@]} -eq 0 ]; then
    echo "all checks passed"
    exit 0
fi
printf 'failed: %s\n' "${failures[@]}"
exit 1
