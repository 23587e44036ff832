#!/usr/bin/env bash
# build-images.sh builds the local images of the docker provider and its
# tests, from nothing but a static busybox (no registry is needed: nothing
# is pulled):
#
#   hodei-worker:dev  FROM scratch + busybox: a shell and the usual tools.
#                     The hodei binary is not in it: the provider mounts it.
#   hodei-test-x:dev  hodei-worker:dev with /etc/hodei-image = hodei-test-x,
#                     for "a job naming an image runs in a worker of it".
#   hodei:dev         hodei-worker:dev with bin/hodei at /usr/local/bin/hodei
#                     (built when bin/hodei exists: make build): the server
#                     on Kubernetes and the binary worker pods copy.
#
# It is idempotent and quick when nothing changed: each image carries the
# hash of its inputs in the label dev.hodei.inputs and is rebuilt only
# when that hash differs. BUSYBOX overrides the busybox binary (default
# /bin/busybox; installed from Debian's busybox-static when missing).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
busybox=${BUSYBOX:-/bin/busybox}

# A dynamically linked busybox (Debian's "busybox" package) cannot run in
# a scratch image; ldd fails on static binaries.
if [ ! -x "$busybox" ] || ldd "$busybox" >/dev/null 2>&1; then
	if [ "$busybox" != /bin/busybox ]; then
		echo "build-images: $busybox is missing or not static" >&2
		exit 1
	fi
	echo "build-images: installing busybox-static" >&2
	if [ "$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi
	$sudo apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq busybox-static >/dev/null
fi

hash() { sha256sum | cut -c1-16; }

# label IMAGE prints the inputs hash IMAGE was built from ("" if absent).
label() { docker image inspect -f '{{index .Config.Labels "dev.hodei.inputs"}}' "$1" 2>/dev/null || true; }

# build TAG DOCKERFILE CONTEXT INPUTS
build() {
	local log
	log=$(mktemp)
	if ! DOCKER_BUILDKIT=0 docker build --build-arg "INPUTS=$4" -t "$1" -f "$2" "$3" >"$log" 2>&1; then
		cat "$log" >&2
		rm -f "$log"
		echo "build-images: building $1 failed" >&2
		exit 1
	fi
	rm -f "$log"
	echo "build-images: built $1" >&2
}

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT

worker_inputs=$(cat "$0" "$root/images/worker/Dockerfile" "$busybox" | hash)
if [ "$(label hodei-worker:dev)" != "$worker_inputs" ]; then
	# The build context is the image's root filesystem.
	fs=$ctx/worker/rootfs
	mkdir -p "$fs/bin" "$fs/etc" "$fs/root" "$fs/usr" "$fs/tmp"
	chmod 1777 "$fs/tmp"
	cp "$busybox" "$fs/bin/busybox"
	for applet in $("$busybox" --list); do
		[ "$applet" = busybox ] || ln -s busybox "$fs/bin/$applet"
	done
	ln -s ../bin "$fs/usr/bin"
	ln -s bin "$fs/sbin"
	echo 'root:x:0:0:root:/root:/bin/sh' >"$fs/etc/passwd"
	echo 'root:x:0:' >"$fs/etc/group"
	echo hodei-worker >"$fs/etc/hodei-image"
	build hodei-worker:dev "$root/images/worker/Dockerfile" "$ctx/worker" "$worker_inputs"
fi

testx_inputs=$( (cat "$root/images/test-x/Dockerfile"; docker image inspect -f '{{.Id}}' hodei-worker:dev) | hash)
if [ "$(label hodei-test-x:dev)" != "$testx_inputs" ]; then
	mkdir -p "$ctx/test-x"
	echo hodei-test-x >"$ctx/test-x/hodei-image"
	build hodei-test-x:dev "$root/images/test-x/Dockerfile" "$ctx/test-x" "$testx_inputs"
fi

# hodei:dev needs bin/hodei (make build); without it, it is left as it is.
if [ -x "$root/bin/hodei" ]; then
	hodei_inputs=$( (cat "$root/images/hodei/Dockerfile" "$root/bin/hodei"; docker image inspect -f '{{.Id}}' hodei-worker:dev) | hash)
	if [ "$(label hodei:dev)" != "$hodei_inputs" ]; then
		mkdir -p "$ctx/hodei"
		cp "$root/bin/hodei" "$ctx/hodei/hodei"
		build hodei:dev "$root/images/hodei/Dockerfile" "$ctx/hodei" "$hodei_inputs"
	fi
fi
