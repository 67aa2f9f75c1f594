#!/bin/bash
# Runs once, when the data directory is initialised: include hera.conf from postgresql.conf
# (the server restarts after the init scripts, and then loads pg_cron and wal_level=logical).
set -euo pipefail
echo "include '/etc/postgresql/hera.conf'" >> "$PGDATA/postgresql.conf"
