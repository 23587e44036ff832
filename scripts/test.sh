#!/usr/bin/env bash
# Runs every test with -race against one shared embedded PostgreSQL (each
# test gets its own database on it), unless TEST_DATABASE_URL is set.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${TEST_DATABASE_URL:-}" ]; then
  dir=$(mktemp -d)
  bin/hodei testdb --url-file "$dir/url" &
  pid=$!
  trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
  for _ in $(seq 1 300); do [ -s "$dir/url" ] && break; kill -0 $pid || exit 1; sleep 0.1; done
  export TEST_DATABASE_URL=$(cat "$dir/url")
fi
export HODEI_TEST_BINARY="$PWD/bin/hodei"
# The Kubernetes tests need kube-apiserver and etcd built from source (make k8s-binaries).
if [ -z "${HODEI_K8S_BIN_DIR:-}" ] && ! why=$(scripts/k8s-binaries.sh --check 2>&1 >/dev/null); then
  printf '\n!!!!!!!!\n!!! KUBERNETES TESTS SKIPPED: %s\n!!! (make k8s-binaries builds them; make test-heavy does)\n!!!!!!!!\n\n' "$why" >&2
fi
# A short fuzz budget over spec validation; its corpus lives in internal/job/testdata.
if [ $# -eq 0 ]; then go test -run '^$' -fuzz '^FuzzValidate$' -fuzztime "${HODEI_FUZZTIME:-10s}" ./internal/job; fi
pkgs=("$@"); [ ${#pkgs[@]} -gt 0 ] || pkgs=(./...)
go test -race -count=1 -timeout 15m "${pkgs[@]}"
