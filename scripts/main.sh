#!/usr/bin/env bash
# The project's main job on a fresh Debian 12 machine, as root: installs the
# packages, builds the binaries, and brings up a 3-node flannel-rs cluster
# (kernel VXLAN overlay, embedded lease store) in network namespaces on this
# machine; then proves pods on different nodes reach each other.
#
#   sudo ./scripts/main.sh                 # lab up (vxlan, embedded store)
#   sudo ./scripts/main.sh --backend host-gw --store etcd
#   sudo ./scripts/main.sh down            # remove the lab
#
# Extra arguments go to `flannelctl lab up`. Nothing outside namespaces named
# fct-lab-* is touched.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
cargo build --release -p flannelctl -p flanneld-rs -p cni-plugin
ctl=${CARGO_TARGET_DIR:-$PWD/target}/release/flannelctl

if [ "${1:-}" = "down" ]; then
  exec "$ctl" lab down --name main
fi

# A lab left by an earlier run is replaced.
"$ctl" lab down --name main >/dev/null 2>&1 || true
"$ctl" lab up --name main --nodes 3 --backend vxlan "$@"

# Pod 1 of node 1 pings pod 1 of node 3, across the overlay.
dst=$("$ctl" lab status --name main --json | jq -r '.pods[] | select(.node == 3) | .ip' | head -1)
echo
echo "main.sh: ping from fct-lab-main-n1p1 to $dst (a pod on node 3):"
ip netns exec fct-lab-main-n1p1 ping -c 3 -W 2 "$dst"
echo
echo "main.sh: the lab is up. Remove it with: sudo ./scripts/main.sh down"
