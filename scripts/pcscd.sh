#!/usr/bin/env bash
# Starts, stops or restarts the machine's one pcscd (foreground mode under
# our control, debug log with APDUs), and waits until vpcd's reader slots
# listen. Idempotent: `start` on a running pcscd does nothing.
#   scripts/pcscd.sh start|stop|restart|status
set -euo pipefail
LOG=${PCSCD_LOG:-/tmp/virtual-piv-pcscd.log}
SOCK=/run/pcscd/pcscd.comm

running() { pgrep -x pcscd >/dev/null 2>&1; }
listening() { ss -ltn 2>/dev/null | grep -q ':35963 '; }

start() {
  if running && [ -S "$SOCK" ] && listening; then return 0; fi
  if running; then stop; fi
  mkdir -p /run/pcscd
  rm -f "$SOCK"
  # No --auto-exit: pcscd would quit 60 s after its last client and drop the card.
  setsid pcscd -f -d -a >>"$LOG" 2>&1 < /dev/null &
  for _ in $(seq 1 100); do
    if [ -S "$SOCK" ] && listening; then return 0; fi
    sleep 0.05
  done
  echo "pcscd did not come up; last log lines:" >&2
  tail -20 "$LOG" >&2
  exit 1
}

stop() {
  if running; then
    pkill -x pcscd || true
    for _ in $(seq 1 100); do running || break; sleep 0.05; done
    running && pkill -9 -x pcscd || true
  fi
  rm -f "$SOCK" /run/pcscd/pcscd.pid
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  status) if running && listening; then echo "pcscd running, vpcd listening on 35963/35964"; else echo "pcscd not running"; exit 1; fi ;;
  *) echo "usage: $0 start|stop|restart|status" >&2; exit 2 ;;
esac
