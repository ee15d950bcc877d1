#!/usr/bin/env bash
# The project's main job on a fresh Debian 12 machine, as root: installs the
# packages, builds the binaries, and brings up a 3-node flannel-rs cluster
# (kernel VXLAN overlay, embedded lease store) in network namespaces on this
# machine; then proves pods on different nodes reach each other.
#
#   ./scripts/main.sh                      # lab up (vxlan, embedded store)
#   ./scripts/main.sh --backend host-gw --store etcd
#   ./scripts/main.sh --kubernetes         # a real Kubernetes 1.20 with the
#                                          # flannel-rs DaemonSet (the first
#                                          # run builds Kubernetes: ~15-25 min)
#   ./scripts/main.sh down                 # remove the lab (builds nothing)
#
# Extra arguments go to `flannelctl lab up`. Nothing outside namespaces named
# fct-lab-* is touched.
set -euo pipefail
cd "$(dirname "$0")/.."

ctl=${CARGO_TARGET_DIR:-$PWD/target}/release/flannelctl

if [ "${1:-}" = "down" ]; then
  [ -x "$ctl" ] || { echo "main.sh: $ctl is not built, so no lab was started by it" >&2; exit 0; }
  exec "$ctl" lab down --name main
fi

kubernetes=false
if [ "${1:-}" = "--kubernetes" ]; then
  kubernetes=true
  shift
fi

./scripts/setup.sh
$kubernetes && ./scripts/k8s-build.sh
cargo build --release -p flannelctl -p flanneld-rs -p cni-plugin
$kubernetes && deploy/image/build.sh --bin-dir "$(dirname "$ctl")"

# A lab left by an earlier run is replaced.
"$ctl" lab down --name main >/dev/null 2>&1 || true

if ! $kubernetes; then
  "$ctl" lab up --name main --nodes 3 --backend vxlan "$@"
  # Pod 1 of node 1 pings pod 1 of node 3, across the overlay.
  dst=$("$ctl" lab status --name main --json | jq -r '.pods[] | select(.node == 3) | .ip' | head -1)
  echo
  echo "main.sh: ping from fct-lab-main-n1p1 to $dst (a pod on node 3):"
  ip netns exec fct-lab-main-n1p1 ping -c 3 -W 2 "$dst"
  echo
  echo "main.sh: the lab is up. Remove it with: ./scripts/main.sh down"
  exit 0
fi

"$ctl" lab up --kubernetes --name main --nodes 3 "$@"
k() { "$ctl" lab kubectl --name main -- "$@"; }
image=$("$ctl" lab status --name main --json | jq -r .test_image)
# Three pods placed by the scheduler, one per node.
k apply -f - <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: hello, namespace: default}
spec:
  replicas: 3
  selector: {matchLabels: {app: hello}}
  template:
    metadata: {labels: {app: hello}}
    spec:
      terminationGracePeriodSeconds: 1
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule,
         labelSelector: {matchLabels: {app: hello}}}
      containers:
      - {name: hello, image: "$image", imagePullPolicy: Never, command: [sleep, "2147483647"]}
EOF
k rollout status deployment/hello --timeout=120s
echo
k get nodes -o wide
echo
k get pods -A -o wide
src=$(k get pods -l app=hello -o jsonpath='{.items[?(@.spec.nodeName=="node1")].metadata.name}')
dst=$(k get pods -l app=hello -o jsonpath='{.items[?(@.spec.nodeName=="node3")].status.podIP}')
echo
echo "main.sh: ping from pod $src (node1) to $dst (a pod on node3):"
k exec "$src" -- ping -c 3 -W 2 "$dst"
echo
echo "main.sh: the Kubernetes lab is up. kubectl: $ctl lab kubectl --name main -- get pods -A"
echo "main.sh: remove it with: ./scripts/main.sh down"
