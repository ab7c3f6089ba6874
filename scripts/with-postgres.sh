#!/usr/bin/env bash
# Runs a command with a throwaway PostgreSQL 15 server on 127.0.0.1 and a free port:
#   scripts/with-postgres.sh pytest ...
# The server's admin URL is exported as MEDSWEEP_TEST_POSTGRES_URL (tests create one database
# per test from it); MEDSWEEP_TEST_PG_CTL restarts or stops it. PostgreSQL refuses to run as
# root, so as root the server runs as the `postgres` user in a folder that user owns.
set -euo pipefail

if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
   && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "with-postgres: installing PostgreSQL 15 from Debian" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null
fi
for tool in initdb pg_ctl postgres; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    for dir in /usr/lib/postgresql/*/bin; do [ -x "$dir/$tool" ] && PATH="$dir:$PATH"; done
  fi
  command -v "$tool" >/dev/null 2>&1 || { echo "with-postgres: $tool not found; install PostgreSQL 15 (apt-get install postgresql-15)" >&2; exit 2; }
done

as_owner=()
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
  as_owner=(runuser -u postgres --)
fi

workdir=$(mktemp -d /tmp/medsweep-pg.XXXXXX)
chmod 755 "$workdir"
[ "$(id -u)" = 0 ] && chown postgres "$workdir"
password=$(python3 -c 'import secrets; print(secrets.token_hex(12))')
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf '%s\n' "$password" > "$workdir/pwfile"
[ "$(id -u)" = 0 ] && chown postgres "$workdir/pwfile"

"${as_owner[@]}" initdb -D "$workdir/data" -U postgres --pwfile="$workdir/pwfile" \
  --auth-host=scram-sha-256 --auth-local=trust -E UTF8 >"$workdir/initdb.log" 2>&1 \
  || { cat "$workdir/initdb.log" >&2; exit 2; }
rm -f "$workdir/pwfile"
pg_ctl_cmd="${as_owner[*]} pg_ctl -D $workdir/data -l $workdir/server.log -w -t 60"
$pg_ctl_cmd -o "-h 127.0.0.1 -p $port -k $workdir -c max_connections=400 -c fsync=off" start >/dev/null \
  || { cat "$workdir/server.log" >&2; exit 2; }

stop() {
  $pg_ctl_cmd -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$workdir"
}
trap stop EXIT

export MEDSWEEP_TEST_POSTGRES_URL="postgresql+psycopg2://postgres:${password}@127.0.0.1:${port}/postgres"
export MEDSWEEP_TEST_PG_CTL="$pg_ctl_cmd"
echo "with-postgres: PostgreSQL $(postgres --version | awk '{print $3}') on 127.0.0.1:${port}" >&2
set +e
"$@"
status=$?
exit $status
