#!/usr/bin/env bash
# Runs every test of the project on a fresh Debian 12 machine, as root:
# installs the packages, builds, then runs unit, kernel and end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh

# Kernel tests create namespaces with unique prefixes and remove them; a
# previous crashed run may have left some behind.
./scripts/clean-test-netns.sh || true

# Kubernetes 1.20.2 for the Kubernetes lab test, built from Debian's source
# package: 12-20 min the first time on a machine, then cached under
# /var/cache/flannel-rs (a later run returns at once).
./scripts/k8s-build.sh
# Kubernetes' own e2e.test and agnhost, for the conformance subset
# (tests/tests/kube_conformance.rs): 5-10 min more the first time.
./scripts/k8s-build.sh --e2e

cargo build --workspace --all-targets
# Kernel tests need root and fail loudly without it; none is #[ignore]d
# (the one ignored test is a helper process another test starts).
cargo test --workspace --no-fail-fast
