#!/usr/bin/env bash
# Alternates `bench throughput --pgstats` between two hodei binaries, N
# rounds, and prints per run the rate (and ratio) with the CPU per job used
# by the hodei process, by the jobs' processes and by PostgreSQL. This machine's speed drifts within
# minutes, so builds are compared in alternating runs, not by separate
# measurements.
#
#   scripts/bench-ab.sh N OLD_BINARY NEW_BINARY [bench throughput flags...]
#   scripts/bench-ab.sh 3 /tmp/hodei-old bin/hodei --modes noop --jobs 10000
set -euo pipefail
if [ $# -lt 3 ]; then
  sed -n '2,10p' "$0" >&2
  exit 2
fi
n=$1 a=$2 b=$3
shift 3
for _ in $(seq "$n"); do
  for bin in "$a" "$b"; do
    out=$("$bin" bench throughput --pgstats "$@" 2>&1)
    cpu=$(grep '^cpu over' <<<"$out" | sed -E 's/.*hodei [^=]*= ([0-9]+) µs\/job, job processes [^=]*= ([0-9]+) µs\/job, postgres [^=]*= ([0-9]+) µs\/job/hodei_us=\1 processes_us=\2 postgres_us=\3/')
    res=$(grep '^result' <<<"$out" | tail -1 | grep -oE 'mode=[a-z]+|jobs_per_sec=[0-9]+|ratio=[0-9.]+' | tr '\n' ' ')
    echo "$bin $res$cpu"
  done
done
