#!/usr/bin/env bash
# The blob store against its baselines, each pair measured in the same run, on a 3-node cluster of
# release builds on loopback (aspen dev):
#   hash   aspen blob hash FILE          vs  b3sum --num-threads 1 FILE (page cache warm for both)
#   add    aspen blob add --replicas 3   vs  cp FILE to three directories, then sync
#   fetch  aspen blob get from node 2    vs  the same bytes over TLS 1.3 on loopback: openssl s_server
#          -WWW serving the file, openssl s_client reading it into a file
#   small  aspen bench blob --value-size 4096 (adds per second, 16 clients)
# Each pair runs in ABBA order (A B B A) and reports the mean of each side. Every add uses a fresh
# file (the same bytes again would be deduplicated).
#
# Usage: benchmarks/blob.sh [SIZE_MIB (default 256)]   BENCH_DIR chooses the disk.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib="${1:-256}"
source benchmarks/dev-cluster.sh blob 7700
mkdir -p "$work/copies" "$work/www"

# seconds COMMAND...: wall-clock seconds the command took.
seconds() {
    local start end
    start=$(date +%s.%N)
    "$@" > /dev/null
    end=$(date +%s.%N)
    python3 -c "print(f'{$end - $start:.3f}')"
}
# pair NAME A_FUNCTION B_FUNCTION: ABBA, the mean of each side, and B/A as a line of the table.
rows=()
pair() {
    local name="$1" a="$2" b="$3" ta1 tb1 tb2 ta2
    ta1=$(seconds "$a" 1); tb1=$(seconds "$b" 1); tb2=$(seconds "$b" 2); ta2=$(seconds "$a" 2)
    rows+=("$(python3 -c "
a = ($ta1 + $ta2) / 2; b = ($tb1 + $tb2) / 2; mib = $size_mib
print(f'| {\"$name\"} | {a:.2f} s ({mib / a:.0f} MiB/s) | {b:.2f} s ({mib / b:.0f} MiB/s) | {b / a:.2f} |')")")
    echo "${rows[-1]}" >&2
}

for round in 0 1 2; do head -c "$((size_mib << 20))" /dev/urandom > "$work/input-$round.bin"; done
cat "$work"/input-*.bin > /dev/null

aspen_hash() { "$aspen" blob hash "$work/input-0.bin"; }
b3sum_hash() { b3sum --num-threads 1 "$work/input-0.bin"; }
pair "hash (aspen vs b3sum --num-threads 1)" aspen_hash b3sum_hash

aspen_add() { cli blob add "$work/input-$1.bin" --replicas 3 --tag "bench/$1"; }
copy_add() {
    rm -rf "$work/copies"/*
    for copy in a b c; do mkdir -p "$work/copies/$copy"; cp "$work/input-$1.bin" "$work/copies/$copy/"; done
    sync
}
pair "add, 3 copies (aspen vs cp ×3 + sync)" aspen_add copy_add

hash=$(cli blob hash "$work/input-1.bin" | cut -d' ' -f1)
node2=$(cli cluster members --json | python3 -c "
import json, sys
for m in json.load(sys.stdin)['members']:
    if m['id'] == 2: print(f\"2={m['key']}@{m['address']}\")")
aspen_fetch() { rm -f "$work/fetched"; "$aspen" blob get "$hash" -o "$work/fetched" --endpoints "$node2"; }
openssl req -x509 -newkey ed25519 -nodes -keyout "$work/www/key.pem" -out "$work/www/cert.pem" -days 1 -subj /CN=localhost 2> /dev/null
cp "$work/input-1.bin" "$work/www/blob.bin"
(cd "$work/www" && exec openssl s_server -WWW -tls1_3 -accept 7790 -cert cert.pem -key key.pem -quiet > /dev/null 2>&1) &
sleep 1
tls_fetch() {
    printf 'GET /blob.bin HTTP/1.0\r\n\r\n' | openssl s_client -connect 127.0.0.1:7790 -tls1_3 -quiet -ign_eof > "$work/fetched-tls" 2> /dev/null
}
pair "fetch from another node (aspen vs openssl s_server → s_client)" aspen_fetch tls_fetch
fetched=$(stat -c %s "$work/fetched-tls")
[ "$fetched" -ge $((size_mib << 20)) ] || echo "warning: the TLS baseline moved $fetched bytes" >&2

echo
echo "| $size_mib MiB | aspen | baseline | aspen speed ÷ baseline speed |"
echo "|---|---|---|---|"
printf '%s\n' "${rows[@]}"
echo
cli bench blob --clients 16 --duration 10 --value-size 4096
