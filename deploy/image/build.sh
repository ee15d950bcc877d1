#!/usr/bin/env bash
# Builds OCI image archives without Docker and without any registry, for
# `ctr -n k8s.io images import FILE` (containerd 1.6) on the nodes of the
# project's Kubernetes lab:
#
#   flannel-rs.oci.tar  the DaemonSet's image (name: first `image:` of
#                       deploy/kube-flannel-rs.yml, or --name): Debian bookworm
#                       minbase + nftables + iptables (mmdebstrap), plus
#                       flanneld-rs, flannel-rs, flannelctl in /usr/local/bin
#   flannel-rs.binaries.sha256
#                       sha256sum of the three binaries in that image (bare
#                       names: `cd target/release && sha256sum -c FILE`)
#   test.oci.tar        localhost/flannel-rs/test:1, busybox-static + applets
#   pause.oci.tar       k8s.gcr.io/pause:3.2, pause.c from the cached
#                       Kubernetes 1.20.2 tree (scripts/k8s-build.sh)
#   lab-dns.oci.tar     localhost/flannel-rs/lab-dns:1, the lab's cluster DNS
#                       (deploy/cluster-dns, built by scripts/k8s-build.sh)
#
# and with --e2e three images that Kubernetes 1.20.2's e2e.test runs by exact
# name (test/utils/image/manifest.go of the tree):
#
#   agnhost.oci.tar     k8s.gcr.io/e2e-test-images/agnhost:2.21, upstream's
#                       test/images/agnhost/Dockerfile on a second cached
#                       Debian base (bookworm minbase + dig, curl, nc, ip,
#                       iperf, bash) instead of alpine; /agnhost from
#                       `scripts/k8s-build.sh --e2e`
#   busybox-e2e.oci.tar docker.io/library/busybox:1.29, the test image's
#                       content with Cmd ["sh"]
#   jessie-dnsutils.oci.tar gcr.io/kubernetes-e2e-test-images/jessie-dnsutils:1.0,
#                       the DNS specs' prober (dig, getent, hostname): the
#                       agnhost image's Debian base
#
# Archive format: an OCI image layout in a tar (skopeo's `oci-archive:`), one
# image whose index entry carries the full reference in
# `org.opencontainers.image.ref.name`. containerd 1.6's importer keeps a ref
# name that parses as a full reference as the image name (a bare tag would
# become `import-DATE:TAG`; verified with containerd 1.6.20). Layers stay
# gzip-compressed, and `skopeo copy oci-archive:... docker://...` pushes it.
#
# Caching (under $FLANNEL_RS_IMAGE_CACHE, default /var/cache/flannel-rs/images):
#   base/<suite>-<variant>-<key>.tar  mmdebstrap's output, key = hash of its
#                                     arguments (suite, packages, hooks, ...)
#   base/<suite>-<variant>-<key>.oci/ the same as a one-layer OCI layout
# so later runs only add the binaries layer. test, pause (and the --e2e
# images) are rebuilt when their archive is missing or the hash of their
# inputs (stored as an image label) changed. A flock on the cache serializes
# concurrent runs.
#
# Run as root on Debian 12 (installs the Debian packages it needs).
set -Eeuo pipefail  # -E: the ERR trap below reports failures inside functions too

usage() {
  cat <<EOF
usage: deploy/image/build.sh [--name IMAGE] [--bin-dir DIR] [--out DIR] [--e2e]

  --name IMAGE   name of the flannel-rs image (default: the first image: in
                 deploy/kube-flannel-rs.yml, now $(manifest_image 2>/dev/null || echo '?'))
  --bin-dir DIR  where flanneld-rs, flannel-rs, flannelctl are
                 (default: $REPO/target/release)
  --out DIR      where the archives go (default: $CACHE)
  --e2e          also agnhost.oci.tar (k8s.gcr.io/e2e-test-images/agnhost:2.21)
                 and busybox-e2e.oci.tar (docker.io/library/busybox:1.29) for
                 Kubernetes' e2e.test; needs agnhost from
                 scripts/k8s-build.sh --e2e (waits up to 20 min for it)

Writes flannel-rs.oci.tar, flannel-rs.binaries.sha256, test.oci.tar and
pause.oci.tar into --out. Env: FLANNEL_RS_IMAGE_CACHE (base image cache and
lock, default /var/cache/flannel-rs/images), FLANNEL_RS_K8S_CACHE (Kubernetes
tree, default /var/cache/flannel-rs/k8s-1.20.2), FLANNEL_RS_DEBIAN_MIRROR.
EOF
}

say() { echo "[image $(date +%T)] $*"; }
die() { echo "build.sh: error: $*" >&2; exit 1; }
trap 'echo "build.sh: error: \`$BASH_COMMAND\` failed (exit $?, line $LINENO)" >&2' ERR

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SELF=$REPO/deploy/image/build.sh
MANIFEST=$REPO/deploy/kube-flannel-rs.yml
CACHE=${FLANNEL_RS_IMAGE_CACHE:-/var/cache/flannel-rs/images}
K8S_CACHE=${FLANNEL_RS_K8S_CACHE:-/var/cache/flannel-rs/k8s-1.20.2}
K8S_SRC=$K8S_CACHE/src/kubernetes-1.20.2
PAUSE_DIR=$K8S_SRC/build/pause
MIRROR=${FLANNEL_RS_DEBIAN_MIRROR:-}

SUITE=bookworm
VARIANT=minbase
BASE_PACKAGES=nftables,iptables
BINARIES=(flanneld-rs flannel-rs flannelctl)
CARGO_HINT="cargo build --release -p flanneld-rs -p cni-plugin -p flannelctl"
TEST_NAME=localhost/flannel-rs/test:1
TEST_APPLETS=(sh ping wget nc ip httpd sleep)
# Note for tests using these busybox images: Debian bookworm's busybox 1.35
# `wget -T N` segfaults; use `timeout N wget ...` instead.
# kubelet 1.20's default --pod-infra-container-image. The tree's Makefile says
# TAG = 3.4, but its CHANGELOG.md ends at 3.2 and linux/pause.c is the 3.2
# program (3.3/3.4 changed the Windows image and the build only).
PAUSE_NAME=k8s.gcr.io/pause:3.2
# Upstream: CFLAGS = -Os -Wall -Werror -static -DVERSION=v$(TAG)-$(REV), then
# strip; REV is `git describe` of the tree, i.e. the Kubernetes tag.
PAUSE_CFLAGS=(-Os -Wall -Werror -static -DVERSION=v3.2-v1.20.2)
PATH_ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
INPUTS_LABEL=org.flannel-rs.image.inputs
# --e2e. The tree's test/images/agnhost/VERSION says 2.25; e2e.test 1.20.2
# asks for 2.21 (manifest.go), so the binary of the tree gets that name.
AGNHOST_NAME=k8s.gcr.io/e2e-test-images/agnhost:2.21
BUSYBOX_E2E_NAME=docker.io/library/busybox:1.29
JESSIE_NAME=gcr.io/kubernetes-e2e-test-images/jessie-dnsutils:1.0
LAB_DNS_NAME=localhost/flannel-rs/lab-dns:1
LAB_DNS=$K8S_CACHE/bin/flannel-rs-lab-dns
# alpine's `bind-tools curl netcat-openbsd iproute2 iperf bash` in Debian:
# bind9-dnsutils is what bookworm's transitional dnsutils installs (dig,
# nslookup, host). iproute2 has ss, util-linux (essential) nsenter. wget:
# alpine has busybox's, and Services specs run `wget -T 1 -qO- URL` in
# agnhost exec pods ("wget: not found" failed service-proxy-name without it).
E2E_BASE_PACKAGES=bind9-dnsutils,curl,wget,netcat-openbsd,iproute2,iperf,bash
# scripts/k8s-build.sh --e2e installs agnhost into $K8S_CACHE/bin at the end;
# Kubernetes' build puts it into the tree's _output first (with rsync, which
# renames a complete file into place, so a file found there is whole).
AGNHOST_CACHED=$K8S_CACHE/bin/agnhost
AGNHOST_BUILT=$K8S_SRC/_output/local/bin/linux/amd64/agnhost
PORTER_DIR=$K8S_SRC/test/images/agnhost/porter

manifest_image() {
  local v
  v=$(awk '/^[[:space:]]*image:/ { print $2; exit }' "$MANIFEST")
  v=${v//\"/}
  v=${v//\'/}
  [ -n "$v" ] || return 1
  echo "$v"
}

NAME=
BIN_DIR=$REPO/target/release
OUT=$CACHE
E2E=0
while [ $# -gt 0 ]; do
  case $1 in
    --name) [ $# -ge 2 ] || die "--name needs a value"; NAME=$2; shift 2 ;;
    --name=*) NAME=${1#*=}; shift ;;
    --bin-dir) [ $# -ge 2 ] || die "--bin-dir needs a value"; BIN_DIR=$2; shift 2 ;;
    --bin-dir=*) BIN_DIR=${1#*=}; shift ;;
    --out) [ $# -ge 2 ] || die "--out needs a value"; OUT=$2; shift 2 ;;
    --out=*) OUT=${1#*=}; shift ;;
    --e2e) E2E=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

# ---- checks that need no packages, so mistakes fail at once ---------------

[ "$(id -u)" -eq 0 ] || die "run as root (mmdebstrap, apt-get and ownership 0 in the layers need it)"

if [ -z "$NAME" ]; then
  NAME=$(manifest_image) || die "no image: line in $MANIFEST; pass --name"
fi
# containerd stores the name verbatim; kubelet asks for the normalized one
# (docker.io/library/x:latest for x), so only a full reference can match.
ref_re='^[A-Za-z0-9.-]+(:[0-9]+)?(/[a-z0-9]+([._-]+[a-z0-9]+)*)+:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$'
domain=${NAME%%/*}
if ! [[ $NAME =~ $ref_re ]] || ! [[ $domain == *.* || $domain == *:* || $domain == localhost ]]; then
  die "image name '$NAME' is not a full reference REGISTRY/PATH:TAG (e.g. ghcr.io/flannel-rs/flannel-rs:0.1.0)"
fi

case $(dpkg --print-architecture) in
  amd64) ARCH=amd64 ;;
  arm64) ARCH=arm64 ;;
  *) die "unsupported architecture $(dpkg --print-architecture) (amd64 or arm64)" ;;
esac

[ -d "$BIN_DIR" ] \
  || die "--bin-dir $BIN_DIR does not exist; build the binaries first: (cd $REPO && $CARGO_HINT)"
BIN_DIR=$(cd "$BIN_DIR" && pwd)
for b in "${BINARIES[@]}"; do
  if [ ! -f "$BIN_DIR/$b" ] || [ ! -x "$BIN_DIR/$b" ]; then
    die "$BIN_DIR/$b is missing; build the release binaries first: (cd $REPO && $CARGO_HINT)"
  fi
done

mkdir -p "$OUT" "$CACHE/base"
OUT=$(cd "$OUT" && pwd)

# ---- Debian packages --------------------------------------------------------

# mount and gpg: mmdebstrap's root mode mounts /proc etc. and checks keyrings.
PACKAGES=(mmdebstrap mount gpg umoci skopeo busybox-static gcc libc6-dev binutils)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed (is the Debian archive reachable?)"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
fi

# ---- --e2e inputs (before the lock: waiting here blocks no other build) ----

# Sets AGNHOST to the agnhost binary, waiting for a running
# `scripts/k8s-build.sh --e2e` to produce it.
find_agnhost() {
  if [ -f "$AGNHOST_CACHED" ] && [ -x "$AGNHOST_CACHED" ]; then
    AGNHOST=$AGNHOST_CACHED
    return
  fi
  local hint="build it first: scripts/k8s-build.sh --e2e"
  if [ ! -x "$AGNHOST_BUILT" ] && [ -e "$K8S_CACHE/.lock" ] && ! flock -n "$K8S_CACHE/.lock" true; then
    # A scripts/k8s-build.sh holds its lock: wait for it, then look again.
    say "waiting for the running scripts/k8s-build.sh to finish"
    flock "$K8S_CACHE/.lock" true
    [ -x "$AGNHOST_CACHED" ] && { AGNHOST=$AGNHOST_CACHED; return; }
  fi
  [ -x "$AGNHOST_BUILT" ] || die "no agnhost binary ($AGNHOST_CACHED); $hint"
  AGNHOST=$AGNHOST_BUILT
}

have_porter=1
if [ $E2E = 1 ]; then
  if [ ! -f "$PORTER_DIR/localhost.crt" ] || [ ! -f "$PORTER_DIR/localhost.key" ]; then
    have_porter=0
    [ -f "$OUT/agnhost.oci.tar" ] \
      || die "$PORTER_DIR/localhost.{crt,key} not found: the agnhost image takes them from the Kubernetes 1.20.2 source tree; run scripts/k8s-build.sh --e2e first (without FLANNEL_RS_K8S_KEEP_SRC=0, which deletes the tree)"
  else
    find_agnhost
  fi
fi

# ---- lock and scratch space -------------------------------------------------

exec 9>"$CACHE/.lock"
if ! flock -n 9; then
  say "another build holds $CACHE/.lock; waiting"
  flock 9
fi

WORK=$(mktemp -d "$CACHE/.work.XXXXXX")
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
export TMPDIR=$WORK  # skopeo's and umoci's temporary files

rfc3339() { date -u -d "@$1" +%Y-%m-%dT%H:%M:%SZ; }

# A layer from a directory: sorted, owner 0, every mtime $2 (epoch seconds).
make_layer() { # <rootfs dir> <epoch> <out.tar>
  (cd "$1" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort) >"$WORK/layer.list"
  tar --create --file "$3" --directory "$1" --no-recursion --verbatim-files-from \
    --files-from "$WORK/layer.list" --format=gnu --numeric-owner --owner=0 --group=0 \
    --mtime="@$2"
}

# <layout> <tag> -> <out file> named <name>, written atomically.
export_archive() { # <layout> <tag> <name> <out file>
  local tmp
  tmp="$(dirname "$4")/.$(basename "$4").tmp.$$"
  rm -f "$tmp"
  skopeo --insecure-policy copy --quiet "oci:$1:$2" "oci-archive:$tmp:$3" \
    || die "skopeo copy to $tmp failed"
  mv -f "$tmp" "$4"
}

# The hash of a single-image archive's inputs, from its label (empty if none).
archive_inputs() { # <archive>
  [ -f "$1" ] || return 0
  skopeo --insecure-policy inspect --format "{{ index .Labels \"$INPUTS_LABEL\" }}" \
    "oci-archive:$1" 2>/dev/null || true
}

# ---- 1. flannel-rs ----------------------------------------------------------

# Checked before the long base build, so a missing tree fails early.
PAUSE_C=$PAUSE_DIR/linux/pause.c
have_pause_src=1
[ -f "$PAUSE_C" ] || have_pause_src=0
if [ $have_pause_src = 0 ] && [ ! -f "$OUT/pause.oci.tar" ]; then
  die "$PAUSE_C not found: the pause image is compiled from the Kubernetes 1.20.2 source tree; run scripts/k8s-build.sh first (without FLANNEL_RS_K8S_KEEP_SRC=0, which deletes the tree)"
fi

# mmdebstrap already drops apt's lists and caches; also drop the logs and
# the *-old backups, which only make the layer differ between builds.
# shellcheck disable=SC2016 # "$1" is the chroot, expanded by mmdebstrap's sh
CLEAN_HOOK='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/apt/* "$1"/var/log/dpkg.log "$1"/var/log/alternatives.log "$1"/var/cache/debconf/*-old "$1"/var/lib/dpkg/*-old'

# A cached Debian base with <packages> (comma-separated) on top of minbase, as
# $BASE.tar and the one-layer OCI layout $BASE.oci. Sets BASE and BASE_EPOCH.
debian_base() { # <packages>
  local pkgs=$1 key
  local args=(
    --mode=root --variant="$VARIANT" --architectures="$ARCH" --include="$pkgs"
    # merged /usr set up directly, not by installing usrmerge (which pulls perl)
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
    # Like debian:bookworm-slim: no manuals, info pages, translations, docs
    # (except copyright files). Stays in /etc/dpkg/dpkg.cfg.d for later installs.
    --dpkgopt='path-exclude=/usr/share/man/*'
    --dpkgopt='path-exclude=/usr/share/info/*'
    --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-include=/usr/share/locale/locale.alias'
    --dpkgopt='path-exclude=/usr/share/doc/*'
    --dpkgopt='path-include=/usr/share/doc/*/copyright'
    --dpkgopt='path-exclude=/usr/share/lintian/*'
    --customize-hook="$CLEAN_HOOK"
    "$SUITE"
  )
  key=$(printf '%s\n' "${args[@]}" "mirror=$MIRROR" | sha256sum | cut -c1-16)
  BASE=$CACHE/base/$SUITE-$VARIANT-$key
  if [ ! -f "$BASE.tar" ]; then
    say "building the Debian base with mmdebstrap ($SUITE $VARIANT + ${pkgs//,/ }; first run: a minute or two; log: $BASE.log)"
    local mirror_args=()
    [ -z "$MIRROR" ] || mirror_args=("$MIRROR")
    # /dev is the runtime's; keep only the directory.
    if ! mmdebstrap "${args[@]}" - "${mirror_args[@]}" 2>"$BASE.log" \
        | mmtarfilter --path-exclude='/dev/*' >"$WORK/base.tar"; then
      tail -n 20 "$BASE.log" >&2
      die "mmdebstrap failed (full log: $BASE.log); check that the Debian archive is reachable"
    fi
    mv -f "$WORK/base.tar" "$BASE.tar"
    rm -rf "$BASE.oci"
  fi
  BASE_EPOCH=$(stat -c %Y "$BASE.tar")
  if [ ! -f "$BASE.oci/index.json" ]; then
    say "packing the base layer ($(du -m "$BASE.tar" | cut -f1) MB) into $BASE.oci"
    rm -rf "$BASE.oci" "$WORK/base.oci"
    umoci init --layout "$WORK/base.oci"
    umoci new --image "$WORK/base.oci:base"
    umoci raw add-layer --image "$WORK/base.oci:base" \
      --history.created "$(rfc3339 "$BASE_EPOCH")" \
      --history.created_by "mmdebstrap --variant=$VARIANT $SUITE (+ $pkgs)" \
      "$BASE.tar"
    umoci config --image "$WORK/base.oci:base" --no-history \
      --architecture "$ARCH" --os linux --created "$(rfc3339 "$BASE_EPOCH")" \
      --config.env "$PATH_ENV"
    umoci gc --layout "$WORK/base.oci"
    mv "$WORK/base.oci" "$BASE.oci"
  else
    say "Debian base cached: $BASE.tar"
  fi
}

debian_base "$BASE_PACKAGES"

say "flannel-rs: adding ${BINARIES[*]} from $BIN_DIR"
# ldd exits 0 on a static-pie binary too ("statically linked"): look for
# shared libraries instead.
if ldd "$BIN_DIR/flannel-rs" 2>/dev/null | grep -q '=>'; then
  say "note: $BIN_DIR/flannel-rs is dynamically linked; the DaemonSet copies it to the host, which then needs a glibc at least as new as the build machine's (deploy/Dockerfile builds it static)"
fi
rm -f "$OUT/flannel-rs.binaries.sha256"  # no stale checksum if this run fails
mkdir -p "$WORK/bin-root/usr/local/bin"
for b in "${BINARIES[@]}"; do
  install -m 0755 "$BIN_DIR/$b" "$WORK/bin-root/usr/local/bin/$b"
done
(cd "$WORK/bin-root/usr/local/bin" && sha256sum "${BINARIES[@]}") >"$WORK/binaries.sha256"
make_layer "$WORK/bin-root" "$BASE_EPOCH" "$WORK/bin-layer.tar"
cp -a "$BASE.oci" "$WORK/fl.oci"
umoci raw add-layer --image "$WORK/fl.oci:base" --tag build \
  --history.created "$(rfc3339 "$BASE_EPOCH")" \
  --history.created_by "flannel-rs: ${BINARIES[*]} in /usr/local/bin" \
  "$WORK/bin-layer.tar"
umoci config --image "$WORK/fl.oci:build" --no-history --created "$(rfc3339 "$BASE_EPOCH")" \
  --clear=config.cmd --config.entrypoint /usr/local/bin/flanneld-rs
export_archive "$WORK/fl.oci" build "$NAME" "$OUT/flannel-rs.oci.tar"
mv -f "$WORK/binaries.sha256" "$OUT/flannel-rs.binaries.sha256"
say "flannel-rs: $OUT/flannel-rs.oci.tar ($NAME, $(du -m "$OUT/flannel-rs.oci.tar" | cut -f1) MB)"

# ---- 2. test image (busybox) -----------------------------------------------

# A one-layer image from a directory, written to <out> named <name> and
# labelled with <inputs>; further arguments go to `umoci config`.
rootfs_image() { # <rootfs> <epoch> <created_by> <name> <inputs> <out> [umoci config args...]
  local root=$1 t=$2 by=$3 name=$4 inputs=$5 out=$6 oci=$WORK/rootfs-image.oci
  shift 6
  rm -rf "$oci"
  make_layer "$root" "$t" "$WORK/rootfs-layer.tar"
  umoci init --layout "$oci"
  umoci new --image "$oci:build"
  umoci raw add-layer --image "$oci:build" --history.created "$(rfc3339 "$t")" \
    --history.created_by "$by" "$WORK/rootfs-layer.tar"
  umoci config --image "$oci:build" --no-history --architecture "$ARCH" --os linux \
    --created "$(rfc3339 "$t")" --config.label "$INPUTS_LABEL=$inputs" "$@"
  export_archive "$oci" build "$name" "$out"
  rm -rf "$oci" "$WORK/rootfs-layer.tar"
}

# Debian's static busybox with all its applets in /bin, root and nobody, /tmp,
# into a new directory <dir>. Sets BUSYBOX_APPLETS (their number).
busybox_rootfs() { # <dir>
  local r=$1 a applets
  mkdir -p "$r/bin" "$r/etc" "$r/root" "$r/tmp"
  chmod 1777 "$r/tmp"
  chmod 0700 "$r/root"
  install -m 0755 "$BUSYBOX" "$r/bin/busybox"
  mapfile -t applets < <("$BUSYBOX" --list)
  for a in "${applets[@]}"; do
    [ "$a" = busybox ] || ln -s busybox "$r/bin/$a"
  done
  for a in "${TEST_APPLETS[@]}"; do
    [ -L "$r/bin/$a" ] || die "$BUSYBOX has no applet $a (needed by the lab)"
  done
  printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"$r/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$r/etc/group"
  # The static busybox is linked with glibc, whose NSS wants this file (ps
  # crashed without it).
  printf '%s\n' 'passwd: files' 'group: files' 'hosts: files dns' >"$r/etc/nsswitch.conf"
  BUSYBOX_APPLETS=${#applets[@]}
}

BUSYBOX=/bin/busybox
ldd "$BUSYBOX" >/dev/null 2>&1 && die "$BUSYBOX is dynamically linked: install busybox-static (apt-get install busybox-static), not busybox"
self_hash=$(sha256sum "$SELF" | cut -c1-64)
busybox_hash=$(sha256sum "$BUSYBOX" | cut -c1-64)
test_inputs=$(printf '%s\n' "$TEST_NAME" "$self_hash" "$busybox_hash" | sha256sum | cut -c1-64)
if [ "$(archive_inputs "$OUT/test.oci.tar")" = "$test_inputs" ]; then
  say "test image up to date: $OUT/test.oci.tar"
else
  say "test image: $TEST_NAME from $BUSYBOX ($("$BUSYBOX" 2>&1 | awk 'NR == 1 { print $1, $2 }'))"
  busybox_rootfs "$WORK/test-root"
  rootfs_image "$WORK/test-root" "$(stat -c %Y "$BUSYBOX")" "busybox-static with its applets in /bin" \
    "$TEST_NAME" "$test_inputs" "$OUT/test.oci.tar" --config.env "$PATH_ENV" --config.cmd /bin/sh
  say "test image: $OUT/test.oci.tar ($BUSYBOX_APPLETS applets)"
fi

# ---- 3. pause ---------------------------------------------------------------

if [ $have_pause_src = 0 ]; then
  say "note: $PAUSE_C is gone (FLANNEL_RS_K8S_KEEP_SRC=0?); keeping $OUT/pause.oci.tar unchecked"
else
  gcc_version=$(gcc -dumpfullversion)
  pause_inputs=$(printf '%s\n' "$PAUSE_NAME" "$self_hash" "$(sha256sum "$PAUSE_C" | cut -c1-64)" \
    "gcc $gcc_version ${PAUSE_CFLAGS[*]}" "$(dpkg-query -W -f='${Version}' libc6-dev)" \
    | sha256sum | cut -c1-64)
  if [ "$(archive_inputs "$OUT/pause.oci.tar")" = "$pause_inputs" ]; then
    say "pause image up to date: $OUT/pause.oci.tar"
  else
    say "pause image: $PAUSE_NAME, gcc ${PAUSE_CFLAGS[*]} $PAUSE_C"
    mkdir -p "$WORK/pause-root"
    gcc "${PAUSE_CFLAGS[@]}" -o "$WORK/pause-root/pause" "$PAUSE_C" \
      || die "compiling $PAUSE_C failed (gcc $gcc_version)"
    strip "$WORK/pause-root/pause"
    chmod 0755 "$WORK/pause-root/pause"
    rootfs_image "$WORK/pause-root" "$(stat -c %Y "$PAUSE_C")" \
      "pause.c of Kubernetes 1.20.2, gcc ${PAUSE_CFLAGS[*]}" \
      "$PAUSE_NAME" "$pause_inputs" "$OUT/pause.oci.tar" --config.entrypoint /pause
    say "pause image: $OUT/pause.oci.tar"
  fi
fi

# ---- 3b. the lab's cluster DNS ----------------------------------------------

# flannel-rs-lab-dns (deploy/cluster-dns), a static Go binary that
# scripts/k8s-build.sh builds in the Kubernetes tree: the image is that file.
if [ ! -x "$LAB_DNS" ]; then
  [ -f "$OUT/lab-dns.oci.tar" ] || die "$LAB_DNS not found: the lab's cluster DNS is built with the Kubernetes binaries; run scripts/k8s-build.sh first"
  say "note: $LAB_DNS is gone; keeping $OUT/lab-dns.oci.tar unchecked"
else
  lab_dns_inputs=$(printf '%s\n' "$LAB_DNS_NAME" "$self_hash" "$(sha256sum "$LAB_DNS" | cut -c1-64)" | sha256sum | cut -c1-64)
  if [ "$(archive_inputs "$OUT/lab-dns.oci.tar")" = "$lab_dns_inputs" ]; then
    say "lab DNS image up to date: $OUT/lab-dns.oci.tar"
  else
    say "lab DNS image: $LAB_DNS_NAME from $LAB_DNS"
    mkdir -p "$WORK/lab-dns-root"
    install -m 0755 "$LAB_DNS" "$WORK/lab-dns-root/flannel-rs-lab-dns"
    rootfs_image "$WORK/lab-dns-root" "$(stat -c %Y "$LAB_DNS")" "flannel-rs-lab-dns (deploy/cluster-dns)" \
      "$LAB_DNS_NAME" "$lab_dns_inputs" "$OUT/lab-dns.oci.tar" --config.entrypoint /flannel-rs-lab-dns
    say "lab DNS image: $OUT/lab-dns.oci.tar"
  fi
fi

# ---- 4. --e2e: agnhost and busybox for Kubernetes' e2e.test ---------------

if [ $E2E = 1 ]; then
  if [ $have_porter = 0 ]; then
    say "note: $PORTER_DIR is gone (FLANNEL_RS_K8S_KEEP_SRC=0?); keeping $OUT/agnhost.oci.tar unchecked"
  else
    # Upstream's Dockerfile also unpacks CoreDNS 1.6.2 into / (for a few DNS
    # tests that run /coredns); Debian has no coredns package, so it is left
    # out and those tests fail.
    debian_base "$E2E_BASE_PACKAGES"
    agnhost_inputs=$(printf '%s\n' "$AGNHOST_NAME" "$self_hash" "$(basename "$BASE") $BASE_EPOCH" \
      "$(sha256sum "$AGNHOST" "$PORTER_DIR/localhost.crt" "$PORTER_DIR/localhost.key" | cut -c1-64)" \
      | sha256sum | cut -c1-64)
    if [ "$(archive_inputs "$OUT/agnhost.oci.tar")" = "$agnhost_inputs" ]; then
      say "agnhost image up to date: $OUT/agnhost.oci.tar"
    else
      say "agnhost image: $AGNHOST_NAME from $AGNHOST"
      r=$WORK/agnhost-root
      mkdir -p "$r/uploads"
      install -m 0755 "$AGNHOST" "$r/agnhost"
      # entrypoint-tester tests override the entrypoint with /agnhost-2.
      ln -s agnhost "$r/agnhost-2"
      install -m 0644 "$PORTER_DIR/localhost.crt" "$PORTER_DIR/localhost.key" "$r/"
      # Debian's iperf is /usr/bin/iperf; networking_perf.go runs /usr/local/bin/iperf.
      if ! tar -tf "$BASE.tar" ./usr/local/bin/iperf >/dev/null 2>&1; then
        mkdir -p "$r/usr/local/bin"
        ln -s /usr/bin/iperf "$r/usr/local/bin/iperf"
      fi
      make_layer "$r" "$BASE_EPOCH" "$WORK/agnhost-layer.tar"
      cp -a "$BASE.oci" "$WORK/agnhost.oci"
      umoci raw add-layer --image "$WORK/agnhost.oci:base" --tag build \
        --history.created "$(rfc3339 "$BASE_EPOCH")" \
        --history.created_by "agnhost (Kubernetes 1.20.2 test/images/agnhost, without coredns): /agnhost, /agnhost-2, /uploads, /localhost.{crt,key}" \
        "$WORK/agnhost-layer.tar"
      umoci config --image "$WORK/agnhost.oci:build" --no-history --created "$(rfc3339 "$BASE_EPOCH")" \
        --config.entrypoint /agnhost --config.cmd pause --config.workingdir / \
        --config.label "$INPUTS_LABEL=$agnhost_inputs"
      export_archive "$WORK/agnhost.oci" build "$AGNHOST_NAME" "$OUT/agnhost.oci.tar"
      rm -rf "$WORK/agnhost.oci" "$WORK/agnhost-layer.tar" "$r"
      say "agnhost image: $OUT/agnhost.oci.tar ($(du -m "$OUT/agnhost.oci.tar" | cut -f1) MB)"
    fi
  fi

  # The DNS specs' second prober: dig, getent and hostname on Debian, which
  # the e2e base already is (upstream: Debian jessie + dnsutils).
  debian_base "$E2E_BASE_PACKAGES"
  jessie_inputs=$(printf '%s\n' "$JESSIE_NAME" "$self_hash" "$(basename "$BASE") $BASE_EPOCH" | sha256sum | cut -c1-64)
  if [ "$(archive_inputs "$OUT/jessie-dnsutils.oci.tar")" = "$jessie_inputs" ]; then
    say "jessie-dnsutils image up to date: $OUT/jessie-dnsutils.oci.tar"
  else
    say "jessie-dnsutils image: $JESSIE_NAME from the e2e Debian base"
    cp -a "$BASE.oci" "$WORK/jessie.oci"
    umoci config --image "$WORK/jessie.oci:base" --tag build --no-history --created "$(rfc3339 "$BASE_EPOCH")" \
      --config.cmd /bin/sh --config.label "$INPUTS_LABEL=$jessie_inputs"
    export_archive "$WORK/jessie.oci" build "$JESSIE_NAME" "$OUT/jessie-dnsutils.oci.tar"
    rm -rf "$WORK/jessie.oci"
    say "jessie-dnsutils image: $OUT/jessie-dnsutils.oci.tar"
  fi

  busybox_e2e_inputs=$(printf '%s\n' "$BUSYBOX_E2E_NAME" "$self_hash" "$busybox_hash" | sha256sum | cut -c1-64)
  if [ "$(archive_inputs "$OUT/busybox-e2e.oci.tar")" = "$busybox_e2e_inputs" ]; then
    say "busybox e2e image up to date: $OUT/busybox-e2e.oci.tar"
  else
    say "busybox e2e image: $BUSYBOX_E2E_NAME from $BUSYBOX"
    busybox_rootfs "$WORK/busybox-e2e-root"
    rootfs_image "$WORK/busybox-e2e-root" "$(stat -c %Y "$BUSYBOX")" "busybox-static with its applets in /bin" \
      "$BUSYBOX_E2E_NAME" "$busybox_e2e_inputs" "$OUT/busybox-e2e.oci.tar" --config.env "$PATH_ENV" --config.cmd sh
    say "busybox e2e image: $OUT/busybox-e2e.oci.tar"
  fi
  say "done: $OUT/{flannel-rs.oci.tar,flannel-rs.binaries.sha256,test.oci.tar,pause.oci.tar,lab-dns.oci.tar,agnhost.oci.tar,jessie-dnsutils.oci.tar,busybox-e2e.oci.tar}"
else
  say "done: $OUT/{flannel-rs.oci.tar,flannel-rs.binaries.sha256,test.oci.tar,pause.oci.tar,lab-dns.oci.tar}"
fi
