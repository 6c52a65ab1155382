#!/usr/bin/env bash
# The forge against git's own server, measured in the same run on this machine:
#   Aspen: a 3-node cluster of release builds on loopback (aspen dev), git through git-remote-aspen
#   baseline: git daemon on loopback serving a bare repository from the same disk
# on a generated repository (git fast-import, seeded): COMMITS commits (default 6000: ~60,000
# objects, a pack of ~30 MiB). Measures a full push, a clone from the node that took the push
# (warm: its cache holds the pack) and from another node (cold: the pack comes from the blob
# store first), a one-commit push, a fetch with nothing new, and log entries per push.
#
# Usage: benchmarks/forge.sh [COMMITS] [ROUNDS of the small operations (default 10)]   BENCH_DIR chooses the disk.
set -euo pipefail
cd "$(dirname "$0")/.."
commits="${1:-6000}"
rounds="${2:-10}"
swift build -c release --product git-remote-aspen > /dev/null
source benchmarks/dev-cluster.sh forge 7950
export PATH="$PWD/.build/release:$PATH"
ticket=$(cat "$work/cluster/.aspen-dev/ticket")
node_entry() { python3 - "$work/cluster/dev.out" "$1" <<'PY'
import re, sys
for line in open(sys.argv[1]):
    m = re.match(r"aspen-node (\d+) ready key=([0-9a-f]+) listen=(\S+)", line)
    if m and m.group(1) == sys.argv[2]: print(f"{m.group(1)}={m.group(2)}@{m.group(3)}")
PY
}
n1=$(node_entry 1); n2=$(node_entry 2); n3=$(node_entry 3)
export GIT_CONFIG_NOSYSTEM=1 HOME="$work/home" GIT_AUTHOR_NAME=b GIT_AUTHOR_EMAIL=b@b GIT_COMMITTER_NAME=b GIT_COMMITTER_EMAIL=b@b
mkdir -p "$HOME"
now() { date +%s.%N; }
# Seconds `COMMAND` took; the script stops, showing its output, if it fails.
seconds_of() {
    local start end
    start=$(now)
    "$@" > "$work/last.out" 2>&1 || { echo "failed: $*" >&2; cat "$work/last.out" >&2; exit 1; }
    end=$(now)
    python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$start" "$end"
}

# The repository.
src="$work/src"
git init -q -b main "$src"
python3 benchmarks/generate-repo.py "$commits" 26 | git -C "$src" fast-import --quiet
git -C "$src" reset -q --hard main
git -C "$src" repack -adq
objects=$(git -C "$src" count-objects -v | awk '/^in-pack/ {print $2}')
packmib=$(git -C "$src" count-objects -v | awk '/^size-pack/ {printf "%.1f", $2 / 1024}')

# The baseline: git daemon over a bare repository.
mkdir -p "$work/daemon"
git init -q --bare -b main "$work/daemon/demo.git"
git -C "$work/daemon/demo.git" config receive.fsckObjects true
git daemon --base-path="$work/daemon" --export-all --enable=receive-pack --listen=127.0.0.1 --port=7999 --reuseaddr --detach \
    --pid-file="$work/daemon.pid" "$work/daemon"
sleep 0.5
daemon_push=$(cd "$src" && seconds_of git push -q git://127.0.0.1:7999/demo.git main)
daemon_clone=$(seconds_of git clone -q git://127.0.0.1:7999/demo.git "$work/daemon-clone")

# Aspen: push through node 1, clone from node 1 (warm) and node 2 (cold, then warm).
ASPEN_TICKET="$ticket" "$aspen" repo create demo > /dev/null
aspen_push=$(cd "$src" && ASPEN_ENDPOINTS="$n1" seconds_of git push -q aspen://demo main)
warm_clone=$(ASPEN_ENDPOINTS="$n1" seconds_of git clone -q aspen://demo "$work/warm")
cold_clone=$(ASPEN_ENDPOINTS="$n2" seconds_of git clone -q aspen://demo "$work/cold")
[ "$(git -C "$work/cold" rev-parse HEAD)" = "$(git -C "$src" rev-parse HEAD)" ] || { echo "the cold clone differs" >&2; exit 1; }

# Small operations: a one-commit push, then a fetch with nothing new, from the clones above
# (Aspen's through node 3, whose first fetch fills its cache: the medians leave that out).
pushes=(); fetches=(); dpushes=(); dfetches=()
for i in $(seq 1 "$rounds"); do
    git -C "$work/daemon-clone" commit -q --allow-empty -m "d$i"
    dpushes+=("$(cd "$work/daemon-clone" && seconds_of git push -q origin main)")
    dfetches+=("$(cd "$work/daemon-clone" && seconds_of git fetch -q origin)")
    git -C "$work/warm" commit -q --allow-empty -m "a$i"
    pushes+=("$(cd "$work/warm" && ASPEN_ENDPOINTS="$n3" seconds_of git push -q aspen://demo main)")
    fetches+=("$(cd "$work/warm" && ASPEN_ENDPOINTS="$n3" seconds_of git fetch -q aspen://demo main)")
done
metrics=$(for p in 51 52 53; do curl -s "http://127.0.0.1:$((7950 + p))/metrics" || true; done)
kill "$(cat "$work/daemon.pid")" 2> /dev/null || true

python3 - "$objects" "$packmib" "$daemon_push" "$daemon_clone" "$aspen_push" "$warm_clone" "$cold_clone" \
    "${dpushes[*]}" "${dfetches[*]}" "${pushes[*]}" "${fetches[*]}" "$metrics" <<'PY'
import statistics, sys
objects, packmib = sys.argv[1], sys.argv[2]
dpush, dclone, apush, warm, cold = map(float, sys.argv[3:8])
med = lambda s: statistics.median(map(float, s.split()))
dp, df, ap, af = med(sys.argv[8]), med(sys.argv[9]), med(sys.argv[10]), med(sys.argv[11])
pushes = entries = 0
for line in sys.argv[12].splitlines():
    if line.startswith("aspen_forge_pushes_total "): pushes += float(line.split()[1])
    if line.startswith("aspen_forge_push_log_entries_total "): entries += float(line.split()[1])
print(f"Repository: {objects} objects, pack {packmib} MiB")
print("| measure | Aspen | git daemon | ratio | goal |")
print("|---|---|---|---|---|")
print(f"| full push | {apush:.2f} s | {dpush:.2f} s | {apush / dpush:.2f} | ≤ 1.5× + 0.1 s: {'met' if apush <= 1.5 * dpush + 0.1 else 'not met'} |")
print(f"| clone, warm node | {warm:.2f} s | {dclone:.2f} s | {warm / dclone:.2f} | ≤ 1.5×: {'met' if warm <= 1.5 * dclone else 'not met'} |")
print(f"| clone, cold node (pack from the blob store) | {cold:.2f} s | {dclone:.2f} s | {cold / dclone:.2f} | ≤ 2.5×: {'met' if cold <= 2.5 * dclone else 'not met'} |")
print(f"| one-commit push, median | {ap * 1000:.0f} ms | {dp * 1000:.0f} ms | {ap / dp:.2f} | ≤ 0.5 s: {'met' if ap <= 0.5 else 'not met'} |")
print(f"| fetch, nothing new, median | {af * 1000:.0f} ms | {df * 1000:.0f} ms | {af / df:.2f} | ≤ 0.3 s: {'met' if af <= 0.3 else 'not met'} |")
if pushes: print(f"| log entries per push | {entries / pushes:.2f} ({entries:.0f} for {pushes:.0f} pushes) | | | constant |")
PY
