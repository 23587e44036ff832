#!/usr/bin/env bash
# make run: start `hodei dev` (embedded PostgreSQL unless HODEI_DATABASE_URL
# is set), run a first job on it, show its output, stop. It waits for the
# dev server's own "running" line, so a taken address fails instead of
# talking to whatever already serves there.
set -euo pipefail
cd "$(dirname "$0")/.."
addr=${HODEI_DEMO_ADDR:-127.0.0.1:7070}
bin=${HODEI_BIN:-bin/hodei}
log=$(mktemp /tmp/hodei-dev.XXXXXX.log)
"$bin" dev --listen "$addr" >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
echo "starting hodei dev on $addr (log: $log)"
for _ in $(seq 1 300); do
  if grep -q "Hodei is running on " "$log"; then break; fi
  if ! kill -0 $pid 2>/dev/null; then
    cat "$log" >&2
    if grep -q "address already in use" "$log"; then
      echo "make run: $addr is taken (another hodei dev?); stop it, or pick another address with HODEI_DEMO_ADDR=127.0.0.1:PORT" >&2
    fi
    exit 1
  fi
  sleep 0.1
done
if ! grep -q "Hodei is running on " "$log"; then
  cat "$log" >&2
  echo "make run: hodei dev not running on $addr after 30s" >&2
  exit 1
fi
echo "+ hodei run -- sh -c 'echo hello from hodei; echo on \$(hostname) as job \$HODEI_JOB_ID'"
"$bin" run --server "$addr" -- sh -c 'echo hello from hodei; echo on $(hostname) as job $HODEI_JOB_ID'
echo "(job exited $?)"
