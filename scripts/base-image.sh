#!/usr/bin/env bash
# Makes a Debian bookworm base image without any image registry: debootstrap
# (minbase) from the Debian mirror apt on this machine already uses, with
# what selfdeploy's runtime needs (bash, git, openssh-client,
# ca-certificates), imported with `docker import`. Cached by its tag: a
# second run with the image present does nothing.
#
#   scripts/base-image.sh [TAG]     # default selfdeploy-base:bookworm
#
# Environment: DEBIAN_MIRROR (default: the first Debian mirror of apt's
# sources), DOCKER (default: docker). Needs root (debootstrap) and
# debootstrap (apt-get install -y debootstrap). Prints the tag.
set -euo pipefail

tag=${1:-selfdeploy-base:bookworm}
docker=${DOCKER:-docker}
packages=bash,git,openssh-client,ca-certificates

if "$docker" image inspect --format '{{.Id}}' -- "$tag" >/dev/null 2>&1; then
    echo "$tag"
    exit 0
fi

# The mirror apt uses: deb822 `URIs:` lines, else one-line `deb URI ...`;
# the security archive serves no base system.
mirror=${DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
    mirror=$(
        {
            cat /etc/apt/sources.list.d/*.sources 2>/dev/null | sed -n 's/^URIs:[[:space:]]*//p' | tr ' ' '\n'
            sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\).*/\2/p' \
                /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null
        } | grep -v -e security -e '^$' | head -n 1 || true
    )
fi
if [ -z "$mirror" ]; then
    echo "error: no Debian mirror in apt's sources; set DEBIAN_MIRROR" >&2
    exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1; then
    echo "error: debootstrap is not installed; apt-get install -y debootstrap" >&2
    exit 1
fi

root=$(mktemp -d "${TMPDIR:-/tmp}/selfdeploy-base.XXXXXX")
trap 'rm -rf -- "$root"' EXIT
echo "building $tag from $mirror (debootstrap --variant=minbase bookworm)" >&2
if ! debootstrap --variant=minbase --include="$packages" bookworm "$root/rootfs" "$mirror" \
    >"$root/debootstrap.log" 2>&1; then
    tail -n 20 "$root/debootstrap.log" >&2
    echo "error: debootstrap failed (above)" >&2
    exit 1
fi
# No package lists or caches in the image.
rm -rf "$root/rootfs/var/cache/apt/archives/"*.deb "$root/rootfs/var/lib/apt/lists/"*
tar -C "$root/rootfs" -c . | "$docker" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - "$tag" >/dev/null
echo "$tag"
