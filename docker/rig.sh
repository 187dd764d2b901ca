#!/usr/bin/env bash
# The rig the Docker image runs, and CI runs on the host:
#   rig.sh serve       start pcscd and the card ($CARD, created with a demo
#                      key on first use), cross-check with OpenSC, keep serving
#   rig.sh check       the same, but stop the card after the cross-check
#   rig.sh check-only  only the OpenSC cross-check, against a running pcscd
# $VREADER names the vreader binary (default: vreader on PATH).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
VREADER=${VREADER:-vreader}
CARD=${CARD:-/data/card.json}
mode=${1:-serve}

crosscheck() {
  # Up to 60 s for pcscd to see the card (a loaded machine is slow; the
  # first run also generates the demo key).
  local deadline=$((SECONDS + 60))
  until opensc-tool -r 'Virtual PCD 00 00' -n >/dev/null 2>&1; do
    if [ -n "${card_pid:-}" ] && ! kill -0 "$card_pid" 2>/dev/null; then
      echo "rig: vreader exited before its card showed up in Virtual PCD 00 00" >&2
      exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "rig: no card in Virtual PCD 00 00 within 60 s (pcscd running with vsmartcard-vpcd? another card in slot 0?)" >&2
      exit 1
    fi
    sleep 0.1
  done
  local out
  echo "== opensc-tool -n"
  out=$(opensc-tool -r 'Virtual PCD 00 00' -n)
  echo "$out"
  grep -q "Personal Identity Verification Card" <<<"$out"
  echo "== pkcs15-tool -D"
  out=$(pkcs15-tool --reader 0 -D)
  echo "$out"
  grep -q "Private RSA Key \[PIV AUTH key\]" <<<"$out"
  echo "== pkcs11-tool --list-objects"
  out=$(pkcs11-tool --module /usr/lib/x86_64-linux-gnu/opensc-pkcs11.so --list-objects)
  grep -q "Certificate Object" <<<"$out"
  echo "cross-check passed"
}

if [ "$mode" = check-only ]; then
  crosscheck
  exit 0
fi

bash "$here/../scripts/pcscd.sh" start
if [ ! -f "$CARD" ]; then
  "$VREADER" init "$CARD" --demo-key
fi
"$VREADER" run --card "$CARD" &
card_pid=$!
trap 'kill $card_pid 2>/dev/null; wait $card_pid 2>/dev/null || true' EXIT
crosscheck
if [ "$mode" = check ]; then
  exit 0
fi
wait $card_pid
