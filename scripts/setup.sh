#!/usr/bin/env bash
# Installs everything the project's demos and tests need on a fresh Debian 12
# machine. Idempotent: packages already present are skipped by apt.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: run as root (it installs Debian packages)" >&2
  exit 1
fi

packages=(
  # build
  # libprotobuf-dev: the google/protobuf/*.proto that etcd-client's protos import
  # (only Recommended by protobuf-compiler, and we install without Recommends)
  protobuf-compiler libprotobuf-dev pkg-config gcc openssl
  # the CNI binary links static-pie (libc.a) and its test reads it with readelf
  libc6-dev binutils
  # kernel tooling used by tests and the lab
  iproute2 iputils-ping nftables iperf3 sockperf tshark python3-scapy jq
  # systemd-analyze checks the shipped unit file
  systemd
  # lease store
  etcd-server etcd-client
  # CNI reference plugins (chaining, benchmarks) and real runtimes
  containernetworking-plugins iptables containerd runc podman busybox-static
  # the Kubernetes lab: kube-proxy clears UDP conntrack entries; nsenter
  # and unshare (util-linux) enter node mount namespaces
  conntrack util-linux
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# promtool (tests/tests/deploy_manifests.rs checks and unit-tests the example
# alert rules with it): taken from Debian's prometheus package without
# installing it, so no Prometheus service is set up on this machine.
promtool_dir=/var/cache/flannel-rs/promtool
if [ ! -x "$promtool_dir/promtool" ]; then
  echo "setup.sh: extracting promtool from Debian's prometheus package into $promtool_dir"
  tmp=$(mktemp -d)
  # apt lists may be absent when every package above was already installed.
  (cd "$tmp" && { apt-get download -qq prometheus 2>/dev/null \
      || { apt-get update -qq && apt-get download -qq prometheus 2>/dev/null; }; } \
      && dpkg-deb -x prometheus_*.deb x)
  mkdir -p "$promtool_dir"
  install -m 0755 "$tmp/x/usr/bin/promtool" "$promtool_dir/promtool"
  rm -rf "$tmp"
fi

# tshark asks whether non-root users may capture; we run as root, so the
# answer does not matter, but the package must not block on the question.
command -v cargo >/dev/null || { echo "setup.sh: cargo not found; install Rust (rustup) first" >&2; exit 1; }
echo "setup.sh: ready"
