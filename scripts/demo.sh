#!/usr/bin/env bash
# The main job: on a fresh Debian 12 machine (root), installs the PC/SC
# stack, starts pcscd, builds vreader and plugs the default demo card into
# the first vpcd reader, then shows what OpenSC sees. The card keeps
# running in the background; stop it with `kill $(cat /tmp/virtual-piv-demo.pid)`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-pcsc.sh
command -v cargo >/dev/null || . "$HOME/.cargo/env"
# Under the e2e lock, as a running test may have stopped pcscd on purpose;
# -o: a pcscd started here does not inherit (and keep) the lock.
flock -o /tmp/virtual-piv-e2e.lock bash scripts/pcscd.sh start
cargo build --release -p vreader
# A running process (a zombie has exited and released the card file).
alive() {
  local stat
  stat=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ $stat != *Z* ]]
}
if [ -f /tmp/virtual-piv-demo.pid ] && old=$(cat /tmp/virtual-piv-demo.pid) && alive "$old"; then
  kill "$old" 2>/dev/null || true
  # The new card would find the card file still locked: wait for it to go.
  deadline=$((SECONDS + 30))
  while alive "$old"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "the previous demo card (pid $old) did not stop within 30 s of SIGTERM" >&2
      exit 1
    fi
    sleep 0.05
  done
fi
setsid target/release/vreader run >/tmp/virtual-piv-demo.log 2>&1 < /dev/null &
echo $! > /tmp/virtual-piv-demo.pid
# First run: the default card is created (RSA-2048 key generation) first.
for _ in $(seq 1 100); do
  opensc-tool -r 'Virtual PCD 00 00' -n >/dev/null 2>&1 && break
  if ! kill -0 "$(cat /tmp/virtual-piv-demo.pid)" 2>/dev/null; then
    echo "vreader stopped; its log:" >&2
    cat /tmp/virtual-piv-demo.log >&2
    exit 1
  fi
  sleep 0.2
done
echo "== opensc-tool -n"
opensc-tool -r 'Virtual PCD 00 00' -n
echo "== pkcs15-tool -D"
pkcs15-tool -r 0 -D
echo
echo "The card runs as pid $(cat /tmp/virtual-piv-demo.pid) (log: /tmp/virtual-piv-demo.log)."
echo "Default PIN 123456, PUK 12345678. Try: pkcs11-tool --module /usr/lib/x86_64-linux-gnu/opensc-pkcs11.so -O"
echo "Stop it with: kill \$(cat /tmp/virtual-piv-demo.pid)"
