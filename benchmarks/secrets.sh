#!/usr/bin/env bash
# The secrets engines on a 3-node cluster of release builds on loopback (aspen dev), each
# against its baseline measured in the same run:
#   transit encrypt and decrypt of 1 KiB (16 clients, native protocol)  vs  AES-256-GCM seal+open
#       of 1 KiB in a tight loop in one process (the gap is the cluster's overhead: a linearizable
#       read of the key, the key's envelope, the request's round trip)
#   kv-v2 writes of a 256-byte secret (16 clients)  vs  plain key-value puts of 256 bytes, ABBA
#
# Usage: benchmarks/secrets.sh [SECONDS per run (default 10)]   BENCH_DIR chooses the disk.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
source benchmarks/dev-cluster.sh secrets 7750
field() { python3 -c "import json, sys; print(json.load(sys.stdin)['$1'])"; }
run() { cli bench "$1" --clients 16 --duration "$seconds" --value-size "$2" --json 2> /dev/null | field opsPerSecond; }

aead=$(run aead 1024)
enc=$(run transit-encrypt 1024)
dec=$(run transit-decrypt 1024)
p1=$(run put 256); k1=$(run kv2-put 256); k2=$(run kv2-put 256); p2=$(run put 256)
python3 - "$aead" "$enc" "$dec" "$p1" "$p2" "$k1" "$k2" <<'PY'
import sys
aead, enc, dec, p1, p2, k1, k2 = map(float, sys.argv[1:8])
put = (p1 + p2) / 2; kv2 = (k1 + k2) / 2
print("| measure | secrets | baseline | ratio |")
print("|---|---|---|---|")
print(f"| transit encrypt, 1 KiB, 16 clients | {enc:.0f}/s | {aead:.0f} AES-GCM seal+open/s in-process | {enc / aead:.4f} |")
print(f"| transit decrypt, 1 KiB, 16 clients | {dec:.0f}/s | {aead:.0f} AES-GCM seal+open/s in-process | {dec / aead:.4f} |")
print(f"| kv-v2 writes, 256 B, 16 clients | {kv2:.0f}/s | {put:.0f} KV puts/s | {kv2 / put:.2f} |")
print(f"(ABBA: puts {p1:.0f}, {p2:.0f}; kv-v2 writes {k1:.0f}, {k2:.0f})")
PY
