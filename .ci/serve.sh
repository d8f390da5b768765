#!/bin/sh
# Serve test dependencies from apt: chromium, for the studio page's browser test (driven by the pip `playwright`
# package without `playwright install`). Idempotent; runs as root; quiet.
set -eu
export DEBIAN_FRONTEND=noninteractive
if [ ! -x /usr/bin/chromium ]; then
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi
