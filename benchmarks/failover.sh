#!/usr/bin/env bash
# Leader failover time on a local 3-node cluster: SIGKILL the leader while a client writes in a
# loop, and report the time from the kill to the first write that succeeds afterwards.
# Usage: benchmarks/failover.sh [ROUNDS]   (needs `swift build -c release` first)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-5}"
bin=.build/release
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; pkill -f "$work/data" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
"$bin/aspen" dev --data-dir "$work/data" --base-port 7600 > "$work/dev.out" 2>&1 &
for _ in $(seq 1 300); do grep -q '^export ASPEN_TICKET' "$work/dev.out" && break; sleep 0.1; done
export ASPEN_TICKET=$(sed -n 's/^export ASPEN_TICKET=//p' "$work/dev.out")
[ -n "$ASPEN_TICKET" ] || { echo "the dev cluster did not start" >&2; cat "$work/dev.out" >&2; exit 1; }
ms() { echo $(( $(date +%s%N) / 1000000 )); }
results=()
for round in $(seq 1 "$rounds"); do
    "$bin/aspen" kv put failover/warmup "$round" > /dev/null
    leader=$("$bin/aspen" cluster status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["leaderId"])')
    pid=$(pgrep -f "aspen-node run --node-id $leader --data-dir $work/data/n$leader")
    killed=$(ms)
    kill -9 "$pid"
    until "$bin/aspen" kv put failover/probe "$round" --timeout-ms 300 > /dev/null 2>&1; do :; done
    elapsed=$(( $(ms) - killed ))
    results+=("$elapsed")
    echo "round $round: leader $leader killed, first successful write after ${elapsed} ms"
    # Bring the node back the way aspen dev started it, and let it catch up.
    ("$bin/aspen-node" run --node-id "$leader" --data-dir "$work/data/n$leader" --listen "127.0.0.1:$((7600 + leader))" \
        --heartbeat-ms 50 --election-timeout-ms 500-999 --log-level warning > /dev/null 2>&1 &)
    sleep 2
done
printf '%s\n' "${results[@]}" | sort -n | awk '{ a[NR] = $1 } END { printf "failover over %d rounds: min %d ms, median %d ms, max %d ms\n", NR, a[1], a[int((NR + 1) / 2)], a[NR] }'
