#!/usr/bin/env bash
# The tests use the PostgreSQL server at 127.0.0.1:5432 (trust auth, database `test`); start it if it is down.
set -u
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
    if command -v pg_ctlcluster >/dev/null 2>&1; then
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
    fi
    for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi
pg_isready -h 127.0.0.1 -p 5432 -q || { echo "PostgreSQL at 127.0.0.1:5432 is not reachable: the test suite needs it" >&2; exit 1; }
