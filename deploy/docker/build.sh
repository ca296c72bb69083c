#!/usr/bin/env bash
# Builds the server image with podman where no image registry is reachable: the base is a Debian bookworm
# minbase rootfs made by debootstrap (cached under ~/.cache/dwcp-inference) and imported as a local image.
# Usage: deploy/docker/build.sh [TAG]      (run as root; prints the image size and the build time)
# The Debian archive is the one this machine's apt sources already use, so the build goes through whatever mirror
# the operator set up; DEBIAN_MIRROR=http://HOST/debian overrides it. A proxy in apt's configuration
# (Acquire::http::Proxy) is used too, unless http_proxy is set.

# "URI SUITE" for every enabled deb entry of the apt sources under $1 (one-line .list files and deb822 .sources).
apt_sources() {
    local etc=$1 f
    for f in "$etc/sources.list" "$etc"/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk '$1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/ && i < NF) i++; i++ } print $i, $(i + 1) }' "$f"
    done
    for f in "$etc"/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk 'BEGIN { RS = ""; FS = "\n" }
        {
            types = uris = suites = ""; enabled = "yes"
            for (k = 1; k <= NF; k++) {
                if ($k ~ /^[ \t]*#/ || index($k, ":") == 0) continue
                key = tolower(substr($k, 1, index($k, ":") - 1)); val = substr($k, index($k, ":") + 1)
                gsub(/^[ \t]+|[ \t]+$/, "", val)
                if (key == "types") types = val; else if (key == "uris") uris = val
                else if (key == "suites") suites = val; else if (key == "enabled") enabled = tolower(val)
            }
            if (types ~ /(^| )deb( |$)/ && enabled != "no") {
                n = split(uris, u, /[ \t]+/); m = split(suites, s, /[ \t]+/)
                for (a = 1; a <= n; a++) for (b = 1; b <= m; b++) print u[a], s[b]
            }
        }' "$f"
    done
}

# The Debian archive to bootstrap suite $1 from: $DEBIAN_MIRROR, else an apt source (under $APT_ETC, default
# /etc/apt) for that suite, else any apt source that is a Debian archive (a path ending in /debian).
debian_mirror() {
    local suite=$1 entries uri
    if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "${DEBIAN_MIRROR%/}"; return; fi
    entries=$(apt_sources "${APT_ETC:-/etc/apt}")
    uri=$(awk -v s="$suite" '$2 == s { print $1; exit }' <<<"$entries")
    [ -n "$uri" ] || uri=$(awk '$1 ~ /\/debian\/?$/ { print $1; exit }' <<<"$entries")
    if [ -z "$uri" ]; then
        echo "no Debian archive in ${APT_ETC:-/etc/apt}/sources.list{,.d}: set DEBIAN_MIRROR=http://HOST/debian" >&2
        return 1
    fi
    echo "${uri%/}"
}

[ "${BASH_SOURCE[0]}" = "$0" ] || return 0  # sourced (tests): the functions only
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
        mirror=$(debian_mirror bookworm)
        if [ -z "${http_proxy:-}" ] && command -v apt-config >/dev/null; then
            eval "$(apt-config shell http_proxy Acquire::http::Proxy)"
            [ -z "${http_proxy:-}" ] || export http_proxy
        fi
        echo "bootstrapping Debian bookworm from $mirror${http_proxy:+ through $http_proxy}"
        debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
            "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
        tar -C "$rootfs" -cf "$cache/bookworm-rootfs.tar.tmp" . && mv "$cache/bookworm-rootfs.tar.tmp" "$cache/bookworm-rootfs.tar"
        rm -rf "$rootfs"
    fi
    podman import "$cache/bookworm-rootfs.tar" "$base" >/dev/null
fi
# The native request decoder is built here, on the host, as a wheel the Dockerfile installs: bookworm's rustc
# (1.63) is older than pyo3 and prost need. abi3 for CPython >= 3.11, so bookworm's python3 takes it. Without
# cargo the image decodes requests in Python (the server's start line says which).
rm -rf native/dist
if command -v cargo >/dev/null; then
    py=python3; [ -x .venv/bin/python ] && py=.venv/bin/python
    "$py" -m pip wheel --quiet --no-deps --wheel-dir native/dist ./native
    echo "native decoder wheel: $(cd native/dist && ls ./*.whl)"
else
    echo "no cargo: the image decodes requests in Python"
fi
secret=()
cert=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
[ -s "$cert" ] && secret=(--secret "id=cacert,src=$cert")
podman build --quiet --format docker --isolation chroot --network host --build-arg "BASE=$base" "${secret[@]}" \
    -f deploy/docker/Dockerfile -t "$tag" . >/dev/null
size=$(podman image inspect "$tag" --format '{{.Size}}')
echo "image $tag: $((size / 1000000)) MB, built in $(( $(date +%s) - started ))s"
