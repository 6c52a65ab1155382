#!/usr/bin/env bash
# Durable pub/sub against Aspen's own key-value store, measured in the same run on a 3-node
# cluster of release builds on loopback (aspen dev):
#   throughput  aspen bench pub (16 publishers, one 256-byte message per call)
#               vs aspen bench put (16 clients, 256-byte values), ABBA
#   latency     aspen bench pub-latency: publish-to-delivery on a stream watcher, alternated
#               with put-to-watch-event on a key watcher, and with publish to a consumer group's
#               waiting fetch (the same client, the same clock)
#
# Usage: benchmarks/pubsub.sh [SECONDS per run (default 10)]   BENCH_DIR chooses the disk.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
source benchmarks/dev-cluster.sh pubsub 7850
field() { python3 -c "import json, sys; print(json.load(sys.stdin)['$1'])"; }

put() { cli bench put --clients 16 --duration "$seconds" --json 2> /dev/null | field opsPerSecond; }
pub() { cli bench pub --clients 16 --duration "$seconds" --json 2> /dev/null | field opsPerSecond; }
p1=$(put); s1=$(pub); s2=$(pub); p2=$(put)
latency=$(cli bench pub-latency --duration "$seconds" --json 2> /dev/null)
python3 - "$p1" "$p2" "$s1" "$s2" "$latency" <<'PY'
import json, sys
p1, p2, s1, s2 = map(float, sys.argv[1:5]); l = json.loads(sys.argv[5])
put = (p1 + p2) / 2; pub = (s1 + s2) / 2
print("| measure | pub/sub | baseline | ratio |")
print("|---|---|---|---|")
print(f"| durable publishes, 16 clients | {pub:.0f}/s | {put:.0f} KV puts/s | {pub / put:.2f} |")
print(f"| publish-to-delivery p50 | {l['deliveryP50Us'] / 1000:.2f} ms | {l['watchP50Us'] / 1000:.2f} ms put-to-watch | {l['deliveryP50Us'] / l['watchP50Us']:.2f} |")
print(f"| publish-to-delivery p99 | {l['deliveryP99Us'] / 1000:.2f} ms | {l['watchP99Us'] / 1000:.2f} ms put-to-watch | {l['deliveryP99Us'] / l['watchP99Us']:.2f} |")
print(f"| publish to a waiting group fetch p50 | {l['groupP50Us'] / 1000:.2f} ms | {l['watchP50Us'] / 1000:.2f} ms put-to-watch | {l['groupP50Us'] / l['watchP50Us']:.2f} |")
print(f"| publish to a waiting group fetch p99 | {l['groupP99Us'] / 1000:.2f} ms | {l['watchP99Us'] / 1000:.2f} ms put-to-watch | {l['groupP99Us'] / l['watchP99Us']:.2f} |")
print(f"({l['rounds']} latency rounds; throughput runs ABBA: puts {p1:.0f}, {p2:.0f}; publishes {s1:.0f}, {s2:.0f})")
PY
