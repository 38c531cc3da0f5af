#!/bin/bash
# Build the Sluice image and export its root filesystem for the image tests.
#
#   lab/image.sh build    build ghcr.io/sluice-dev/sluice:<version> (Docker if an engine
#                         answers, else buildah), the base image first when needed
#   lab/image.sh export   build, then copy the image's root filesystem to
#                         $LAB_CACHE/image/rootfs (what tests/image and the lab test chroot into)
#
# Without a Docker engine, buildah runs as root with no daemon: its own storage under
# $LAB_CACHE/containers (overlay driver; set SLUICE_STORAGE_DRIVER=vfs where overlay
# mounts fail), RUN steps with --isolation chroot (no runtime, no user namespaces needed),
# --layers so a warm rebuild reuses the base and apt layers.
#
# The base: the Dockerfile says python:3.11-slim-bookworm. When no registry answers, a
# stand-in is built under that very name from Debian bookworm (debootstrap --variant=minbase
# with python3 3.11 and python3-venv, from the Debian mirror apt uses) and cached as
# $LAB_CACHE/image/bookworm-base.tar. Its python3 is Debian's (/usr/bin, externally managed);
# the Dockerfile installs Sluice into a virtualenv, so it builds the same on either base.
set -euo pipefail
cd "$(dirname "$0")/.."
LAB_CACHE=${LAB_CACHE:-$PWD/.lab}
WORK=$LAB_CACHE/image
VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' csi_driver/__init__.py)
IMAGE=${SLUICE_IMAGE:-ghcr.io/sluice-dev/sluice:$VERSION}
BASE=docker.io/library/python:3.11-slim-bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# the CA bundle pip trusts here (a TLS-inspecting proxy's CA is in it): a build secret
PIP_CA=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
STORE=(--root "$LAB_CACHE/containers/storage" --runroot "$LAB_CACHE/containers/run"
       --storage-driver "${SLUICE_STORAGE_DRIVER:-overlay}")
mkdir -p "$WORK"

log() { printf '[image %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
bah() { nice -n 10 buildah "${STORE[@]}" "$@"; }
docker_engine() { command -v docker >/dev/null && timeout 10 docker info >/dev/null 2>&1; }

debootstrap_base() {
    local tar=$WORK/bookworm-base.tar tmp=$WORK/base-rootfs.tmp
    [ -s "$tar" ] && return
    log "no registry: debootstrap bookworm (minbase + python3, python3-venv) from $MIRROR"
    rm -rf "$tmp"
    nice -n 10 debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$tmp" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
    # the image's apt sources are the mirror's; caches and lists do not belong in a base
    rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/*
    tar -C "$tmp" --numeric-owner -cf "$tar.part" . && mv "$tar.part" "$tar"
    rm -rf "$tmp"
}

ensure_base() {
    if bah inspect --type image "$BASE" >/dev/null 2>&1; then return; fi
    if timeout 60 buildah "${STORE[@]}" pull --quiet "$BASE" >/dev/null 2>&1; then
        log "pulled $BASE"; return
    fi
    debootstrap_base
    local c
    c=$(bah from scratch)
    bah add "$c" "$WORK/bookworm-base.tar" / >/dev/null
    bah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env LANG=C.UTF-8 --cmd python3 --os linux --arch amd64 \
        --label dev.sluice.base=debootstrap-bookworm "$c"
    bah commit --quiet "$c" "$BASE" >/dev/null
    bah rm "$c" >/dev/null
    log "built the stand-in $BASE from debootstrap"
}

build() {
    local start=$SECONDS
    if docker_engine; then
        DOCKER_BUILDKIT=1 docker build --secret "id=pip-ca,src=$PIP_CA" -t "$IMAGE" .
    else
        ensure_base
        bah bud --isolation chroot --layers --pull=never --secret "id=pip-ca,src=$PIP_CA" \
            -t "$IMAGE" . >"$WORK/build.log" 2>&1 \
            || { tail -30 "$WORK/build.log" >&2; exit 1; }
    fi
    log "built $IMAGE in $((SECONDS - start)) s"
}

image_id() {
    if docker_engine; then docker image inspect --format '{{.Id}}' "$IMAGE"; else bah inspect --type image --format '{{.FromImageID}}' "$IMAGE"; fi
}

export_rootfs() {
    local out=$WORK/rootfs c mnt id
    id=$(image_id)
    if [ -d "$out" ] && [ "$(cat "$WORK/rootfs.id" 2>/dev/null)" = "$id" ]; then
        log "root filesystem of $IMAGE ($id) already in $out"; return
    fi
    rm -rf "$out.tmp" && mkdir -p "$out.tmp"
    if docker_engine; then
        c=$(docker create "$IMAGE")
        docker export "$c" | tar -C "$out.tmp" -xf -
        docker rm "$c" >/dev/null
    else
        c=$(bah from --pull=never "$IMAGE")
        mnt=$(bah mount "$c")
        cp -a "$mnt/." "$out.tmp/"
        bah umount "$c" >/dev/null
        bah rm "$c" >/dev/null
    fi
    # the image's config (entry point, environment) as {"Entrypoint": [...], "Env": [...], ...}
    if docker_engine; then
        docker image inspect --format '{{json .Config}}' "$IMAGE" >"$out.tmp.config.json"
    else
        bah inspect --type image "$IMAGE" | python3 -c \
            'import json, sys; c = json.load(sys.stdin)["OCIv1"]["config"]; json.dump({k[0].upper() + k[1:]: v for k, v in c.items()}, sys.stdout)' \
            >"$out.tmp.config.json"
    fi
    rm -rf "$out" && mv "$out.tmp" "$out" && mv "$out.tmp.config.json" "$WORK/config.json"
    echo "$id" >"$WORK/rootfs.id"
    log "root filesystem of $IMAGE in $out"
}

case "${1:-build}" in
    build) build ;;
    export) build; export_rootfs ;;
    *) echo "usage: $0 build|export" >&2; exit 2 ;;
esac
