#!/usr/bin/env bash
# Writes deploy/kube-flannel-rs.yml: the `generic` overlay rendered with
# `kubectl kustomize`, for operators who apply one file (`kubectl apply -f`)
# and for the Kubernetes lab, which compiles that file in. Run it after
# changing anything under deploy/base or deploy/overlays/generic;
# tests/tests/deploy_manifests.rs fails while the two differ.
#
# kubectl: $KUBECTL, else the project's cached 1.20.2 (scripts/k8s-build.sh),
# else the one on PATH. Any kubectl from 1.14 on renders the overlays.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
kubectl="${KUBECTL:-}"
if [[ -z "$kubectl" ]]; then
    if [[ -x /var/cache/flannel-rs/k8s-1.20.2/bin/kubectl ]]; then
        kubectl=/var/cache/flannel-rs/k8s-1.20.2/bin/kubectl
    elif command -v kubectl >/dev/null; then
        kubectl=kubectl
    else
        echo "render.sh: no kubectl: set KUBECTL, or run scripts/k8s-build.sh" >&2
        exit 1
    fi
fi
out="$here/kube-flannel-rs.yml"
body="$("$kubectl" kustomize "$here/overlays/generic")"
tmp="$out.tmp.$$"
{
    cat <<'HEADER'
# flannel-rs in Kubernetes mode, one file: deploy/overlays/generic rendered by
# deploy/render.sh. Do not edit: change deploy/base (or your own overlay)
# and render again.
#
# Apply:   kubectl apply -f deploy/kube-flannel-rs.yml
#          (or kubectl apply -k deploy/overlays/generic; EKS: deploy/overlays/eks)
# Needs:   kube-controller-manager with --allocate-node-cidrs and a
#          --cluster-cidr equal to "Network" in net-conf.json below.
# Image:   set in deploy/base/kustomization.yaml (`images:`).
# See deploy/README.md and docs/EKS.md.
HEADER
    printf '%s\n' "$body"
} >"$tmp"
mv -f "$tmp" "$out"
echo "wrote $out"
