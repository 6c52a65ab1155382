#!/usr/bin/env bash
# What capability-token auth costs on the request path, measured in one run: two 3-node Aspen
# clusters side by side on loopback (aspen dev), one requiring credentials (aspen dev --auth, the
# CLI presenting its root credential: the whole chain to each node once, then its id) and one
# without. Puts and gets at 1 and 64 clients through the native protocol and through the etcd
# endpoints (each bench client authenticating once per endpoint and sending its session token).
# This machine's speed drifts over minutes and the second of two back-to-back runs tends to be
# slower, so each cell runs four times per round in ABBA order (on, off, off, on; the next round
# off, on, on, off), ROUNDS rounds (default 2), and reports each side's median. Then
# `aspen bench auth`: one chain's verification, cold and remembered, against one Ed25519 check.
#
# Usage: benchmarks/auth.sh [SECONDS_PER_CELL (default 4)]   BENCH_DIR chooses the disk.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-4}"
rounds="${ROUNDS:-2}"
swift build -c release --product aspen > /dev/null
swift build -c release --product aspen-node > /dev/null
aspen="$PWD/.build/release/aspen"

work=$(mktemp -d "${BENCH_DIR:-/tmp}/aspen-auth.XXXXXX")
results="$work/results.jsonl"
: > "$results"
cleanup() {
    kill $(jobs -p) 2> /dev/null || true
    pkill -f "$work" 2> /dev/null || true
    wait 2> /dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/off" "$work/on"
(cd "$work/off" && exec "$aspen" dev --base-port 7400 > dev.out 2>&1) &
(cd "$work/on" && exec "$aspen" dev --auth --base-port 7500 > dev.out 2>&1) &
for side in off on; do
    for _ in $(seq 1 120); do grep -q '^Try:' "$work/$side/dev.out" 2> /dev/null && break; sleep 0.5; done
    grep -q '^Try:' "$work/$side/dev.out" || { cat "$work/$side/dev.out" >&2; echo "the $side cluster did not start" >&2; exit 1; }
done

# cell SIDE PROTOCOL WORKLOAD CLIENTS ROUND: one measured run, one JSON line in $results.
cell() {
    local side="$1" protocol="$2" workload="$3" count="$4" round="$5"
    local args=("$workload" --clients "$count" --duration "$seconds" --keyspace 10000 --value-size 256 --json)
    if [ "$protocol" = etcd ]; then
        local base=7400
        [ "$side" = on ] && base=7500
        args+=(--protocol etcd --endpoints "127.0.0.1:$((base + 31)),127.0.0.1:$((base + 32)),127.0.0.1:$((base + 33))")
    fi
    sync
    (cd "$work/$side" && "$aspen" bench "${args[@]}" 2> /dev/null) \
        | python3 -c "import json, sys; r = json.load(sys.stdin); r['auth'] = '$side'; r['protocol'] = '$protocol'; r['workload'] = '$workload'; r['round'] = $round; print(json.dumps(r))" >> "$results"
    tail -1 "$results" | python3 -c "import json, sys; r = json.load(sys.stdin); print(f\"auth {r['auth']:<3} {r['protocol']:<6} {r['workload']:<4} clients={r['clients']:<3} {r['opsPerSecond']:>9.0f} ops/s  p50 {r['p50Us']/1000:6.2f} ms  p99 {r['p99Us']/1000:6.2f} ms  errors {r['errors']}\")" >&2
}

for round in $(seq 1 "$rounds"); do
    turn=0
    for protocol in native etcd; do
        for workload in put get; do
            for count in 1 64; do
                if [ $(((turn + round) % 2)) = 0 ]; then order=(off on on off); else order=(on off off on); fi
                for side in "${order[@]}"; do cell "$side" "$protocol" "$workload" "$count" "$round"; done
                turn=$((turn + 1))
            done
        done
    done
done

python3 - "$results" << 'TABLE'
import json, sys, statistics
rows = [json.loads(line) for line in open(sys.argv[1])]
print("| protocol | workload | clients | auth off ops/s | auth on ops/s | on/off |")
print("|---|---|---|---|---|---|")
for protocol in ["native", "etcd"]:
    for workload in ["put", "get"]:
        for clients in [1, 64]:
            cells = {side: statistics.median(r["opsPerSecond"] for r in rows if r["auth"] == side and r["protocol"] == protocol and r["workload"] == workload and r["clients"] == clients) for side in ["off", "on"]}
            print(f"| {protocol} | {workload} | {clients} | {cells['off']:,.0f} | {cells['on']:,.0f} | {cells['on'] / cells['off']:.3f} |")
TABLE
echo
"$aspen" bench auth --duration 6
