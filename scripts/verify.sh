#!/usr/bin/env bash
# Fails when generated code differs from what its sources generate, when
# protos break lint, or when they break compatibility with main.
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
if git rev-parse --verify -q main >/dev/null && git cat-file -e main:buf.yaml 2>/dev/null; then
  $TOOL buf breaking --against '.git#branch=main'
fi
echo "verify: ok"
