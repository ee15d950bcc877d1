#!/usr/bin/env bash
# Removes network namespaces left behind by a crashed test run. Only names
# with our test prefix are touched.
set -u
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^fct-' || true); do
  ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null
  ip netns del "$ns" 2>/dev/null && echo "removed leftover namespace $ns"
done
exit 0
