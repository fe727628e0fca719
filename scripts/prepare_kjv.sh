#!/usr/bin/env bash
# scripts/prepare_kjv.sh: prepares the default GPT corpus once, the King
# James Bible of the Debian package bible-kjv, into
#   ${KBIT_CACHE:-$HOME/.cache/kbit}/kjv/{train,val}.txt and a stamp file.
# `bible -f Gen1:1-Rev22:21` prints one verse a line, "Ge1:1 In the...";
# the leading reference is stripped and the lines are kept. Chapters are
# counted from 0 over the whole book sequence (a new chapter starts where
# the verse number is 1); chapter k goes to val.txt when k % 10 == 9, else
# to train.txt. Expected: 3,738,911 train and 398,939 val bytes.
# With the stamp present this is a no-op; run with --force to redo it.
# The folder appears whole or not at all (built beside it, then renamed).
set -euo pipefail

cache="${KBIT_CACHE:-$HOME/.cache/kbit}"
dest="$cache/kjv"
stamp="$dest/stamp"

[ "${1:-}" != "--force" ] && [ -f "$stamp" ] && exit 0

log() { printf 'kbit: %s\n' "$*" >&2; }
if ! command -v bible >/dev/null 2>&1; then
  log "prepare_kjv: the program 'bible' is missing; as root run:" \
      "apt-get install -y bible-kjv"
  exit 1
fi

mkdir -p "$cache"
tmp="$(mktemp -d "$cache/.kjv.tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

bible -f Gen1:1-Rev22:21 </dev/null >"$tmp/raw.txt"
# bad: lines without a reference (none are expected; counted, then refused).
awk -v train="$tmp/train.txt" -v val="$tmp/val.txt" '
  !match($0, /^[1-3]?[A-Za-z]+[0-9]+:[0-9]+ /) { bad++; next }
  {
    ref = substr($0, 1, RLENGTH - 1)
    sub(/^.*:/, "", ref)
    if (ref + 0 == 1) chapter++
    out = ((chapter - 1) % 10 == 9) ? val : train
    print substr($0, RLENGTH + 1) > out
  }
  END {
    if (bad > 0 || chapter == 0) {
      printf "prepare_kjv: %d lines without a verse reference, %d chapters\n",
        bad, chapter > "/dev/stderr"
      exit 1
    }
  }' "$tmp/raw.txt"
rm "$tmp/raw.txt"

train_bytes=$(wc -c <"$tmp/train.txt")
val_bytes=$(wc -c <"$tmp/val.txt")
printf 'bible-kjv %s\ntrain_bytes %s\nval_bytes %s\n' \
  "$(dpkg-query -W -f='${Version}' bible-kjv 2>/dev/null || echo unknown)" \
  "$train_bytes" "$val_bytes" >"$tmp/stamp"
chmod 755 "$tmp"
rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
log "prepared the KJV corpus in $dest ($train_bytes train bytes," \
    "$val_bytes val bytes)"
