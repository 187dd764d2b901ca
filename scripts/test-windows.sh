#!/usr/bin/env bash
# Builds winscard-shim for Windows (x86_64-pc-windows-gnu) and tests it under
# Wine, where our winscard.dll is the only PC/SC there is:
#   1. the core's unit tests, built for Windows and run under Wine;
#   2. examples/msclmd_flow.exe: drives the DLL the way msclmd.dll does
#      (cache items, VERIFY, chained GENERAL AUTHENTICATE + signature check);
#   3. examples/pcsc_client.exe: an ordinary client of the `pcsc` crate,
#      loading our DLL as winscard.dll (WINEDLLOVERRIDES=winscard=n);
# each against a card given MsRdpEx-style (certificate + key variables) and
# against a card file. Any failure stops the script with a non-zero status.
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
rustup target list --installed | grep -qx "$TARGET" || bash scripts/setup-wine.sh

mkdir -p "$OUT"
export WINEPREFIX=$OUT/prefix WINEDEBUG=-all WINEDLLOVERRIDES="winscard=n;bcryptprimitives=n"

step "ProcessPrng stub (Wine 8 has no bcryptprimitives.dll)"
x86_64-w64-mingw32-gcc -shared -O2 -o "$OUT/bcryptprimitives.dll" winscard-shim/wine/processprng.c -ladvapi32
if [ ! -d "$WINEPREFIX/drive_c/windows/system32" ]; then
  wineboot -i >/dev/null 2>&1 || true
  wineserver -w
fi
cp "$OUT/bcryptprimitives.dll" "$WINEPREFIX/drive_c/windows/system32/"

step "cargo check for the MSVC target (what Windows users build)"
cargo check -p winscard-shim --lib --target x86_64-pc-windows-msvc

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
         VIRTUAL_PIV_LOG="$(winpath "$LOG")")
step "msclmd flow, card from MsRdpEx variables"
run_exe msclmd_flow.exe "${MSRDPEX[@]}" MSCLMD_FLOW_PIN=$PIN
step "pcsc crate client, card from MsRdpEx variables"
run_exe pcsc_client.exe "${MSRDPEX[@]}"

CARDFILE=(VIRTUAL_PIV_CARD_FILE="$(winpath "$OUT/card.json")" VIRTUAL_PIV_LOG="$(winpath "$LOG")")
step "msclmd flow, card file"
run_exe msclmd_flow.exe "${CARDFILE[@]}" MSCLMD_FLOW_PIN=123456
step "pcsc crate client, card file"
run_exe pcsc_client.exe "${CARDFILE[@]}"

step "log file: written, and no PIN in it"
[ -s "$LOG" ] || fail "no log written to $LOG"
grep -q 'SCardTransmit\|> 00A4' "$LOG" || fail "log has no APDU trace"
if grep -q -e "$PIN" -e "$(printf '%s' "$PIN" | xxd -p -u)" -e "313233343536FFFF" "$LOG"; then
  fail "a PIN appears in $LOG"
fi
wineserver -k || true
echo
echo "test-windows: all Windows tests passed"
