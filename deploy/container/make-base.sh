#!/bin/sh
# Make a Debian bookworm base image locally (debootstrap + podman import) for hosts with no registry.
#
# Usage: make-base.sh [IMAGE]      (default localhost/slotwatch-base:bookworm)
#
# The Containerfile's default base is debian:bookworm-slim pinned by digest; where no container
# registry is reachable (CI, air-gapped hosts) this builds an equivalent minbase root filesystem
# from a Debian mirror and imports it, so `podman build --build-arg BASE_IMAGE=localhost/...`
# works unchanged. Both steps are cached: the root filesystem tarball under CONTAINER_BASE_CACHE
# (default /var/cache/slotwatch-ci) and the image in podman's store. Needs root and debootstrap.
#
# DEBIAN_MIRROR overrides the mirror; by default the first Debian URI of this host's apt sources.
set -eu

image=${1:-localhost/slotwatch-base:bookworm}
cache=${CONTAINER_BASE_CACHE:-/var/cache/slotwatch-ci}
tarball="$cache/bookworm-minbase.tar"

if podman image exists "$image"; then
    echo "make-base: $image already present"
    exit 0
fi

if [ -z "${DEBIAN_MIRROR:-}" ]; then
    DEBIAN_MIRROR=$(
        { grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}'
          grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
              | awk '{print $2}'; } \
        | grep -E '/debian/?$' | head -n 1
    )
    DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
fi

mkdir -p "$cache"
if [ ! -s "$tarball" ]; then
    work=$(mktemp -d "$cache/rootfs.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    echo "make-base: debootstrap bookworm from $DEBIAN_MIRROR"
    debootstrap --variant=minbase bookworm "$work/rootfs" "$DEBIAN_MIRROR" >"$work/debootstrap.log" 2>&1 \
        || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }
    # The slim image carries no package cache or lists; neither should ours.
    rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
    tar --numeric-owner -C "$work/rootfs" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
fi

echo "make-base: importing $tarball as $image"
podman import --change 'CMD ["bash"]' "$tarball" "$image" >/dev/null
