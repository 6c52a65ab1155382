#!/usr/bin/env bash
# Aspen against etcd, measured by one client on this machine in one run:
#   - a 3-node etcd cluster on loopback, driven through etcd's v3 API;
#   - a 3-node Aspen cluster (aspen dev) on loopback, driven through its etcd endpoints and
#     through Aspen's native protocol.
# Both clusters run side by side, idle but for the cell being measured, and every workload ×
# client count runs against the three in turn (each row starting with the next of them), so a
# machine whose speed drifts over minutes shifts all three alike; before each cell the disk is
# synced. The whole table is measured ROUNDS times (default 3) and each cell reports its median
# round (by ops/s), so one slow minute does not decide a row. Then `etcdctl check perf` (--load=m and --load=l) runs against both clusters.
# Durability is equivalent: etcd fsyncs its WAL on every commit (its default) and commits its
# database every 100 ms; Aspen fsyncs its log on every group commit and applies to SQLite without
# waiting for the disk. Both keep their data under the same directory, on the same disk.
#
# Usage: benchmarks/vs-etcd.sh [SECONDS_PER_CELL (default 4)]   Set BENCH_DIR to choose the disk,
# ROUNDS the number of rounds.
# ASPEN_CMO=1 builds Aspen with cross-module optimization (into .build-cmo; the first build
# recompiles every dependency, about 8 minutes on 2 cores). Measured here it is no faster than
# the plain release build (puts 5-15 % slower, reads within noise), so the default is plain.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-4}"
rounds="${ROUNDS:-3}"
clients=(1 16 64 256)
export ETCDCTL_API=3

if ! command -v etcd > /dev/null || ! command -v etcdctl > /dev/null; then
    echo "installing etcd-server and etcd-client from Debian" >&2
    apt-get update -q > /dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server etcd-client > /dev/null
fi
if [ "${ASPEN_CMO:-0}" = 1 ]; then
    build=(swift build -c release -Xswiftc -cross-module-optimization --scratch-path .build-cmo)
    aspen=.build-cmo/release/aspen
else
    build=(swift build -c release)
    aspen=.build/release/aspen
fi
"${build[@]}" --product aspen > /dev/null
"${build[@]}" --product aspen-node > /dev/null
echo "aspen built with: ${build[*]}" >&2

work=$(mktemp -d "${BENCH_DIR:-/tmp}/aspen-vs-etcd.XXXXXX")
results="$work/results.jsonl"
: > "$results"
cleanup() {
    kill $(jobs -p) 2> /dev/null || true
    pkill -f "$work" 2> /dev/null || true
    wait 2> /dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
echo "working in $work ($(df -h "$work" | awk 'NR == 2 { print $1 }'))" >&2

# Bytes the server processes ($servers) have had written to disk so far (/proc/PID/io).
servers=""
written_by_servers() {
    for pid in $servers; do awk '/^write_bytes/ { print $2 }' "/proc/$pid/io" 2> /dev/null; done | awk '{ s += $1 } END { printf "%.0f\n", s }'
}

# cell SYSTEM WORKLOAD CLIENTS: one measured run, one JSON line in $results.
cell() {
    local system="$1" workload="$2" count="$3"
    local args=("${workload%-stale}" --clients "$count" --duration "$seconds" --keyspace 10000 --value-size 256 --json)
    [ "$workload" = get-stale ] && args+=(--stale)
    local pids
    case "$system" in
        etcd) args+=(--protocol etcd --endpoints "$etcd_endpoints"); pids=$etcd_servers ;;
        aspen-etcd) args+=(--protocol etcd --endpoints "$aspen_etcd"); pids=$aspen_servers ;;
        aspen-native) args+=(--protocol aspen --ticket "$ticket"); pids=$aspen_servers ;;
    esac
    servers=$pids
    sync
    local before
    before=$(written_by_servers)
    "$aspen" bench "${args[@]}" 2> /dev/null > "$work/cell.json"
    local disk=$(($(written_by_servers) - before))
    python3 -c "import json, sys; r = json.load(open('$work/cell.json')); r['system'] = '$system'; r['workload'] = '$workload'; r['diskBytesPerNode'] = $disk / 3; print(json.dumps(r))" >> "$results"
    tail -1 "$results" | python3 -c "import json, sys; r = json.load(sys.stdin); print(f\"{r['system']:<13} {r['workload']:<10} clients={r['clients']:<4} {r['opsPerSecond']:>9.0f} ops/s  p50 {r['p50Us']/1000:7.2f} ms  p99 {r['p99Us']/1000:7.2f} ms  errors {r['errors']}\")" >&2
}

checkperf() {
    local system="$1" endpoints="$2"
    for load in m l; do
        echo "== etcdctl check perf --load=$load against $system" >&2
        etcdctl --endpoints="$endpoints" check perf --load="$load" 2>&1 | tr '\r' '\n' | grep -oE '(PASS|FAIL)(: .*)?$' | sed "s/^/$system load=$load: /" | tee -a "$work/checkperf.txt" >&2 || true
    done
}

# The disk's fsync latency now, in µs: the median of 40 fdatasyncs of 8 KiB over existing blocks,
# printed before the run so that runs on a slow disk can be told apart.
fsync_us() {
    python3 - "$work" << 'PROBE'
import os, sys, time
path = os.path.join(sys.argv[1], ".fsync-probe")
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
os.pwrite(fd, bytes(8192 * 16), 0)
os.fsync(fd)
samples = []
for i in range(40):
    os.pwrite(fd, os.urandom(8192), (i % 16) * 8192)
    started = time.perf_counter()
    os.fdatasync(fd)
    samples.append(time.perf_counter() - started)
os.close(fd)
os.unlink(path)
print(int(sorted(samples)[len(samples) // 2] * 1e6))
PROBE
}

sync
baseline_fsync=$(for _ in 1 2 3; do fsync_us; done | sort -n | sed -n 2p)
echo "== fsync of 8 KiB before the run: median ${baseline_fsync} µs" >&2

# --- the clusters ---
# Aspen's members always speak TLS to each other (mutual, by their keys); etcd's members get
# mutual TLS too, as a production etcd cluster has, from a CA made for this run. Clients of both
# speak plaintext to the etcd API (Aspen's native clients use TLS).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj "/CN=bench-ca" \
    -keyout "$work/ca.key" -out "$work/ca.crt" > /dev/null 2>&1
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=etcd-peer" \
    -keyout "$work/peer.key" -out "$work/peer.csr" > /dev/null 2>&1
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' > "$work/peer.ext"
openssl x509 -req -in "$work/peer.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" -CAcreateserial -days 1 \
    -extfile "$work/peer.ext" -out "$work/peer.crt" > /dev/null 2>&1
cluster=""
for i in 1 2 3; do cluster+="${cluster:+,}e$i=https://127.0.0.1:$((23800 + i))"; done
for i in 1 2 3; do
    etcd --name "e$i" --data-dir "$work/etcd/e$i" \
        --listen-client-urls "http://127.0.0.1:$((23790 + i))" --advertise-client-urls "http://127.0.0.1:$((23790 + i))" \
        --listen-peer-urls "https://127.0.0.1:$((23800 + i))" --initial-advertise-peer-urls "https://127.0.0.1:$((23800 + i))" \
        --peer-cert-file "$work/peer.crt" --peer-key-file "$work/peer.key" --peer-trusted-ca-file "$work/ca.crt" \
        --peer-client-cert-auth \
        --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token aspen-bench \
        --log-level error > "$work/etcd-$i.log" 2>&1 &
done
etcd_endpoints="127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793"
for _ in $(seq 1 100); do etcdctl --endpoints="$etcd_endpoints" endpoint health > /dev/null 2>&1 && break; sleep 0.2; done
echo "== etcd $(etcd --version | head -1 | awk '{print $3}') cluster up" >&2
etcd_servers=$(pgrep -f "etcd --name e[123] --data-dir $work" | tr '\n' ' ')

"$aspen" dev --data-dir "$work/aspen" --base-port 24100 > "$work/dev.out" 2>&1 &
for _ in $(seq 1 300); do grep -q '^export ASPEN_TICKET' "$work/dev.out" && break; sleep 0.1; done
ticket=$(sed -n 's/^export ASPEN_TICKET=//p' "$work/dev.out")
[ -n "$ticket" ] || { cat "$work/dev.out" >&2; exit 1; }
aspen_etcd="127.0.0.1:24131,127.0.0.1:24132,127.0.0.1:24133"
echo "== Aspen cluster up" >&2
aspen_servers=$(pgrep -f "aspen-node run .*$work" | tr '\n' ' ')
# Every second, each node's term and whether it leads, with the cell being measured: a leader
# change shows when it happened.
(
    last=""
    while [ -d "$work" ]; do
        now=$(for i in 1 2 3; do curl -s -m 1 "http://127.0.0.1:$((24150 + i))/metrics" 2> /dev/null |
            awk '/^aspen_raft_term / { t = $2 } /^aspen_raft_is_leader / { l = $2 } END { printf "n'$i' term %s leader %s; ", t, l }'; done)
        [ "$now" != "$last" ] && echo "$(date +%T) after $(wc -l < "$results") cells: $now" >> "$work/terms.txt"
        last=$now
        sleep 1
    done
) &

# A warm-up of each that is not recorded (a fresh cluster's first seconds — connections, the
# first checkpoints of its files — are not its steady state, for etcd or for Aspen).
"$aspen" bench put --clients 16 --duration 3 --keyspace 10000 --value-size 256 --protocol etcd --endpoints "$etcd_endpoints" > /dev/null 2>&1 || true
"$aspen" bench put --clients 16 --duration 3 --keyspace 10000 --value-size 256 --protocol etcd --endpoints "$aspen_etcd" > /dev/null 2>&1 || true
"$aspen" bench put --clients 16 --duration 3 --keyspace 10000 --value-size 256 --protocol aspen --ticket "$ticket" > /dev/null 2>&1 || true

systems=(etcd aspen-etcd aspen-native)
row=0
for round in $(seq 1 "$rounds"); do
    echo "== round $round of $rounds" >&2
    for workload in put get get-stale; do
        for count in "${clients[@]}"; do
            for k in 0 1 2; do cell "${systems[$(((row + k) % 3))]}" "$workload" "$count"; done
            row=$((row + 1))
        done
    done
done
checkperf etcd "$etcd_endpoints"
checkperf aspen "$aspen_etcd"
# What each Aspen node counted: forwarded writes of unknown outcome, snapshots installed, terms.
for i in 1 2 3; do
    curl -s "http://127.0.0.1:$((24150 + i))/metrics" 2> /dev/null |
        grep -E '^aspen_(raft_term|raft_is_leader|node_proposals_forwarded(_unknown|_refused)?_total|raft_snapshots_installed_total|raft_compactions_follower_behind_total|raft_messages_dropped_total) ' |
        sed "s/^/aspen node $i: /" >> "$work/checkperf.txt" || true
done

# --- the table ---
python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
rounds = {}
for r in rows:
    rounds.setdefault((r["system"], r["workload"], r["clients"]), []).append(r)
# Each cell's median round by throughput (the upper middle one of an even count).
by = {key: sorted(runs, key=lambda r: r["opsPerSecond"])[len(runs) // 2] for key, runs in rounds.items()}
print(f"Each cell: the median of {max(len(runs) for runs in rounds.values())} rounds by ops/s, with that round's p50 and p99.")
print(f"{'workload':<10} {'clients':>7} | {'etcd ops/s':>10} {'p50 ms':>7} {'p99 ms':>7} | {'aspen-etcd':>10} {'p50 ms':>7} {'p99 ms':>7} {'ratio':>6} | {'aspen-nat':>10} {'p50 ms':>7} {'p99 ms':>7} {'ratio':>6}")
for workload in ["put", "get", "get-stale"]:
    for clients in [1, 16, 64, 256]:
        e = by.get(("etcd", workload, clients)); a = by.get(("aspen-etcd", workload, clients)); n = by.get(("aspen-native", workload, clients))
        if not (e and a and n): continue
        cell = lambda r: f"{r['opsPerSecond']:>10.0f} {r['p50Us']/1000:>7.2f} {r['p99Us']/1000:>7.2f}"
        ratio = lambda r: f"{r['opsPerSecond'] / e['opsPerSecond']:>6.2f}" if e['opsPerSecond'] else "   n/a"
        print(f"{workload:<10} {clients:>7} | {cell(e)} | {cell(a)} {ratio(a)} | {cell(n)} {ratio(n)}")
print()
print("Disk writes per put, KiB per node (write_bytes of the server processes over the cell / ops):")
for clients in [1, 16, 64, 256]:
    cells = [by.get((system, "put", clients)) for system in ["etcd", "aspen-etcd", "aspen-native"]]
    if not all(cells) or not all(r["operations"] for r in cells): continue
    per = lambda r: f"{r['diskBytesPerNode'] / r['operations'] / 1024:>7.1f}"
    print(f"put {clients:>4} clients: etcd {per(cells[0])}   aspen-etcd {per(cells[1])}   aspen-native {per(cells[2])}")
PY
echo
cat "$work/checkperf.txt"
echo "Aspen's terms and leaders as they changed (cells: of the $(wc -l < "$results") above):"
cat "$work/terms.txt"
