#!/usr/bin/env bash
# Starts, stops or restarts the machine's one pcscd (foreground mode under
# our control, debug log with APDUs), and waits until vpcd's reader slots
# listen. Idempotent: `start` on a running pcscd does nothing.
#   scripts/pcscd.sh start|stop|restart|status|crash
# (crash: SIGKILL, as a crashing pcscd, and wait until it is gone; the
# socket file stays behind, as it would.)
# Log: $PCSCD_LOG (default /tmp/virtual-piv-pcscd.log).
# PCSCD_CONF=FILE: pcscd reads its readers from FILE (`pcscd -c`) instead
# of /etc/reader.conf.d, e.g. a `vreader readers --standalone` file with
# sixteen vpcd readers; a restart without it goes back to the stock two.
set -euo pipefail
LOG=${PCSCD_LOG:-/tmp/virtual-piv-pcscd.log}
SOCK=/run/pcscd/pcscd.comm

# A live pcscd: a zombie (not yet reaped by its parent, which can take a
# while in a container) has closed its sockets and does not count. Each
# thread is checked (-L): a zombie main thread does not mean the others,
# which share its sockets, are gone.
running() {
  local states
  states=$(ps -L -C pcscd -o stat= 2>/dev/null) || return 1
  grep -qv '^ *Z' <<<"$states"
}
# Both vpcd slots (35963, 35964) listen. No `ss | grep -q`: under pipefail
# grep quitting early can SIGPIPE ss and fail the pipeline.
listening() {
  local out
  out=$(ss -ltn 2>/dev/null) || return 1
  [[ $out == *:35963\ * && $out == *:35964\ * ]]
}

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
  # Up to 30 s (a loaded machine is slow to start it); a daemon that died
  # fails at once.
  local deadline=$((SECONDS + 30)) pid from
  while :; do
    if running; then stop; fi
    mkdir -p /run/pcscd
    rm -f "$SOCK"
    from=$(stat -c %s "$LOG" 2>/dev/null || echo 0)
    # No --auto-exit: pcscd would quit 60 s after its last client and drop the card.
    # PCSCD_QUIET=1: no debug/APDU log (benchmarks; the log costs latency).
    local args=(-f)
    if [ "${PCSCD_QUIET:-0}" != 1 ]; then args+=(-d -a); fi
    if [ -n "${PCSCD_CONF:-}" ]; then args+=(-c "$PCSCD_CONF"); fi
    setsid pcscd "${args[@]}" >>"$LOG" 2>&1 </dev/null &
    # $pid is pcscd once setsid has exec'd it; bash reaps it if it exits.
    pid=$!
    while [ "$SECONDS" -lt "$deadline" ]; do
      if [ -S "$SOCK" ] && listening; then return 0; fi
      if ! kill -0 "$pid" 2>/dev/null && ! running; then
        echo "pcscd exited at start; last log lines:" >&2
        tail -20 "$LOG" >&2
        exit 1
      fi
      # vpcd could not listen on a slot port (another process has it) and
      # pcscd runs on without that reader: start it again, the port may
      # be free by then. (Logged at every log level.)
      if [[ $(tail -c +$((from + 1)) "$LOG") == *"Could not initialize connection to virtual ICC"* ]]; then
        echo "pcscd came up without a vpcd reader (port in use?); starting it again" >&2
        sleep 0.5
        continue 2
      fi
      sleep 0.05
    done
    echo "pcscd did not come up within 30 s; listeners on the vpcd ports:" >&2
    ss -ltnp 'sport = :35963 or sport = :35964' >&2 || true
    echo "last log lines:" >&2
    tail -20 "$LOG" >&2
    exit 1
  done
}

# Waits up to $1 seconds for every pcscd to be gone.
gone_within() {
  local deadline=$((SECONDS + $1))
  while running; do
    if [ "$SECONDS" -ge "$deadline" ]; then return 1; fi
    sleep 0.05
  done
}

stop() {
  if running; then
    pkill -x pcscd || true
    gone_within 10 || crash
  fi
  rm -f "$SOCK" /run/pcscd/pcscd.pid
}

crash() {
  pkill -9 -x pcscd || true
  if ! gone_within 10; then
    echo "pcscd still running 10 s after SIGKILL:" >&2
    pgrep -a -x pcscd >&2 || true
    exit 1
  fi
}

case "${1:-start}" in
  start) start ;;
  crash) crash ;;
  stop) stop ;;
  restart) stop; start ;;
  status) if running && listening; then echo "pcscd running, vpcd listening on 35963/35964"; else echo "pcscd not running"; exit 1; fi ;;
  *) echo "usage: $0 start|stop|restart|status|crash" >&2; exit 2 ;;
esac
