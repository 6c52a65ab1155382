#!/usr/bin/env bash
# The job system against Aspen's own key-value store, measured in the same run on a 3-node
# cluster of release builds on loopback (aspen dev):
#   throughput  aspen bench job (submit, claim, run a no-op, report; 16 submitters, a 64-slot worker)
#               vs aspen bench put (16 clients, 256-byte values)
#   latency     aspen bench job-latency (one job at a time: submit-to-start, idle cluster)
#               vs aspen bench put with 1 client (one replicated write)
# Throughput pairs run in ABBA order (put job job put) and report the mean of each side.
#
# Usage: benchmarks/jobs.sh [SECONDS per run (default 10)]   BENCH_DIR chooses the disk.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
source benchmarks/dev-cluster.sh jobs 7800
field() { python3 -c "import json, sys; print(json.load(sys.stdin)['$1'])"; }

put() { cli bench put --clients "$1" --duration "$seconds" --json 2> /dev/null | field opsPerSecond; }
job() { cli bench job --clients 16 --workers 64 --duration "$seconds" --json 2> /dev/null | field jobsPerSecond; }
put_p99() { cli bench put --clients 1 --duration "$seconds" --json 2> /dev/null | python3 -c "
import json, sys; r = json.load(sys.stdin); print(r['p50Us'], r['p99Us'])"; }
job_latency() { cli bench job-latency --duration "$seconds" --json 2> /dev/null | python3 -c "
import json, sys; r = json.load(sys.stdin); print(r['startP50Us'], r['startP99Us'], r['jobs'])"; }

p1=$(put 16); j1=$(job); j2=$(job); p2=$(put 16)
read -r put_p50 put_p99 <<< "$(put_p99)"
read -r job_p50 job_p99 samples <<< "$(job_latency)"
python3 - "$p1" "$p2" "$j1" "$j2" "$put_p50" "$put_p99" "$job_p50" "$job_p99" "$samples" <<'PY'
import sys
p1, p2, j1, j2, pp50, pp99, jp50, jp99, n = map(float, sys.argv[1:])
put = (p1 + p2) / 2; job = (j1 + j2) / 2
print("| measure | jobs | baseline (KV put) | ratio |")
print("|---|---|---|---|")
print(f"| throughput, 16 clients | {job:.0f} jobs/s | {put:.0f} puts/s | {job / put:.2f} |")
print(f"| idle latency p50 (submit-to-start vs one put) | {jp50 / 1000:.2f} ms | {pp50 / 1000:.2f} ms | {jp50 / pp50:.1f} |")
print(f"| idle latency p99 | {jp99 / 1000:.2f} ms | {pp99 / 1000:.2f} ms | {jp99 / pp99:.1f} |")
print(f"({int(n)} idle jobs; throughput runs ABBA: puts {p1:.0f}, {p2:.0f}; jobs {j1:.0f}, {j2:.0f})")
PY
