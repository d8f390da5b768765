#!/bin/bash
# Keep large tracked files out of a device-tool upload (64 MiB: the shipped weights alone are ~86 MB) without
# deleting them: `hide` un-tracks them (git rm --cached) and ignores them in .git/info/exclude, so they stay on disk
# and do not travel; `unhide` restores the index and the exclude list. Commit nothing in between.
#   bash scripts/gpu_upload.sh hide incasa/text/default/model.safetensors incasa/voice/default/model.safetensors
#   ... device calls ...
#   bash scripts/gpu_upload.sh unhide incasa/text/default/model.safetensors incasa/voice/default/model.safetensors
set -eu
cd "$(git rev-parse --show-toplevel)"
cmd=${1:?usage: gpu_upload.sh hide|unhide FILE...}; shift
for f in "$@"; do
  case "$cmd" in
    hide) git rm -q --cached -- "$f"; echo "/$f" >> .git/info/exclude ;;
    unhide) git reset -q -- "$f"; grep -vxF "/$f" .git/info/exclude > .git/info/exclude.tmp || true
            mv .git/info/exclude.tmp .git/info/exclude ;;
    *) echo "Error: unknown command $cmd (hide or unhide)" >&2; exit 2 ;;
  esac
done
echo "tracked bytes now: $(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)"
