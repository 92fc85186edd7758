#!/usr/bin/env bash
# Make `apt-get source` work: add deb-src entries mirroring the machine's Debian deb
# entries (bookworm, bookworm-updates, bookworm-security), once. Idempotent: when
# every Debian deb stanza already has its deb-src twin it changes nothing.
# Only what needs Debian sources runs this (the builder's Debian benchmark), never `make test`.
set -euo pipefail

SOURCES=/etc/apt/sources.list.d/debian.sources
OUT=/etc/apt/sources.list.d/nonstop-deb-src.sources

if [[ ! -f $SOURCES ]]; then
  echo "enable-deb-src: $SOURCES not found (not a deb822 Debian 12 system?)" >&2
  exit 1
fi
if grep -qsE '^Types:.*deb-src' "$SOURCES" "$OUT"; then
  exit 0  # already there
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "enable-deb-src: need root to add deb-src entries" >&2
  exit 1
fi
# Each "Types: deb" stanza, copied as "Types: deb-src".
awk 'BEGIN { RS=""; ORS="\n\n" } /(^|\n)Types:[ \t]*deb([ \t]|\n|$)/ {
       sub(/(^|\n)Types:[ \t]*deb/, "\nTypes: deb-src"); sub(/^\n/, ""); print }' \
  "$SOURCES" > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "enable-deb-src: added $OUT"
apt-get update -qq || echo "enable-deb-src: apt-get update reported errors; continuing" >&2
