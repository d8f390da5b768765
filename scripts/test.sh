#!/usr/bin/env bash
# Set up from nothing and run the whole test suite: the README's second Quick start command (.ci/run calls it).
#   1. system packages some tests drive for real (Debian's chromium for the arena's browser test, PostgreSQL)
#   2. a virtual environment with the CPU build of torch and incasa with every extra
#   3. pytest (slow and GPU tests are excluded by pyproject's addopts; run them with -m slow / -m gpu)
set -euo pipefail
cd "$(dirname "$0")/.."
for setup in .ci/*.sh; do
  [ -e "$setup" ] && bash "$setup"
done
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check torch==2.13.0
.venv/bin/pip install -q --disable-pip-version-check -e '.[dev,safety,curate,ray,arena,serve,voice,text,eval,export,gpu]'
exec .venv/bin/python -m pytest "$@"
