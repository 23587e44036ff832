#!/usr/bin/env bash
# Fails when generated code (protobuf, sqlc, Grafana dashboards) differs
# from what its sources generate, when protos break lint or compatibility
# with main, or when the alert rules are invalid or fail their tests.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOL="go tool -modfile=tools/go.mod"
$TOOL buf lint
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cp -r api/gen "$tmp/gen.before"
$TOOL buf generate
if ! diff -r "$tmp/gen.before" api/gen >/dev/null; then
  echo "verify: api/gen is stale: run 'make generate' and commit" >&2
  diff -r "$tmp/gen.before" api/gen | head -20 >&2
  exit 1
fi
$TOOL sqlc diff || { echo "verify: sqlc output is stale: run 'make generate' and commit" >&2; exit 1; }
mkdir "$tmp/grafana"
(cd tools/dashboards && go run . -out "$tmp/grafana")
if ! diff -r "$tmp/grafana" deploy/grafana >/dev/null; then
  echo "verify: deploy/grafana is stale: run 'make dashboards' and commit" >&2
  diff -r "$tmp/grafana" deploy/grafana | head -20 >&2
  exit 1
fi
command -v promtool >/dev/null || { echo "verify: promtool missing: run 'make deps'" >&2; exit 1; }
promtool check rules deploy/prometheus/alerts.yml >/dev/null
promtool test rules deploy/prometheus/tests/*.yml >/dev/null || { promtool test rules deploy/prometheus/tests/*.yml >&2; exit 1; }
if git rev-parse --verify -q main >/dev/null && git cat-file -e main:buf.yaml 2>/dev/null; then
  $TOOL buf breaking --against '.git#branch=main'
fi
echo "verify: ok"
