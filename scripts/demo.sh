#!/usr/bin/env bash
# The plugin's main job, end to end on one machine: build flannel-rs, make a
# "node" network namespace and a "pod" namespace, write flannel's subnet.env,
# run CNI ADD through flannel-rs as a runtime would, ping the gateway from the
# pod, print the CNI result, then DEL and remove everything (also on error or
# Ctrl-C). Idempotent: leftovers of an interrupted run are removed first.
#
# Usage (root, after scripts/setup.sh):  scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "demo.sh: run as root (it creates network namespaces)" >&2
  exit 1
fi
for tool in ip jq ping cargo; do
  command -v "$tool" >/dev/null || { echo "demo.sh: $tool not found; run scripts/setup.sh" >&2; exit 1; }
done

NODE=fct-demo-node
POD=fct-demo-pod
NETWORK=demo
CONTAINER_ID=fct-demo-container
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
PLUGIN=$TARGET_DIR/release/flannel-rs
WORK=""

remove_netns() {
  if ip netns list | awk '{print $1}' | grep -qx "$1"; then
    ip netns pids "$1" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$1"
  fi
}

cni() { # cni COMMAND NETNS_PATH: runs the plugin in the node namespace
  ip netns exec "$NODE" env CNI_COMMAND="$1" CNI_CONTAINERID="$CONTAINER_ID" \
    CNI_NETNS="$2" CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni "$PLUGIN" <"$WORK/conf.json"
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$WORK" ] && [ -f "$WORK/conf.json" ] && [ -x "$PLUGIN" ] && ip netns list | grep -qw "$NODE"; then
    # DEL frees the reservation; the namespaces go anyway right after.
    cni DEL /var/run/netns/$POD >/dev/null 2>&1 || echo "demo.sh: DEL failed (ignored during cleanup)" >&2
  fi
  remove_netns "$POD"
  remove_netns "$NODE"
  [ -n "$WORK" ] && rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A previous run killed with -9 may have left these behind (the fixed
# names mean one demo at a time).
remove_netns "$POD"
remove_netns "$NODE"
rm -rf /tmp/fct-demo.??????

echo "== building flannel-rs (release)"
cargo build --release --quiet -p cni-plugin
[ -x "$PLUGIN" ] || { echo "demo.sh: $PLUGIN missing after build" >&2; exit 1; }

WORK=$(mktemp -d /tmp/fct-demo.XXXXXX)
echo "== node namespace $NODE, pod namespace $POD"
ip netns add "$NODE"
ip netns add "$POD"
ip -n "$NODE" link set lo up
ip -n "$POD" link set lo up

# What flanneld writes once it holds a lease for this node.
cat >"$WORK/subnet.env" <<ENV
FLANNEL_NETWORK=10.244.0.0/16
FLANNEL_SUBNET=10.244.7.1/24
FLANNEL_MTU=1450
FLANNEL_IPMASQ=true
ENV
echo "== subnet.env"
cat "$WORK/subnet.env"

jq -n --arg net "$NETWORK" --arg sf "$WORK/subnet.env" --arg dd "$WORK/ipam" '{
  cniVersion: "1.0.0", name: $net, type: "flannel-rs",
  bridge: "cni0", subnetFile: $sf, dataDir: $dd, isDefaultGateway: true
}' >"$WORK/conf.json"
echo "== CNI config"
jq . "$WORK/conf.json"

echo "== CNI ADD"
cni ADD /var/run/netns/$POD >"$WORK/result.json"
jq . "$WORK/result.json"

echo "== pod eth0 and routes"
ip -n "$POD" -br addr show dev eth0
ip -n "$POD" route
echo "== node bridge"
ip -n "$NODE" -br addr show dev cni0

GW=$(jq -r '.ips[0].gateway // empty' "$WORK/result.json")
GW=${GW:-10.244.7.1}
echo "== ping $GW (gateway) from the pod"
ip netns exec "$POD" ping -c 3 -W 2 "$GW"

echo "== CNI DEL"
cni DEL /var/run/netns/$POD
left=$(find "$WORK/ipam" -type f -name '10.*' | wc -l)
echo "reservations left after DEL: $left"
[ "$left" -eq 0 ]
echo "== demo OK"
