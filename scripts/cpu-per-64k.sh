#!/usr/bin/env bash
# Where the CPU goes in TCP throughput over a lab datapath, per 64 KiB
# carried (one TCP super-packet): host-wide busy CPU, the kernel copies made
# by the userspace datapath's threads (us-q*), its own userspace code
# (checksums, framing), and every kernel copy on the machine.
#
#   sudo scripts/cpu-per-64k.sh LAB STREAMS [SECONDS]
#
# LAB is a 2-node lab that is up (flannelctl lab up --name LAB --nodes 2
# --pods-per-node 1 ...). The script starts a probe server in node 2's pod,
# runs `flannelctl probe client` from node 1's pod, records `perf` over the
# middle of its N-stream throughput test, and prints one line. Run it for
# two labs in turn (A B A B): these machines are noisy.
set -euo pipefail

lab=${1:?usage: cpu-per-64k.sh LAB STREAMS [SECONDS]}
streams=${2:?usage: cpu-per-64k.sh LAB STREAMS [SECONDS]}
secs=${3:-4}
here=$(cd "$(dirname "$0")/.." && pwd)
fctl=${FLANNELCTL:-$here/target/release/flannelctl}
command -v perf >/dev/null || { echo "cpu-per-64k: perf is not installed (apt-get install linux-perf)" >&2; exit 2; }
[ -x "$fctl" ] || { echo "cpu-per-64k: $fctl missing: cargo build --release -p flannelctl" >&2; exit 2; }
client=fct-lab-$lab-n1p1
server=fct-lab-$lab-n2p1
ip netns list | grep -q "^$client" || { echo "cpu-per-64k: no lab '$lab' with pods (namespace $client)" >&2; exit 2; }
server_ip=$(ip netns exec "$server" ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1)

work=$(mktemp -d /tmp/cpu-per-64k.XXXXXX)
ip netns exec "$server" "$fctl" probe server --listen 0.0.0.0:7199 >/dev/null 2>&1 &
srv=$!
trap 'kill $srv 2>/dev/null || true; rm -rf "$work"' EXIT
sleep 0.5

# The probe runs four tests of $secs each; the N-stream one is the last.
ip netns exec "$client" "$fctl" probe client --server "$server_ip:7199" \
    --duration "${secs}s" --streams "$streams" --json >"$work/probe.json" &
cli=$!
sleep "$(awk -v s="$secs" 'BEGIN { print 3 * s + 0.7 }')"
perf record -F 999 -a -o "$work/perf.data" -- sleep "$(awk -v s="$secs" 'BEGIN { print s - 1.4 }')" >/dev/null 2>&1
wait $cli
perf report -i "$work/perf.data" --no-children --sort comm,sym -q -g none 2>/dev/null >"$work/report.txt"

python3 - "$work" "$lab" "$streams" "$(nproc)" <<'PY'
import json, re, sys
work, lab, streams, cpus = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
gbit = json.load(open(f"{work}/probe.json"))["tcp_n"]["gbit_per_s"]
idle = eng_copy = eng_user = all_copy = 0.0
for line in open(f"{work}/report.txt"):
    m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(\S+)", line)
    if not m:
        continue
    pct, comm, kind, sym = float(m[1]), m[2], m[3], m[4]
    engine = comm.startswith("us-q")
    if comm == "swapper":
        idle += pct
    if sym in ("_copy_to_iter", "_copy_from_iter"):
        all_copy += pct
        eng_copy += pct if engine else 0
    if kind == "." and engine:
        eng_user += pct
per_s = gbit * 1e9 / 8 / 65536          # 64 KiB units per second
us = lambda pct: pct / 100 * cpus / per_s * 1e6
print(f"{lab} {streams} streams: {gbit:.2f} Gbit/s; CPU per 64 KiB: busy {us(100 - idle):.0f} us, "
      f"engine kernel copies {us(eng_copy):.0f} us, engine userspace {us(eng_user):.0f} us, "
      f"all kernel copies {us(all_copy):.0f} us")
PY
