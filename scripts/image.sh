#!/usr/bin/env bash
# Build the respool image without a Docker engine: buildah, chroot isolation, local storage.
#
#   bash scripts/image.sh [--base IMAGE] [--tag TAG]
#
# Builds the ordinary ./Dockerfile into local container storage as localhost/respool:<version>
# (the version of pyproject.toml). The base is, in this order: --base (or $RESPOOL_IMAGE_BASE),
# the official python:3.11-slim-bookworm if it is already in local storage, else one made here
# from Debian's packages (mmdebstrap --variant=essential + python3, python3-venv,
# ca-certificates, passwd; no apt, perl, documentation, locales or iconv modules; cached as
# localhost/respool-base:bookworm-essential), because machines without registry access cannot
# pull the official one. Needs root (or a buildah set up for rootless),
# buildah and mmdebstrap (Debian packages; installed here with apt-get when missing and root).
#
# Prints the image's name on stdout; progress, the build time and the image size on stderr.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n1)"
TAG="localhost/respool:$VERSION"
BASE="${RESPOOL_IMAGE_BASE:-}"
OFFICIAL_BASE="python:3.11-slim-bookworm"
# The tag names the recipe: a machine holding a base made by an older recipe makes this one.
DEBIAN_BASE="localhost/respool-base:bookworm-essential"
DEBIAN_SUITE="bookworm"

while [ "$#" -gt 0 ]; do
    case "$1" in
        --base) BASE="$2"; shift 2 ;;
        --tag) TAG="$2"; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

ensure_tools() {
    local missing=()
    command -v buildah >/dev/null 2>&1 || missing+=(buildah)
    command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
    [ "${#missing[@]}" -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1 \
        || die "${missing[*]} needed: install the Debian package(s) ${missing[*]}"
    say "installing ${missing[*]} (Debian packages)"
    { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2; } \
        || die "apt-get could not install ${missing[*]}"
}

image_exists() { buildah inspect --type image "$1" >/dev/null 2>&1; }

make_debian_base() {
    # The essential variant is Debian's Essential set only (mmdebstrap resolves with the host's
    # apt; no apt inside: nothing is installed into the image later). python3-venv brings the
    # venv module the Dockerfile's build stage uses, passwd its useradd. Left out: documentation,
    # manuals, translations, glibc's iconv modules (Python has its own codecs), and usrmerge with
    # the perl it pulls in (about 50 MB; the /usr merge is done by then, usr-is-merged stays).
    local started work container
    started=$SECONDS
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' RETURN
    say "making $DEBIAN_BASE from Debian $DEBIAN_SUITE packages (mmdebstrap, about 2-5 minutes)"
    mmdebstrap --quiet --variant=essential \
        --include=python3,python3-venv,ca-certificates,passwd,usr-is-merged \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-include=/usr/share/locale/locale.alias' \
        --dpkgopt='path-exclude=/usr/lib/*-linux-gnu/gconv/*' \
        --customize-hook='chroot "$1" dpkg --purge usrmerge libfile-find-rule-perl libnumber-compare-perl libtext-glob-perl perl libperl5.36 perl-modules-5.36 libgdbm-compat4 >/dev/null' \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
        "$DEBIAN_SUITE" "$work/rootfs.tar" >&2 || die "mmdebstrap failed (see above)"
    container="$(buildah from scratch)"
    buildah add --quiet "$container" "$work/rootfs.tar" / >/dev/null
    buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env LANG=C.UTF-8 --cmd python3 \
        --label org.opencontainers.image.description="Debian $DEBIAN_SUITE Essential set with python3 (respool's local build base)" \
        "$container"
    buildah commit --quiet --rm "$container" "$DEBIAN_BASE" >/dev/null
    say "made $DEBIAN_BASE in $((SECONDS - started)) s"
}

ensure_tools
if [ -z "$BASE" ]; then
    if image_exists "$OFFICIAL_BASE"; then
        BASE="$OFFICIAL_BASE"
    else
        image_exists "$DEBIAN_BASE" || make_debian_base
        BASE="$DEBIAN_BASE"
    fi
fi
say "building $TAG on $BASE (buildah, chroot isolation)"
started=$SECONDS
# The host's CA bundle reaches the build as a secret (for a TLS-intercepting proxy), never a layer.
secret=()
ca_bundle="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"
[ -s "$ca_bundle" ] && secret=(--secret "id=ca-certificates,src=$ca_bundle")
buildah build --quiet --isolation chroot --layers --pull=never --build-arg "BASE=$BASE" "${secret[@]}" \
    --tag "$TAG" --file Dockerfile . >&2 || die "buildah build failed (see above)"
size="$(buildah images --format '{{.Size}}' "$TAG" | head -n1)"
say "built $TAG in $((SECONDS - started)) s; size $size"
echo "$TAG"
