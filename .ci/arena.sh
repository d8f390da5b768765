#!/bin/sh
# Arena test dependencies from apt: chromium (the browser end-to-end test, driven by the pip `playwright` package
# without `playwright install`) and postgresql (a throwaway cluster started by tests/arena/conftest.py with
# initdb/pg_ctl as the postgres user). Idempotent; runs as root; quiet.
set -eu
export DEBIAN_FRONTEND=noninteractive
need=""
[ -x /usr/bin/chromium ] || need="$need chromium"
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need="$need postgresql"
if [ -n "$need" ]; then
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq $need >/dev/null
fi
# Debian starts a default cluster when postgresql is installed; the tests use their own, so it may stay stopped.
