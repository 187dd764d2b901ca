#!/usr/bin/env bash
# Starts, stops or restarts the machine's one pcscd (foreground mode under
# our control, debug log with APDUs), and waits until vpcd's reader slots
# listen. Idempotent: `start` on a running pcscd does nothing.
#   scripts/pcscd.sh start|stop|restart|status
# Log: $PCSCD_LOG (default /tmp/virtual-piv-pcscd.log).
set -euo pipefail
LOG=${PCSCD_LOG:-/tmp/virtual-piv-pcscd.log}
SOCK=/run/pcscd/pcscd.comm

running() { pgrep -x pcscd >/dev/null 2>&1; }
listening() { ss -ltn 2>/dev/null | grep -q ':35963 '; }

# With -d -a pcscd logs every APDU (~2 GB after a soak test): keep the
# last megabyte when the log passes 100 MB. pcscd appends (O_APPEND), so
# truncating the file in place under it is safe.
trim_log() {
  local size
  size=$(stat -c %s "$LOG" 2>/dev/null || echo 0)
  if [ "$size" -gt $((100 * 1024 * 1024)) ]; then
    tail -c 1000000 "$LOG" >"$LOG.old"
    : >"$LOG"
  fi
}

start() {
  trim_log
  if running && [ -S "$SOCK" ] && listening; then return 0; fi
  if running; then stop; fi
  mkdir -p /run/pcscd
  rm -f "$SOCK"
  # No --auto-exit: pcscd would quit 60 s after its last client and drop the card.
  # PCSCD_QUIET=1: no debug/APDU log (benchmarks; the log costs latency).
  if [ "${PCSCD_QUIET:-0}" = 1 ]; then
    setsid pcscd -f >>"$LOG" 2>&1 </dev/null &
  else
    setsid pcscd -f -d -a >>"$LOG" 2>&1 </dev/null &
  fi
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
