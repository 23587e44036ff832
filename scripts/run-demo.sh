#!/usr/bin/env bash
# make run: start `hodei dev` (embedded PostgreSQL unless HODEI_DATABASE_URL
# is set), run a first job, show its output, stop.
set -euo pipefail
cd "$(dirname "$0")/.."
addr=${HODEI_DEMO_ADDR:-127.0.0.1:7070}
log=$(mktemp /tmp/hodei-dev.XXXXXX.log)
bin/hodei dev --listen "$addr" >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
echo "starting hodei dev on $addr (log: $log)"
for _ in $(seq 1 200); do
  if bin/hodei provider list --server "$addr" >/dev/null 2>&1; then break; fi
  if ! kill -0 $pid 2>/dev/null; then cat "$log"; exit 1; fi
  sleep 0.1
done
echo "+ hodei run -- sh -c 'echo hello from hodei; echo on \$(hostname) as job \$HODEI_JOB_ID'"
bin/hodei run --server "$addr" -- sh -c 'echo hello from hodei; echo on $(hostname) as job $HODEI_JOB_ID'
echo "(job exited $?)"
