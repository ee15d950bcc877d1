#!/usr/bin/env bash
# Builds the Kubernetes 1.20.2 binaries the Kubernetes lab runs, from Debian
# bookworm's `kubernetes` source package with Debian's Go, and caches them:
#
#   /var/cache/flannel-rs/k8s-1.20.2/bin/{kube-apiserver,kube-controller-manager,
#       kube-scheduler,kubelet,kube-proxy,kubectl}
#   .../bin/flannel-rs-lab-dns   the lab's cluster DNS, from deploy/cluster-dns
#
# With --e2e it also builds Kubernetes' conformance test binary and its
# test server, from the same tree, into the same directory:
#
#   .../bin/{e2e.test,agnhost}
#
# A later run finds the cache and returns at once. Run as root (it installs
# Debian packages). Env:
#   FLANNEL_RS_K8S_CACHE   cache root (default /var/cache/flannel-rs/k8s-1.20.2)
#   FLANNEL_RS_K8S_KEEP_SRC=0  remove the source tree and Go cache after a build
#
# Why from source: no Kubernetes release binary can be downloaded here, and
# Debian ships only kubectl. Why a patch: the vendored
# github.com/modern-go/reflect2 v1.0.1 links reflect internals with their
# pre-Go-1.18 signature and crashes (SIGSEGV) the first time json-iterator
# walks a map, i.e. on every API server response; Debian's 1.0.2 sources
# (golang-github-modern-go-reflect2-dev) replace it.
set -euo pipefail

DEB_VERSION=1.20.5+really1.20.2
K8S_VERSION=1.20.2
CACHE=${FLANNEL_RS_K8S_CACHE:-/var/cache/flannel-rs/k8s-$K8S_VERSION}
BIN=$CACHE/bin
SRC_PARENT=$CACHE/src
SRC=$SRC_PARENT/kubernetes-$K8S_VERSION
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
REPO=$(cd "$(dirname "$0")/.." && pwd)
# go build targets, by binary (test binaries live elsewhere in the tree).
declare -A TARGET=([e2e.test]=test/e2e/e2e.test [agnhost]=test/images/agnhost)
# Bumped when the build recipe changes, so stale caches are rebuilt.
RECIPE=2
STAMP=.recipe

case "${1:-}" in
  "") ;;
  --e2e) BINARIES=(e2e.test agnhost); STAMP=.recipe-e2e ;;
  *) echo "usage: $0 [--e2e]" >&2; exit 2 ;;
esac

say() { echo "[k8s-build $(date +%T)] $*"; }
die() { echo "k8s-build: error: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (it installs Debian packages and writes $CACHE)"

cached() {
  [ "$(cat "$BIN/$STAMP" 2>/dev/null)" = "$RECIPE" ] || return 1
  local b
  for b in "${BINARIES[@]}"; do [ -x "$BIN/$b" ] || return 1; done
}

mkdir -p "$CACHE"
# Two test runs may start at once: one builds, the other waits for it.
exec 9>"$CACHE/.lock"
if ! flock -n 9; then
  say "another build holds $CACHE/.lock; waiting"
  flock 9
fi

# The lab's cluster DNS (deploy/cluster-dns) is our own Go program, built in
# the tree with its vendored libraries after the Kubernetes binaries (default
# mode only). Rebuilt whenever its sources change: the stamp is their hash.
build_lab_dns() {
  local src=$REPO/deploy/cluster-dns dst=$SRC/cmd/flannel-rs-lab-dns want
  want=$( (echo "$RECIPE"; cat "$src"/*.go) | sha256sum | cut -c1-64)
  if [ -x "$BIN/flannel-rs-lab-dns" ] && [ "$(cat "$BIN/.recipe-lab-dns" 2>/dev/null)" = "$want" ]; then
    say "cached: flannel-rs-lab-dns in $BIN"
    return
  fi
  [ -f "$SRC/.flannel-rs-patched" ] || die "the Kubernetes source tree $SRC is gone (FLANNEL_RS_K8S_KEEP_SRC=0?); the lab DNS is built inside it: remove $BIN/$STAMP and run this again"
  say "building flannel-rs-lab-dns from $src (1-3 min the first time)"
  rm -rf "$dst"
  mkdir -p "$dst"
  cp "$src"/*.go "$dst"/
  # The tree builds in GOPATH mode (hack/lib/init.sh sets GO111MODULE=off)
  # from the GOPATH its build scripts made; the same here, so the vendored
  # client-go and miekg/dns are used and the Go cache is shared.
  local gopath=$SRC/_output/local/go
  [ -d "$gopath/src/k8s.io/kubernetes" ] || die "$gopath/src/k8s.io/kubernetes is missing: the Kubernetes build did not finish; remove $BIN/$STAMP and run this again"
  (
    cd "$gopath/src/k8s.io/kubernetes"
    export GOPATH=$gopath GOCACHE=$gopath/cache GO111MODULE=off GOFLAGS= CGO_ENABLED=0
    go vet ./cmd/flannel-rs-lab-dns/ && go test ./cmd/flannel-rs-lab-dns/ \
      && go build -ldflags="-s -w" -o "$BIN/flannel-rs-lab-dns.new" ./cmd/flannel-rs-lab-dns/
  ) >>"$CACHE/build-lab-dns.log" 2>&1 || { tail -30 "$CACHE/build-lab-dns.log" >&2; die "building the lab DNS failed (log: $CACHE/build-lab-dns.log)"; }
  mv -f "$BIN/flannel-rs-lab-dns.new" "$BIN/flannel-rs-lab-dns"
  echo "$want" >"$BIN/.recipe-lab-dns"
  say "built $BIN/flannel-rs-lab-dns (its unit tests passed)"
}

if cached; then
  say "cached: ${BINARIES[*]} in $BIN (Kubernetes $K8S_VERSION)"
  [ "$STAMP" = .recipe ] && build_lab_dns
  exit 0
fi

say "building ${BINARIES[*]} of Kubernetes $K8S_VERSION into $BIN (first run on this machine: about 15-25 min on 2 cores)"
start=$(date +%s)

# 1. Build dependencies. golang-go is Go 1.19 on bookworm.
need=()
for p in golang-go make rsync golang-github-modern-go-reflect2-dev dpkg-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  apt-get update -qq || die "apt-get update failed; Debian's package archive must be reachable"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
    || die "could not install ${need[*]} (Go 1.19 from Debian's golang-go is required to build Kubernetes)"
fi
command -v go >/dev/null || die "go not found after installing golang-go"
say "$(go version)"

# 2. The source package. deb-src is not configured on these machines: add a
#    temporary deb-src entry for the same archive, fetch, and take it away.
mkdir -p "$SRC_PARENT"
orig=$SRC_PARENT/kubernetes_$DEB_VERSION.orig.tar.gz
if [ ! -f "$orig" ]; then
  say "downloading Debian source package kubernetes ($DEB_VERSION, about 34 MB)"
  uri=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
  uri=${uri:-http://deb.debian.org/debian}
  tmp_src=/etc/apt/sources.list.d/flannel-rs-k8s-src.sources
  cat >"$tmp_src" <<EOF
Types: deb-src
URIs: $uri
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  rc=0
  { apt-get update -qq && (cd "$SRC_PARENT" && apt-get source --download-only -qq kubernetes >/dev/null); } || rc=$?
  rm -f "$tmp_src"
  apt-get update -qq || true
  if [ $rc -ne 0 ] || [ ! -f "$orig" ]; then
    die "could not download the Debian source package 'kubernetes' $DEB_VERSION from $uri (deb-src); check that the Debian archive is reachable"
  fi
fi

# 3. Unpack and patch.
if [ ! -f "$SRC/.flannel-rs-patched" ]; then
  say "unpacking"
  rm -rf "$SRC"
  tar -C "$SRC_PARENT" -xzf "$orig"
  [ -d "$SRC" ] || die "the source tarball did not unpack to $SRC"
  r=$SRC/vendor/github.com/modern-go/reflect2
  up=/usr/share/gocode/src/github.com/modern-go/reflect2
  [ -f "$up/go_above_118.go" ] || die "$up has no Go 1.18 support; golang-github-modern-go-reflect2-dev >= 1.0.2 is required"
  rm -f "$r"/*.go "$r"/*.s
  cp "$up"/*.go "$up"/*.s "$r"/
  touch "$SRC/.flannel-rs-patched"
  say "patched vendor/github.com/modern-go/reflect2 with Debian's $(dpkg-query -W -f='${Version}' golang-github-modern-go-reflect2-dev)"
fi

# 4. Build: generated files (openapi, deepcopy...), then all binaries in one
#    go invocation so shared packages compile once.
cd "$SRC"
export GOCACHE=$CACHE/go-build GOPATH=$CACHE/gopath GOFLAGS=-mod=vendor GOPROXY=off
export CGO_ENABLED=0 KUBE_STATIC_OVERRIDES="kubelet" GOLDFLAGS="-s -w"
export KUBE_GIT_VERSION=v$K8S_VERSION KUBE_GIT_TREE_STATE=clean KUBE_GIT_MAJOR=1 KUBE_GIT_MINOR=20
log=$CACHE/build.log
: >"$log"
t=$(date +%s)
say "generating sources (about 3 min; log: $log)"
make generated_files >>"$log" 2>&1 || { tail -30 "$log" >&2; die "make generated_files failed (log: $log)"; }
say "generated in $(($(date +%s) - t)) s"
targets=()
for b in "${BINARIES[@]}"; do targets+=("${TARGET[$b]:-cmd/$b}"); done
t=$(date +%s)
say "compiling ${BINARIES[*]} (about 12-20 min on 2 cores)"
# Progress: go prints nothing while it compiles, so report every minute.
(while sleep 60; do say "still compiling ($(($(date +%s) - t)) s)"; done) &
ticker=$!
trap 'kill $ticker 2>/dev/null || true' EXIT
hack/make-rules/build.sh "${targets[@]}" >>"$log" 2>&1 || { tail -30 "$log" >&2; die "compiling failed (log: $log)"; }
kill $ticker 2>/dev/null || true
say "compiled in $(($(date +%s) - t)) s"

mkdir -p "$BIN"
for b in "${BINARIES[@]}"; do
  install -m755 "_output/local/bin/linux/amd64/$b" "$BIN/$b"
done
echo "$RECIPE" >"$BIN/$STAMP"
[ "$STAMP" = .recipe ] && build_lab_dns
if [ "${FLANNEL_RS_K8S_KEEP_SRC:-1}" = 0 ]; then
  rm -rf "$SRC" "$CACHE/go-build" "$CACHE/gopath"
fi
say "done in $(($(date +%s) - start)) s: ${BINARIES[*]} of Kubernetes $K8S_VERSION"
