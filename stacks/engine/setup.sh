#!/usr/bin/env bash
# Make a container engine reachable through a Docker-compatible API, and the local Debian base images.
#
# Idempotent: every step checks before it acts, so a second run on the same machine takes about a second.
# On a machine with a working Docker engine it uses that one and only builds the base images if missing.
# Prints the environment the tests need (DOCKER_HOST, TESTCONTAINERS_*) as `export` lines on stdout:
#     eval "$(bash stacks/engine/setup.sh)"
# Progress goes to stderr.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
suites=${INTERCEDE_BASE_SUITES:-"bookworm trixie sid"}
cache=${INTERCEDE_CACHE:-/var/cache/intercede}
log() { printf '[engine] %s\n' "$*" >&2; }

docker_works() { command -v docker >/dev/null && docker info >/dev/null 2>&1; }

if [ -z "${DOCKER_HOST:-}" ] && docker_works && ! docker info 2>/dev/null | grep -qi podman; then
  log "using the Docker engine"
  engine=docker
else
  engine=podman
  need=()
  command -v podman >/dev/null || need+=(podman)
  command -v runc >/dev/null || need+=(runc)
  command -v debootstrap >/dev/null || need+=(debootstrap)
  command -v curl >/dev/null || need+=(curl)
  if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]} from Debian"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
  fi
  # runc (crun cannot run under hybrid cgroups here) and ulimits below the hard nofile limit of these machines.
  if ! cmp -s "$here/containers.conf" /etc/containers/containers.conf; then
    log "installing containers.conf (runc, explicit ulimits)"
    mkdir -p /etc/containers && cp "$here/containers.conf" /etc/containers/containers.conf
  fi
  # INTERCEDE_PODMAN_SOCK: another API socket, e.g. for a service over another storage root (a cold-run measurement).
  sock=${INTERCEDE_PODMAN_SOCK:-/run/podman/podman.sock}
  if ! curl -sf --unix-socket "$sock" http://d/_ping >/dev/null 2>&1; then
    log "starting the podman API service on $sock"
    mkdir -p "$(dirname "$sock")"
    # Its own session, started from /: it outlives the process group that started it (a test run stopped with
    # Ctrl-C) and keeps no clone's directory as its working directory (removing that clone would break every
    # container start through the API afterwards).
    (cd / && exec setsid nohup podman system service --time=0 "unix://$sock" </dev/null >/var/log/podman-service.log \
      2>&1) &
    for _ in $(seq 100); do curl -sf --unix-socket "$sock" http://d/_ping >/dev/null 2>&1 && break; sleep 0.1; done
    curl -sf --unix-socket "$sock" http://d/_ping >/dev/null || { log "podman service did not start"; exit 1; }
  fi
  echo "export DOCKER_HOST=unix://$sock"
fi
echo "export INTERCEDE_ENGINE=$engine"
echo "export TESTCONTAINERS_RYUK_DISABLED=true"
echo "export TESTCONTAINERS_CONNECTION_MODE=docker_host"

# Local Debian base images: no registry is reachable, so build them with debootstrap from Debian's archive.
for suite in $suites; do
  if $engine image inspect "local/debian:$suite" >/dev/null 2>&1; then continue; fi
  tarball="$cache/debian-$suite.tar"
  if [ ! -s "$tarball" ]; then
    log "debootstrap $suite (about a minute)"
    root=$(mktemp -d)
    debootstrap --variant=minbase "$suite" "$root" http://deb.debian.org/debian >&2
    # The archive is a frozen snapshot: sid's index would count as expired.
    echo 'Acquire::Check-Valid-Until "false";' >"$root/etc/apt/apt.conf.d/99no-check-valid-until"
    mkdir -p "$cache"
    tar -C "$root" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$root"
  fi
  log "importing local/debian:$suite"
  $engine import "$tarball" "local/debian:$suite" >&2
done
