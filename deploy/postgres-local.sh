#!/usr/bin/env bash
# PostgreSQL 15 for a team's Prefect server on this machine: password authentication
# (scram-sha-256), listening on 127.0.0.1 only. The end-to-end tests start theirs with
# this script, so the commands below are the ones that are tested.
#
#   export POSTGRES_PASSWORD='a long secret'      # letters, digits and - _ . ~ (it goes into a URL as it is)
#   eval "$(deploy/postgres-local.sh /srv/genforge/pg 5432)"   # starts it; exports the URL
#
# The password is fixed when the cluster is created: a later run must give the same one.
# DIR (default /srv/genforge/pg) holds the cluster (DIR/data), its log (DIR/log) and its
# socket. As root, the server runs as the `postgres` user, which then owns DIR. Stop it with
#   runuser -u postgres -- pg_ctl -D DIR/data -m fast -w stop      (as root; else plain pg_ctl)
# Prints the PREFECT_API_DATABASE_CONNECTION_URL to export before `prefect server start`
# (it reads the password from $POSTGRES_PASSWORD, so the password is not in the output).
set -euo pipefail
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD: the password of the database user prefect}"
if [[ ! $POSTGRES_PASSWORD =~ ^[A-Za-z0-9._~-]+$ ]]; then
    echo "POSTGRES_PASSWORD: use letters, digits and - _ . ~ only (it is written into the database URL unescaped)" >&2
    exit 1
fi
dir=${1:-/srv/genforge/pg}
port=${2:-5432}
# The programs of the cluster's own version when it exists (PG_VERSION), else the newest installed.
version=$(cat "$dir/data/PG_VERSION" 2>/dev/null || ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1 || true)
bin=/usr/lib/postgresql/$version/bin
[ -d "$bin" ] || bin=""
[ -n "$bin" ] && PATH="$bin:$PATH"
command -v initdb >/dev/null || { echo "PostgreSQL's server programs are not installed (Debian: apt-get install postgresql-15)" >&2; exit 1; }

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

if [ -d "$dir" ] && [ ! -f "$dir/data/PG_VERSION" ] && [ -n "$(ls -A "$dir")" ]; then
    echo "$dir exists, holds files and no cluster: choose an empty or new folder" >&2
    exit 1
fi
mkdir -p "$dir"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
chmod 700 "$dir"
if ! as_pg test -w "$dir"; then
    echo "the postgres user cannot enter $dir (a parent folder is closed to it): choose a folder such as /srv/genforge/pg" >&2
    exit 1
fi
if [ ! -f "$dir/data/PG_VERSION" ]; then
    pwfile="$dir/.pwfile"
    trap 'rm -f "$pwfile"' EXIT  # the password leaves no file behind, even if initdb fails
    (umask 077; printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile")
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$pwfile"
    as_pg initdb -D "$dir/data" -U prefect --auth=scram-sha-256 --pwfile="$pwfile" -E UTF8 >/dev/null
    rm -f "$pwfile"
fi
if ! as_pg pg_ctl -D "$dir/data" status >/dev/null 2>&1; then  # started already: leave it running
    as_pg pg_ctl -D "$dir/data" -o "-p $port -k '$dir' -c listen_addresses=127.0.0.1 -c max_connections=200" -l "$dir/log" -w start >/dev/null
fi
# -w: never prompt for a password (no terminal here); the password comes from PGPASSWORD.
if ! PGPASSWORD="$POSTGRES_PASSWORD" psql -w -h 127.0.0.1 -p "$port" -U prefect -d postgres -tAc "select 1 from pg_database where datname = 'prefect'" | grep -q 1; then
    PGPASSWORD="$POSTGRES_PASSWORD" createdb -w -h 127.0.0.1 -p "$port" -U prefect prefect
fi
echo "export PREFECT_API_DATABASE_CONNECTION_URL=\"postgresql+asyncpg://prefect:\${POSTGRES_PASSWORD}@127.0.0.1:$port/prefect\""
