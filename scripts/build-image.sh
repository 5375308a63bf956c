#!/usr/bin/env bash
# Build the container image where no registry is reachable (no base image can be pulled):
# a Debian base made with debootstrap and `buildah from scratch`, then the Dockerfile built on
# it with buildah; optionally run the server from the image and call it (docs/deploy.md,
# "Building without a registry"). With a registry, plain `docker build .` is all you need.
#
#   bash scripts/build-image.sh [cpu|cuda]          # as root; prints the image name
#   SMOKE_MODEL=out/minilm-int8 bash scripts/build-image.sh cpu
#
# Environment:
#   SUITE=bookworm          Debian release of the base (its python3 must be >= 3.11)
#   MIRROR=...              Debian mirror for debootstrap (default: debootstrap's own)
#   WORKDIR=/var/tmp/exasol-mlflow-server-image   where the base rootfs is made
#   EXTRAS=""               package extras for the image (mlflow, export)
#   PIP_CERT=FILE           CA bundle for pip behind a TLS-intercepting proxy; passed as a
#                           build secret, so it never enters a layer
#   BUILDAH_ISOLATION=chroot   chroot needs no cgroups or OCI runtime (oci failed in our
#                           sandbox: "cgroups in hybrid mode not supported")
#   REBUILD_BASE=1          make the base again even if the image exists
#   SMOKE_MODEL=DIR         an exported model: start the image's entrypoint on it with
#                           `buildah run` (chroot), wait for /ping, POST /invocations, run the
#                           image's health check; SMOKE_PORT (default 18080) on loopback
set -euo pipefail
cd "$(dirname "$0")/.."

variant="${1:-cpu}"
case "$variant" in cpu | cuda) ;; *) echo "usage: $0 [cpu|cuda]" >&2; exit 2 ;; esac
suite="${SUITE:-bookworm}"
workdir="${WORKDIR:-/var/tmp/exasol-mlflow-server-image}"
export BUILDAH_ISOLATION="${BUILDAH_ISOLATION:-chroot}"
version="$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')"
base="localhost/exasol-mlflow-server-base:${suite}"
image="localhost/exasol-mlflow-server:${version}-${variant}"

for tool in buildah debootstrap curl; do
  command -v "$tool" >/dev/null || { echo "error: $tool is missing (apt-get install -y buildah debootstrap curl)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "error: run as root (debootstrap and buildah's storage need it)" >&2; exit 1; }

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

descendant_running() {  # PID COMMAND: the deepest descendant of PID running COMMAND
  # (buildah-chroot-exec, which carries the same arguments, sits above the real process)
  local queue=("$1") pid child cmdline found=""
  while [ ${#queue[@]} -gt 0 ]; do
    pid="${queue[0]}"
    queue=("${queue[@]:1}")
    for child in $(pgrep -P "$pid"); do
      cmdline="$(tr '\0' ' ' <"/proc/$child/cmdline" | sed 's/ $//')"
      # a console script runs as "INTERPRETER SCRIPT ARGS"
      if [ "$cmdline" = "$2" ] || [[ "$cmdline" == *" $2" ]]; then
        found="$child"
      fi
      queue+=("$child")
    done
  done
  echo "$found"
}

if [ -n "${REBUILD_BASE:-}" ] || ! buildah inspect --type image "$base" >/dev/null 2>&1; then
  log "debootstrap $suite (minbase + python3, python3-venv, ca-certificates)"
  rm -rf "$workdir/rootfs"
  mkdir -p "$workdir"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$suite" "$workdir/rootfs" ${MIRROR:+"$MIRROR"} >"$workdir/debootstrap.log" 2>&1 \
    || { tail -20 "$workdir/debootstrap.log" >&2; exit 1; }
  rm -rf "$workdir"/rootfs/var/cache/apt/archives/*.deb "$workdir"/rootfs/var/lib/apt/lists/* \
    "$workdir"/rootfs/usr/share/doc/* "$workdir"/rootfs/usr/share/man/*
  log "buildah from scratch -> $base"
  ctr="$(buildah from scratch)"
  mnt="$(buildah mount "$ctr")"
  tar -C "$workdir/rootfs" -c . | tar -C "$mnt" -x
  buildah umount "$ctr" >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd /bin/bash "$ctr"
  buildah commit --rm "$ctr" "$base" >/dev/null
fi

log "buildah bud VARIANT=$variant EXTRAS=${EXTRAS:-} -> $image"
secret=()
[ -n "${PIP_CERT:-}" ] && secret=(--secret "id=pip_cert,src=$PIP_CERT")
buildah bud --format docker --layers --network host "${secret[@]}" \
  --build-arg "BASE_IMAGE=$base" --build-arg "VARIANT=$variant" \
  --build-arg "EXTRAS=${EXTRAS:-}" -t "$image" . >&2
log "built $image ($(buildah images --format '{{.Size}}' "$image"))"

if [ -n "${SMOKE_MODEL:-}" ]; then
  port="${SMOKE_PORT:-18080}"
  model="$(cd "$SMOKE_MODEL" && pwd)"
  mapfile -t entrypoint < <(buildah inspect --type image \
    --format '{{range .Docker.Config.Entrypoint}}{{println .}}{{end}}' "$image" | sed '/^$/d')
  ctr="$(buildah from "$image")"
  server=""
  trap '[ -n "$server" ] && kill "$server" 2>/dev/null; buildah rm "$ctr" >/dev/null' EXIT
  # PORT, as Knative would set it: the image's lowest-precedence port source
  buildah config --env "PORT=$port" --env EMS_HOST=127.0.0.1 "$ctr"
  log "smoke test: ${entrypoint[*]} on $model, port $port"
  buildah run --network host -v "$model:/mnt/models:ro" "$ctr" -- "${entrypoint[@]}" \
    >"$workdir/smoke.log" 2>&1 &
  server=$!
  start=$SECONDS
  until curl -fsS "http://127.0.0.1:$port/ping" >/dev/null 2>&1; do
    kill -0 "$server" 2>/dev/null || { cat "$workdir/smoke.log" >&2; exit 1; }
    [ $((SECONDS - start)) -lt 300 ] || { echo "error: no 200 from /ping within 300 s" >&2; exit 1; }
    sleep 0.5
  done
  log "/ping 200 after $((SECONDS - start)) s"
  answer="$(curl -fsS "http://127.0.0.1:$port/invocations" -H 'Content-Type: application/json' \
    -d '{"inputs": ["hello from the image"]}')"
  log "/invocations: ${answer:0:100}..."
  buildah run --network host "$ctr" -- id >&2
  buildah run --network host "$ctr" -- /opt/venv/bin/python \
    /usr/local/lib/exasol-mlflow-server/healthcheck.py /ping \
    || { echo "error: the image's health check fails on /ping" >&2; exit 1; }
  log "health check /ping: ok"
  if buildah run --network host "$ctr" -- /opt/venv/bin/python \
    /usr/local/lib/exasol-mlflow-server/healthcheck.py; then
    log "health check /v2/health/ready: ok"
  else
    log "health check /v2/health/ready: failed (is /v2/health/ready a route of this version?)"
  fi
  # buildah answers its own SIGTERM with SIGKILL to the child, so signal the entry point itself
  # (found among the descendants of our `buildah run`), as a container runtime would
  entry="$(descendant_running "$server" "${entrypoint[*]}")"
  [ -n "$entry" ] || { echo "error: the entry point's process was not found" >&2; exit 1; }
  kill -TERM "$entry"
  status=0
  wait "$server" || status=$?
  server=""
  log "SIGTERM: the server exited with status $status"
  [ "$status" = 0 ] || { tail -20 "$workdir/smoke.log" >&2; exit 1; }
fi
echo "$image"
