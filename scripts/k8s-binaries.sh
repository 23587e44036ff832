#!/usr/bin/env bash
# Builds kube-apiserver and etcd from source (tools/k8s and tools/k8s/etcd pin their versions) and
# caches them under ~/.cache/hodei/k8s/<kubernetes version>/, so only the first run pays the
# build (about 10 minutes cold on 2 cores). Prints the cache directory. The Kubernetes provider's
# tests start these binaries; there is no kubelet, the tests bring their own node agent.
# With --check it builds nothing: it prints the directory, or fails when the binaries are absent.
set -euo pipefail
cd "$(dirname "$0")/.."
k8s=$(awk '$1 == "k8s.io/kubernetes" {print $2}' tools/k8s/go.mod | head -1)
etcd=$(awk '$1 == "go.etcd.io/etcd/server/v3" {print $2}' tools/k8s/etcd/go.mod | head -1)
dir="$HOME/.cache/hodei/k8s/$k8s"
if [ -x "$dir/kube-apiserver" ] && [ -x "$dir/etcd" ] && [ "$(cat "$dir/etcd.version" 2>/dev/null)" = "$etcd" ]; then
  echo "$dir"; exit 0
fi
if [ "${1:-}" = --check ]; then
  echo "kube-apiserver $k8s and etcd $etcd are not built in $dir" >&2; exit 1
fi
mkdir -p "$dir"
tmp=$(mktemp -d "$dir/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "k8s-binaries: building kube-apiserver $k8s and etcd $etcd from source (cached in $dir)" >&2
(cd tools/k8s/etcd && CGO_ENABLED=0 go build -trimpath -o "$tmp/etcd" go.etcd.io/etcd/server/v3)
(cd tools/k8s && CGO_ENABLED=0 go build -trimpath -o "$tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver)
mv "$tmp/etcd" "$tmp/kube-apiserver" "$dir/"
echo "$etcd" > "$dir/etcd.version"
echo "$dir"
