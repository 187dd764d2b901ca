#!/usr/bin/env bash
# Builds winscard-shim for Windows (x86_64-pc-windows-gnu) and tests it under
# Wine, where our winscard.dll is the only PC/SC there is:
#   1. the core's unit tests, built for Windows and run under Wine;
#   2. examples/msclmd_flow.exe: drives the DLL the way msclmd.dll does
#      (cache items, VERIFY, chained GENERAL AUTHENTICATE + signature check),
#      also with all 24 key slots filled, RSA and ECC mixed (every
#      container's items checked against the card);
#   3. examples/pcsc_client.exe: an ordinary client of the `pcsc` crate,
#      loading our DLL as winscard.dll (WINEDLLOVERRIDES=winscard=n);
# each against a card given MsRdpEx-style (certificate + key variables) and
# against a card file;
#   3b. a remote card: msclmd_flow.exe with VIRTUAL_PIV_REMOTE against a
#      real (Linux) `vreader run --listen`, paired by `vreader pair`; then
#      the DLL refuses a vreader of another pairing;
#   4. winscard-shim/tests/ffi_abuse/abuse_win.c, built with mingw: every
#      export of the DLL abused through the C ABI (NULL pointers, short
#      buffers, stale handles, threads...) with a card file, with nothing
#      configured and with a configuration that cannot be opened, each
#      followed by a heap leak check. Any failure stops the script with a
#      non-zero status.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET=x86_64-pc-windows-gnu
TDIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=$TDIR/wine-test
DATA=$ROOT/winscard-shim/tests/data

fail() { echo "test-windows: FAILED: $*" >&2; exit 1; }
step() { printf '\n--- %s\n' "$*"; }

command -v wine >/dev/null && command -v x86_64-w64-mingw32-gcc >/dev/null || bash scripts/setup-wine.sh
for t in "$TARGET" i686-pc-windows-gnu; do
  rustup target list --installed | grep -qx "$t" || bash scripts/setup-wine.sh
done

mkdir -p "$OUT"
export WINEPREFIX=$OUT/prefix WINEDEBUG=-all WINEDLLOVERRIDES="winscard=n;bcryptprimitives=n"

step "ProcessPrng stub (Wine 8 has no bcryptprimitives.dll)"
x86_64-w64-mingw32-gcc -shared -O2 -o "$OUT/bcryptprimitives.dll" winscard-shim/wine/processprng.c -ladvapi32
if [ ! -d "$WINEPREFIX/drive_c/windows/system32" ]; then
  wineboot -i >/dev/null 2>&1 || true
  wineserver -w
fi
cp "$OUT/bcryptprimitives.dll" "$WINEPREFIX/drive_c/windows/system32/"

# No MSVC-target check here any more: the TLS link (rustls with ring) builds
# C code, and ring's build script needs the MSVC compiler and C headers for
# that target, which Debian does not have. The DLL is built and run for
# x86_64-pc-windows-gnu below, and checked for 32-bit i686-pc-windows-gnu.

step "cargo check for 32-bit Windows (i686-pc-windows-gnu: lengths are 32 bits wide there)"
cargo check -p winscard-shim --lib --target i686-pc-windows-gnu

step "build winscard.dll and the Windows test programs"
cargo build -p winscard-shim --lib --examples --target "$TARGET"
BIN=$TDIR/$TARGET/debug
cp "$BIN/winscard.dll" "$BIN/examples/msclmd_flow.exe" "$BIN/examples/pcsc_client.exe" "$OUT/"
x86_64-w64-mingw32-objdump -p "$OUT/winscard.dll" > "$OUT/winscard.exports"
for sym in g_rgSCardT0Pci g_rgSCardT1Pci g_rgSCardRawPci SCardReadCacheW SCardWriteCacheW SCardGetStatusChangeA SCardGetStatusChangeW SCardConnectA SCardConnectW; do
  grep -qw "$sym" "$OUT/winscard.exports" || fail "winscard.dll does not export $sym"
done
x86_64-w64-mingw32-objdump -p "$OUT/pcsc_client.exe" > "$OUT/pcsc_client.imports"
grep -qi 'DLL Name: winscard.dll' "$OUT/pcsc_client.imports" || fail "pcsc_client.exe does not import winscard.dll"

step "core unit tests under Wine"
CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=wine cargo test -p winscard-shim --lib --target "$TARGET"

step "card file for the second run"
cargo run -q -p winscard-shim --example make_test_card -- "$OUT/card.json" "$DATA/rsa2048.key.pk8.der" "$DATA/rsa2048.cert.der" >/dev/null

winpath() { winepath -w "$1" 2>/dev/null; }
run_exe() { # name, then env assignments
  local exe=$1; shift
  ( cd "$OUT" && env "$@" wine "./$exe" ) || fail "$exe ($*)"
}

PIN=24681357
LOG=$OUT/shim.log
rm -f "$LOG"
MSRDPEX=(WINSCARD_CERTIFICATE_FILE_PATH="$(winpath "$DATA/rsa2048.cert.der")"
         WINSCARD_PRIVATE_KEY_FILE_PATH="$(winpath "$DATA/rsa2048.pkcs1.pem")"
         WINSCARD_SMARTCARD_PIN=$PIN WINSCARD_SMARTCARD_READER_NAME="MsRdpEx Reader"
         VIRTUAL_PIV_LOG="$(winpath "$LOG")" VIRTUAL_PIV_LOG_LEVEL=debug)
step "msclmd flow, card from MsRdpEx variables"
run_exe msclmd_flow.exe "${MSRDPEX[@]}" MSCLMD_FLOW_PIN=$PIN
step "pcsc crate client, card from MsRdpEx variables"
run_exe pcsc_client.exe "${MSRDPEX[@]}"

CARDFILE=(VIRTUAL_PIV_CARD_FILE="$(winpath "$OUT/card.json")" VIRTUAL_PIV_LOG="$(winpath "$LOG")" VIRTUAL_PIV_LOG_LEVEL=debug)
step "msclmd flow, card file"
run_exe msclmd_flow.exe "${CARDFILE[@]}" MSCLMD_FLOW_PIN=123456
step "pcsc crate client, card file"
run_exe pcsc_client.exe "${CARDFILE[@]}"

step "msclmd flow, passphrase-sealed card file (VIRTUAL_PIV_CARD_PASSPHRASE_FILE)"
printf 'wine test passphrase\n' > "$OUT/passphrase"
rm -f "$OUT/sealed.json"
cargo run -q -p winscard-shim --example make_test_card -- "$OUT/sealed.json" "$DATA/rsa2048.key.pk8.der" "$DATA/rsa2048.cert.der" "$OUT/passphrase" >/dev/null
grep -q '"virtual-piv-card-sealed"' "$OUT/sealed.json" || fail "make_test_card did not seal $OUT/sealed.json"
run_exe msclmd_flow.exe VIRTUAL_PIV_CARD_FILE="$(winpath "$OUT/sealed.json")" \
  VIRTUAL_PIV_CARD_PASSPHRASE_FILE="$(winpath "$OUT/passphrase")" VIRTUAL_PIV_LOG="$(winpath "$LOG")" VIRTUAL_PIV_LOG_LEVEL=debug MSCLMD_FLOW_PIN=123456
grep -q '"virtual-piv-card-sealed"' "$OUT/sealed.json" || fail "the shim's saves unsealed $OUT/sealed.json"
grep -q 'wine test passphrase' "$LOG" && fail "the passphrase appears in $LOG"

step "msclmd flow, every key slot filled, RSA and ECC mixed: 24 containers, names past index 9"
SLOTS=$OUT/slots
rm -rf "$SLOTS" && mkdir -p "$SLOTS"
# 9A keeps the RSA-2048 test key (the flow signs with it). ECC keys in a
# signing slot (9C P-256, 9E P-384) and in key-agreement slots (9D P-256,
# 8A P-384); the other 19 slots get fresh RSA-1024 keys (fast to generate).
cp "$DATA/rsa2048.key.pk8.der" "$SLOTS/9a.key.pk8.der"
cp "$DATA/rsa2048.cert.der" "$SLOTS/9a.cert.der"
for s in 9c 9d 9e $(printf '%x ' $(seq 130 149)); do
  case $s in
    9c | 9d) alg=(-newkey ec -pkeyopt ec_paramgen_curve:P-256) ;;
    9e | 8a) alg=(-newkey ec -pkeyopt ec_paramgen_curve:P-384) ;;
    *) alg=(-newkey rsa:1024) ;;
  esac
  openssl req -x509 "${alg[@]}" -nodes -keyout "$SLOTS/$s.pem" -subj "/CN=slot $s" -days 2 \
    -outform DER -out "$SLOTS/$s.cert.der" 2>/dev/null
  openssl pkcs8 -topk8 -nocrypt -in "$SLOTS/$s.pem" -outform DER -out "$SLOTS/$s.key.pk8.der"
done
cargo run -q -p winscard-shim --example make_test_card -- --slots "$OUT/full.json" "$SLOTS" >/dev/null
run_exe msclmd_flow.exe VIRTUAL_PIV_CARD_FILE="$(winpath "$OUT/full.json")" VIRTUAL_PIV_LOG="$(winpath "$LOG")" \
  MSCLMD_FLOW_PIN=123456 MSCLMD_FLOW_CONTAINERS=24

step "remote card: msclmd flow through the DLL against a real vreader run --listen, over the paired TLS link"
cargo build -q -p vreader --bin vreader
VREADER=$TDIR/debug/vreader
LINKDIR=$OUT/link
rm -rf "$LINKDIR" "$OUT/remote-card.json"
"$VREADER" pair --dir "$LINKDIR" >/dev/null
cargo run -q -p winscard-shim --example make_test_card -- "$OUT/remote-card.json" "$DATA/rsa2048.key.pk8.der" "$DATA/rsa2048.cert.der" >/dev/null
VLOG=$OUT/vreader.log
for attempt in 1 2 3 4 5; do
  PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$VREADER" run --card "$OUT/remote-card.json" --listen "127.0.0.1:$PORT" \
    --link-credentials "$LINKDIR/vreader.pem" >"$VLOG" 2>&1 &
  VPID=$!
  for _ in $(seq 300); do
    grep -q "waiting for a reader on 127.0.0.1:$PORT" "$VLOG" && break
    kill -0 "$VPID" 2>/dev/null || break
    sleep 0.1
  done
  grep -q "waiting for a reader on 127.0.0.1:$PORT" "$VLOG" && break
  kill "$VPID" 2>/dev/null || true; wait "$VPID" 2>/dev/null || true
  [ "$attempt" -lt 5 ] || { cat "$VLOG" >&2; fail "vreader --listen did not start"; }
done
trap 'kill "$VPID" 2>/dev/null || true' EXIT
REMOTE_LOG=$OUT/remote-shim.log
rm -f "$REMOTE_LOG"
run_exe msclmd_flow.exe VIRTUAL_PIV_REMOTE="127.0.0.1:$PORT" VIRTUAL_PIV_LINK="$(winpath "$LINKDIR/shim.pem")" \
  VIRTUAL_PIV_LOG="$(winpath "$REMOTE_LOG")" MSCLMD_FLOW_PIN=123456
grep -q "127.0.0.1:$PORT: connected" "$REMOTE_LOG" || fail "the DLL did not reach the remote card (see $REMOTE_LOG)"
grep -q "refused" "$VLOG" && fail "vreader refused the paired shim (see $VLOG)"
step "remote card: the DLL refuses a vreader of another pairing and sends it nothing"
"$VREADER" pair --dir "$OUT/link-other" --force >/dev/null
kill "$VPID"; wait "$VPID" 2>/dev/null || true
"$VREADER" run --card "$OUT/remote-card.json" --listen "127.0.0.1:$PORT" \
  --link-credentials "$OUT/link-other/vreader.pem" >"$VLOG" 2>&1 &
VPID=$!
for _ in $(seq 300); do grep -q "waiting for a reader" "$VLOG" && break; sleep 0.1; done
rm -f "$REMOTE_LOG"
if (cd "$OUT" && env VIRTUAL_PIV_REMOTE="127.0.0.1:$PORT" VIRTUAL_PIV_LINK="$(winpath "$LINKDIR/shim.pem")" \
    VIRTUAL_PIV_LOG="$(winpath "$REMOTE_LOG")" timeout 120 wine ./pcsc_client.exe) >"$OUT/remote-refused.txt" 2>&1; then
  fail "pcsc_client.exe used a card host of another pairing"
fi
grep -q "not the paired vreader certificate" "$REMOTE_LOG" || fail "no refusal in $REMOTE_LOG"
kill "$VPID"; wait "$VPID" 2>/dev/null || true
trap - EXIT

step "log file: written, and no PIN in it"
[ -s "$LOG" ] || fail "no log written to $LOG"
grep -q 'SCardTransmit\|> 00A4' "$LOG" || fail "log has no APDU trace"
if grep -q -e "$PIN" -e "$(printf '%s' "$PIN" | xxd -p -u)" -e "313233343536FFFF" "$LOG"; then
  fail "a PIN appears in $LOG"
fi

ABUSE_SRC=$ROOT/winscard-shim/tests/ffi_abuse/abuse_win.c
step "FFI abuse driver: abuse_win.exe, linked to winscard.dll's import library"
x86_64-w64-mingw32-gcc -std=gnu11 -O1 -g -Wall -Wextra -Werror -o "$OUT/abuse_win.exe" "$ABUSE_SRC" \
  "$BIN/libwinscard.dll.a" -lpsapi
x86_64-w64-mingw32-objdump -p "$OUT/abuse_win.exe" > "$OUT/abuse_win.imports"
grep -qi 'DLL Name: winscard.dll' "$OUT/abuse_win.imports" || fail "abuse_win.exe does not import winscard.dll"
# Every export of the DLL must be called by abuse_win.c: a new one cannot slip past.
EXPORTS=$(awk '/\[Ordinal\/Name Pointer\] Table/ {f = 1; next} f && NF == 0 {exit} f {print $NF}' "$OUT/winscard.exports")
[ "$(wc -w <<<"$EXPORTS")" -ge 70 ] || fail "cannot read the export table in $OUT/winscard.exports"
missing=()
for sym in $EXPORTS; do grep -qE "\\b$sym[(.]" "$ABUSE_SRC" || missing+=("$sym"); done
[ ${#missing[@]} -eq 0 ] || fail "exports of winscard.dll not driven by abuse_win.c: ${missing[*]}"
echo "$(wc -w <<<"$EXPORTS") exports, all driven"

# Each run gets exactly the configuration given (the shim's variables from
# this shell removed), a deadline, and its output in $OUT/abuse-NAME.txt.
SHIM_UNSET=()
for v in $(compgen -e); do case $v in WINSCARD_* | VIRTUAL_PIV_*) SHIM_UNSET+=(-u "$v") ;; esac; done
run_abuse() { # name, env assignments, --, arguments of abuse_win.exe
  local name=$1 vars=() out=$OUT/abuse-$1.txt
  shift
  while [ "$1" != -- ]; do vars+=("$1"); shift; done
  shift
  if ! (cd "$OUT" && env "${SHIM_UNSET[@]}" "${vars[@]}" timeout 300 wine ./abuse_win.exe "$@") >"$out" 2>&1; then
    tail -n 60 "$out" >&2
    fail "abuse_win.exe $* ($name; full output in $out)"
  fi
  grep -E '^ffi abuse|^  (heap|PrivateUsage|PagefileUsage|SCARD_AUTO)' "$out"
}

step "FFI abuse: card file, every check, with the debug log on"
cargo run -q -p winscard-shim --example make_test_card -- "$OUT/abuse-card.json" "$DATA/rsa2048.key.pk8.der" "$DATA/rsa2048.cert.der" >/dev/null
ABUSE_CARD=VIRTUAL_PIV_CARD_FILE=$(winpath "$OUT/abuse-card.json")
ABUSE_LOG=$OUT/abuse-shim.log
rm -f "$ABUSE_LOG"
run_abuse card "$ABUSE_CARD" VIRTUAL_PIV_LOG="$(winpath "$ABUSE_LOG")" VIRTUAL_PIV_LOG_LEVEL=debug -- card 0
[ -s "$ABUSE_LOG" ] || fail "no log written to $ABUSE_LOG"
if grep -q 'panicked' "$ABUSE_LOG"; then fail "winscard.dll caught a panic at its FFI boundary (see $ABUSE_LOG)"; fi
step "FFI abuse: card file, every check + leak check (log written to NUL: formatted, not kept)"
run_abuse card-leak "$ABUSE_CARD" VIRTUAL_PIV_LOG=NUL -- card 2000
step "FFI abuse: nothing configured (zero readers) + leak check"
run_abuse noreaders -- noreaders 2000
step "FFI abuse: a configuration that cannot be opened (no service) + leak check"
run_abuse noservice 'VIRTUAL_PIV_CARD_FILE=C:\nonexistent\ffi-abuse\card.json' -- noservice 2000
step "FFI abuse: the leak check fails on a leak of one buffer per iteration"
if (cd "$OUT" && env "${SHIM_UNSET[@]}" timeout 300 wine ./abuse_win.exe noreaders 200 selftest) >"$OUT/abuse-selftest.txt" 2>&1; then
  fail "the leak check passed although abuse_win.exe leaked on purpose ($OUT/abuse-selftest.txt)"
fi
grep -q 'dblocks <= LEAK_BLOCKS: is false' "$OUT/abuse-selftest.txt" \
  || { tail -n 30 "$OUT/abuse-selftest.txt" >&2; fail "the deliberate leak was not reported as one"; }
grep -E '^  heap live blocks' "$OUT/abuse-selftest.txt"

wineserver -k || true
echo
echo "test-windows: all Windows tests passed"
