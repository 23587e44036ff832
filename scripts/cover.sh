#!/usr/bin/env bash
# Runs the fast suite with coverage of every package (-coverpkg=./...):
# the tests' own processes and every hodei process they start (servers,
# agents, dev, CLI) write coverage counters to one directory, so that the
# integration tests count. Writes coverage.html and coverage.txt (the
# merged profile), prints the total and the per-package figures for the
# code outside generated files (api/gen, internal/store/db), and fails
# when the total is under the floor in .ci/coverage-floor.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
mkdir "$work/cov"
export GOCOVERDIR="$work/cov"
# The binary the tests start, instrumented (static, as Docker workers need).
CGO_ENABLED=0 go build -cover -covermode=atomic -coverpkg=./... -o "$work/hodei" ./cmd/hodei
export HODEI_TEST_BINARY="$work/hodei" HODEI_TEST_COVERDIR="$GOCOVERDIR"
if [ -z "${TEST_DATABASE_URL:-}" ]; then
  bin/hodei testdb --url-file "$work/url" &
  pid=$!
  trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
  for _ in $(seq 1 300); do [ -s "$work/url" ] && break; kill -0 $pid || exit 1; sleep 0.1; done
  export TEST_DATABASE_URL=$(cat "$work/url")
fi
pkgs=("$@"); [ ${#pkgs[@]} -gt 0 ] || pkgs=(./...)
status=0
# One test reads the exact output of a job whose process is the hodei
# binary itself (the secrets exec shim); jobs get no GOCOVERDIR (the agent
# gives them a minimal environment), so the instrumented binary adds a
# warning line to that output. (The logs bench passes GOCOVERDIR to its
# emitter jobs.)
go test -count=1 -timeout 20m -covermode=atomic -coverpkg=./... -skip '^TestSecretDeliveredToTheJobOnlyThroughItsEnvironment$' "${pkgs[@]}" -args -test.gocoverdir="$GOCOVERDIR" >coverage-tests.log 2>&1 || status=$?
grep -E '^(ok|FAIL|panic)' coverage-tests.log || true
if [ $status -ne 0 ]; then
  grep -E -A3 '^\s*--- FAIL' coverage-tests.log | grep -v 'level=' >&2 || true
  echo "cover: tests failed (coverage-tests.log); the figures below count the tests that ran" >&2
fi
go tool covdata textfmt -i="$GOCOVERDIR" -o "$work/all.txt"
# Generated code is left out of the figures.
grep -v -E '^github.com/hodei-dev/hodei/(api/gen/|internal/store/db/)' "$work/all.txt" >coverage.txt
go tool cover -html=coverage.txt -o coverage.html
# file:lines statements count -> per package and total (a block counts
# once, covered when any process ran it).
awk 'NR > 1 {
  split($1, f, ":"); key = $1; stmts[key] = $2; if ($3 > 0) hit[key] = 1
} END {
  for (k in stmts) {
    split(k, f, ":"); pkg = f[1]; sub(/\/[^\/]*$/, "", pkg)
    ps[pkg] += stmts[k]; if (k in hit) { pc[pkg] += stmts[k]; covered += stmts[k] }
    total += stmts[k]
  }
  for (p in ps) printf "%-60s %6.1f%%  (%d statements)\n", p, 100 * pc[p] / ps[p], ps[p] | "sort"
  close("sort")
  printf "total: %.1f%% of %d statements outside generated code\n", 100 * covered / total, total
}' coverage.txt | tee "$work/summary"
floor=$(cat .ci/coverage-floor)
total=$(awk '/^total:/ {sub(/%/, "", $2); print $2}' "$work/summary")
echo "coverage.html written; floor ${floor}%"
if awk -v t="$total" -v f="$floor" 'BEGIN { exit !(t < f) }'; then
  echo "cover: total ${total}% is under the floor ${floor}% (.ci/coverage-floor)" >&2
  exit 1
fi
exit $status
