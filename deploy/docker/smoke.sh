#!/usr/bin/env bash
# Runs the built image's entrypoint without a container runtime: mounts the image, chroots into it as the image's
# non-root user, serves on a loopback port, and calls every RPC and the health check (deploy/docker/smoke.py).
# Usage: deploy/docker/smoke.sh PYTHON [TAG]    (PYTHON has dwcp_inference installed, for the client side)
set -euo pipefail
cd "$(dirname "$0")/../.."
python=$1
tag=${2:-localhost/dwcp-inference:dev}
port=${SMOKE_PORT:-50761}
health_port=$((port + 1))
root=$(podman image mount "$tag")
user=$(podman image inspect "$tag" --format '{{.Config.User}}')
mounted=()
cleanup() {
    [ -n "${pid:-}" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    for m in "${mounted[@]}"; do umount "$m" 2>/dev/null || true; done
    podman image unmount "$tag" >/dev/null || true
}
trap cleanup EXIT
for d in proc dev sys; do mount --bind "/$d" "$root/$d" && mounted+=("$root/$d"); done
entrypoint=$(podman image inspect "$tag" --format '{{join .Config.Entrypoint " "}}')
env -i PATH=/opt/dwcp/bin:/usr/bin:/bin DWCP_INFERENCE_HOST=127.0.0.1 DWCP_INFERENCE_PORT=$port \
    DWCP_INFERENCE_METRICS_PORT=-1 DWCP_INFERENCE_ADMIN_PORT=-1 \
    DWCP_INFERENCE_HEALTH_HOST=127.0.0.1 DWCP_INFERENCE_HEALTH_PORT=$health_port \
    "$(command -v chroot)" --userspec="$user" "$root" $entrypoint > serve-image.log 2>&1 &
pid=$!
"$python" deploy/docker/smoke.py "127.0.0.1:$port"
# The image's own HEALTHCHECK command (["CMD", "/bin/sh", "-c", SCRIPT]), as the runtime would run it.
healthcheck=$(podman image inspect "$tag" --format '{{index .Config.Healthcheck.Test 3}}')
env -i PATH=/opt/dwcp/bin:/usr/bin:/bin DWCP_INFERENCE_HEALTH_PORT=$health_port \
    "$(command -v chroot)" --userspec="$user" "$root" /bin/sh -c "$healthcheck"
echo "image HEALTHCHECK: SERVING on the health port"
kill -TERM "$pid"; wait "$pid"; status=$?; pid=
grep -q "dwcp-inference stopped" serve-image.log && echo "image entrypoint drained and stopped on SIGTERM (exit $status)"
