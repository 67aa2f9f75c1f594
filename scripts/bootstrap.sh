#!/usr/bin/env bash
# Installs everything hera-guard needs on a fresh Debian/Ubuntu machine, idempotently:
# PostgreSQL 15 with wal2json and pg_cron, stunnel4 (TLS in front of the test broker) and
# prometheus (promtool for the alert rules' tests) and locales (glibc's locale sources: the money test
# compiles a German locale) as system packages, and a virtualenv with the project.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_PACKAGES=(postgresql-15 postgresql-15-wal2json postgresql-15-cron stunnel4 prometheus locales)
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

missing=()
for p in "${PG_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing system packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

stamp="$VENV/.hera-guard-installed"
if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "bootstrap: installing hera-guard and its dependencies into $VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -e '.[dev,fast]'
  touch "$stamp"
fi
