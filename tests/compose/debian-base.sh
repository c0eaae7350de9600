#!/usr/bin/env bash
# Builds a Debian 12 (bookworm) base image for the Dockerfile from Debian's own packages, for a
# machine that cannot pull images from a registry but reaches a Debian mirror:
#
#   sudo tests/compose/debian-base.sh                      # -> localhost/hetnas-base:bookworm
#   podman build --build-arg BASE_IMAGE=localhost/hetnas-base:bookworm -t hetnas:0.2.0 .
#   (or BASE_IMAGE=localhost/hetnas-base:bookworm in .env, then `docker compose build`)
#
# The image holds Debian's python3 (3.11.2 in bookworm) with venv support and CA certificates,
# the security and point-release updates of the day, and apt sources pointing at the mirror, so
# that `apt-get install` works in images built on it. Needs root (debootstrap), debootstrap and
# podman (or ENGINE=docker). A build of the same script, mirror and suite is reused unless
# REBUILD=1.
#
#   TAG             image name (default localhost/hetnas-base:bookworm)
#   DEBIAN_MIRROR   default http://deb.debian.org/debian
#   DEBIAN_SECURITY default http://deb.debian.org/debian-security
#   ENGINE          podman (default) or docker
set -euo pipefail

TAG=${TAG:-localhost/hetnas-base:bookworm}
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY=${DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
ENGINE=${ENGINE:-podman}
PACKAGES=python3,python3-venv,ca-certificates

say() { echo "debian-base: $*" >&2; }
[ "$(id -u)" -eq 0 ] || { say "run as root (debootstrap needs it)"; exit 2; }
for tool in debootstrap "$ENGINE"; do
  command -v "$tool" >/dev/null || { say "$tool is not installed (apt-get install $tool)"; exit 2; }
done

# What the image is made of: this script, the mirrors and the suite. An image with the same
# label is the same build.
inputs=$( { cat "$0"; echo "$SUITE $MIRROR $SECURITY $PACKAGES"; } | sha256sum | cut -c1-16)
if [ "${REBUILD:-0}" != 1 ] && \
    [ "$("$ENGINE" image inspect --format '{{ index .Config.Labels "hetnas.base.inputs" }}' \
         "$TAG" 2>/dev/null)" = "$inputs" ]; then
  say "$TAG is up to date (inputs $inputs)"
  exit 0
fi

root=$(mktemp -d /var/tmp/hetnas-base.XXXXXX)
cleanup() {
  # debootstrap mounts /proc and /sys in the tree while it works; never delete through a mount.
  for mount in proc sys dev/pts; do
    mountpoint -q "$root/$mount" 2>/dev/null && umount -l "$root/$mount" || true
  done
  rm -rf --one-file-system "$root"
  rm -f "$root.log"
}
trap cleanup EXIT

started=$SECONDS
say "debootstrap $SUITE from $MIRROR into $root"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR" \
  >"$root.log" 2>&1 || { tail -n 40 "$root.log" >&2; say "debootstrap failed (log above)"; exit 1; }
rm -f "$root.log"

cat >"$root/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY $SUITE-security main
EOF
# Point releases and security fixes; then no caches or package lists in the image.
chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
  sh -c 'apt-get update -qq && apt-get upgrade -y -qq && apt-get clean' >"$root.log" 2>&1 \
  || { tail -n 40 "$root.log" >&2; say "apt-get upgrade in the new tree failed"; exit 1; }
rm -f "$root.log"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/* \
  "$root"/tmp/* "$root"/root/.cache
: >"$root/etc/resolv.conf"   # the engine provides its own
# Images started without a terminal should not ask questions.
echo 'debconf debconf/frontend select Noninteractive' | chroot "$root" debconf-set-selections

say "importing into $ENGINE as $TAG"
tar --numeric-owner -C "$root" -c . | "$ENGINE" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  --change "LABEL hetnas.base.inputs=$inputs" \
  --change "LABEL org.opencontainers.image.description=Debian $SUITE with python3 (debootstrap)" \
  - "$TAG" >"$root.log" 2>&1 || { cat "$root.log" >&2; say "$ENGINE import failed"; exit 1; }
rm -f "$root.log"
"$ENGINE" run --rm "$TAG" python3 -c 'import ssl, venv, sys; print("python", sys.version.split()[0])' >&2
say "$TAG built in $((SECONDS - started)) s"
