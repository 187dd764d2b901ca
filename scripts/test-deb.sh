#!/usr/bin/env bash
# Builds the Debian package (cargo-deb), installs it with apt as a user
# would, and checks what it installed (Debian 12, as root, no systemd as
# PID 1 needed):
#   - the files, the shim's libpcsclite.so.1 link and the Depends line;
#   - the systemd user unit, with `systemd-analyze --user verify` (a private
#     XDG_RUNTIME_DIR is all it needs: it loads the unit the way a user
#     manager would, without talking to one);
#   - the INSTALLED vreader, started with the unit's own ExecStart line and a
#     fresh HOME/XDG_DATA_HOME, serves its default card through pcscd + vpcd
#     (OpenSC reads it as a PIV card in Virtual PCD 00 00), then stops and
#     frees the slot;
#   - the installed shim serves that card file to OpenSC in-process.
# Run by scripts/test.sh; alone: bash scripts/test-deb.sh (after
# scripts/setup-pcsc.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || . "$HOME/.cargo/env"

CARGO_DEB_VERSION=3.8.0
LOCK=/tmp/virtual-piv-e2e.lock
READER='Virtual PCD 00 00'
UNIT=/usr/lib/systemd/user/vreader.service
started=$SECONDS

if ! command -v cargo-deb >/dev/null; then
  echo "installing cargo-deb $CARGO_DEB_VERSION"
  cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked
fi
# systemd-analyze (only the tool: nothing here starts or talks to systemd).
if ! command -v systemd-analyze >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi

# The package holds release binaries: vreader and the shim's cdylib (cargo
# deb --no-build, since it would only build vreader's own targets;
# --strip: the release profile has debug = 1, 90 MB of binaries unstripped).
# DEB_PROFILE=dev (what scripts/test.sh sets) packages the dev build that
# the test run has made anyway: the same code (dependencies at opt-level 3,
# ours at 1), which spares CI a second, 4-minute build of every dependency.
# cargo-deb warns that the dev profile is meant for testing only; a package
# for users is built with the default, release.
profile=${DEB_PROFILE:-release}
t=$SECONDS
if [ "$profile" = release ]; then
  cargo build --release -p vreader -p winscard-shim
else
  cargo build --profile "$profile" -p vreader -p winscard-shim
fi
echo "$profile build: $((SECONDS - t)) s"
t=$SECONDS
deb=$(cargo deb -p vreader --no-build --strip --profile "$profile")
echo "cargo deb: $((SECONDS - t)) s"
echo "package: $deb"
dpkg-deb -f "$deb" Package Version Depends
depends=$(dpkg-deb -f "$deb" Depends)
for d in pcscd vsmartcard-vpcd libc6 libssl3; do
  [[ ", $depends," == *", $d"[\ ,]* ]] || { echo "Depends lacks $d: $depends" >&2; exit 1; }
done

# --reinstall: a rebuilt package of the same version replaces the old one.
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --reinstall --allow-downgrades "$(realpath "$deb")" >/dev/null
for f in /usr/bin/vreader /usr/lib/virtual-piv/libwinscard.so "$UNIT" \
  /usr/share/doc/virtual-piv/README.md /usr/share/doc/virtual-piv/vreader.md; do
  dpkg -S "$f" >/dev/null || { echo "$f is not in the installed package" >&2; exit 1; }
done
[ "$(readlink -f /usr/lib/virtual-piv/libpcsclite.so.1)" = /usr/lib/virtual-piv/libwinscard.so ]
# The system's libpcsclite is untouched: the loader still finds pcsc-lite's.
loader=$(ldconfig -p | grep 'libpcsclite\.so\.1 ' || true)
[[ -n $loader && $loader != *virtual-piv* ]] || { echo "the loader's libpcsclite.so.1: $loader" >&2; exit 1; }
/usr/bin/vreader --version

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -m 700 "$tmp/run"
# Any warning (unknown key, bad value, missing executable) fails the check.
if ! out=$(XDG_RUNTIME_DIR="$tmp/run" systemd-analyze --user verify "$UNIT" 2>&1) || [ -n "$out" ]; then
  echo "systemd-analyze --user verify $UNIT:" >&2
  echo "$out" >&2
  exit 1
fi
echo "systemd-analyze --user verify $UNIT: clean"
exec_start=$(sed -n 's/^ExecStart=//p' "$UNIT")
[ "$exec_start" = "/usr/bin/vreader run" ] || { echo "unexpected ExecStart: $exec_start" >&2; exit 1; }

card_seen() {
  [[ $(opensc-tool -r "$READER" -n 2>&1) == *"Personal Identity Verification Card"* ]]
}

# Under the e2e lock (fd 9), as the tests: slot 0 is ours until the card is
# gone again. Neither pcscd nor vreader inherits the lock's descriptor.
(
  flock 9
  bash scripts/pcscd.sh start 9>&-
  home="$tmp/home"
  mkdir -p "$home"
  # The unit's command, as a user manager would run it: a fresh user whose
  # default card does not exist yet.
  # shellcheck disable=SC2086 # ExecStart is split into words, as systemd does
  env -u VREADER_PASSPHRASE_FILE HOME="$home" XDG_DATA_HOME="$home/.local/share" \
    $exec_start >"$tmp/vreader.log" 2>&1 9>&- &
  pid=$!
  deadline=$((SECONDS + 30))
  until card_seen; do
    if ! kill -0 "$pid" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
      echo "the installed vreader's card did not appear in $READER; its log:" >&2
      cat "$tmp/vreader.log" >&2
      kill "$pid" 2>/dev/null || true
      exit 1
    fi
    sleep 0.2
  done
  opensc-tool -r "$READER" -n
  [ -f "$home/.local/share/virtual-piv/card.json" ] || { echo "no default card in the temporary XDG_DATA_HOME" >&2; exit 1; }
  kill -TERM "$pid"
  wait "$pid" || { echo "vreader exited with $? on SIGTERM; its log:" >&2; cat "$tmp/vreader.log" >&2; exit 1; }
  deadline=$((SECONDS + 30))
  while card_seen; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "the card is still in $READER after vreader stopped" >&2; exit 1; }
    sleep 0.2
  done
  echo "installed vreader: default card served in $READER, removed on SIGTERM"
) 9>"$LOCK"

# The installed shim, in-process (no pcscd), with the card vreader made.
cat >"$tmp/opensc.conf" <<CONF
app default {
  reader_driver pcsc {
    provider_library = /usr/lib/virtual-piv/libwinscard.so;
  }
}
CONF
out=$(OPENSC_CONF="$tmp/opensc.conf" VIRTUAL_PIV_CARD_FILE="$tmp/home/.local/share/virtual-piv/card.json" \
  opensc-tool -n 2>&1) || true
[[ $out == *"Personal Identity Verification Card"* ]] || { echo "OpenSC through the installed shim: $out" >&2; exit 1; }
echo "installed shim: OpenSC reads the card in-process"
echo "package test: $((SECONDS - started)) s"
