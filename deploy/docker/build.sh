#!/usr/bin/env bash
# Builds the server image with podman where no image registry is reachable: the base is a Debian bookworm
# minbase rootfs made by debootstrap (cached under ~/.cache/dwcp-inference) and imported as a local image.
# Usage: deploy/docker/build.sh [TAG]      (run as root; prints the image size and the build time)
set -euo pipefail
cd "$(dirname "$0")/../.."
tag=${1:-localhost/dwcp-inference:dev}
base=localhost/dwcp-base:bookworm
cache=${XDG_CACHE_HOME:-$HOME/.cache}/dwcp-inference
started=$(date +%s)
for tool in podman debootstrap; do
    command -v $tool >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends podman debootstrap fuse-overlayfs uidmap >/dev/null; break; }
done
if ! podman image exists "$base"; then
    mkdir -p "$cache"
    if [ ! -s "$cache/bookworm-rootfs.tar" ]; then
        rootfs=$(mktemp -d)
        debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
            "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
        tar -C "$rootfs" -cf "$cache/bookworm-rootfs.tar.tmp" . && mv "$cache/bookworm-rootfs.tar.tmp" "$cache/bookworm-rootfs.tar"
        rm -rf "$rootfs"
    fi
    podman import "$cache/bookworm-rootfs.tar" "$base" >/dev/null
fi
secret=()
cert=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
[ -s "$cert" ] && secret=(--secret "id=cacert,src=$cert")
podman build --quiet --format docker --isolation chroot --network host --build-arg "BASE=$base" "${secret[@]}" \
    -f deploy/docker/Dockerfile -t "$tag" . >/dev/null
size=$(podman image inspect "$tag" --format '{{.Size}}')
echo "image $tag: $((size / 1000000)) MB, built in $(( $(date +%s) - started ))s"
