#!/usr/bin/env bash
# CI on a 3-node cluster of release builds on loopback (aspen dev), each figure against the
# baseline named beside it, measured in the same run:
#   push to first job started: from `git push` returning to the job's first command (p50, p99)
#   three trivial sequential jobs (true; true; true): the run, created to ended, against the
#       same three commands with `bash -c`, plus a checkout by hand for each job
#   checkout of a ~60,000-object repository from a node's warm forge cache (the worker's own
#       figure, from the job's log) against `git clone --shared` + `checkout` of a local bare copy
#   KV put p99 (16 clients) while a job writes 50 MB of log, against the same without it
#
# Usage: benchmarks/ci.sh [ROUNDS of push-to-first-job (default 20)] [COMMITS of the big
# repository (default 6000: ~60,000 objects)]   BENCH_DIR chooses the disk.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-20}"
commits="${2:-6000}"
swift build -c release --product git-remote-aspen > /dev/null
source benchmarks/dev-cluster.sh ci 8050
export PATH="$PWD/.build/release:$PATH"
node_entry() { python3 - "$work/cluster/dev.out" "$1" <<'PY'
import re, sys
for line in open(sys.argv[1]):
    m = re.match(r"aspen-node (\d+) ready key=([0-9a-f]+) listen=(\S+)", line)
    if m and m.group(1) == sys.argv[2]: print(f"{m.group(1)}={m.group(2)}@{m.group(3)}")
PY
}
n1=$(node_entry 1)
export GIT_CONFIG_NOSYSTEM=1 HOME="$work/home" GIT_AUTHOR_NAME=b GIT_AUTHOR_EMAIL=b@b GIT_COMMITTER_NAME=b GIT_COMMITTER_EMAIL=b@b
mkdir -p "$HOME"
nowns() { date +%s%N; }
# The id of the run of commit $2 in repository $1, once it exists (and, with $3, has ended).
run_of() { local want="${3:-}"; for _ in $(seq 1 600); do
    id=$(cli ci list "$1" --json 2> /dev/null | python3 -c "
import json, sys
for r in json.load(sys.stdin)['runs']:
    if r['sha'] == '$2' and ('$want' == '' or r['state'] not in ('queued', 'running')): print(r['id']); break" || true)
    [ -n "$id" ] && { echo "$id"; return; }; sleep 0.05; done; echo "no run of $2" >&2; exit 1; }
push() { (cd "$1" && ASPEN_ENDPOINTS="$n1" git push -q aspen://demo-"$2" main); }

# 1. Push to first job started.
cli repo create demo-latency > /dev/null
src="$work/latency"; git init -q -b main "$src"; mkdir -p "$src/.aspen"
printf 'version: 1\njobs:\n  first: { run: "date +%%s%%N" }\n' > "$src/.aspen/ci.yml"
lags=()
for i in $(seq 1 "$rounds"); do
    echo "$i" > "$src/n.txt"; git -C "$src" add -A; git -C "$src" commit -qm "round $i"
    sha=$(git -C "$src" rev-parse HEAD)
    push "$src" latency; acked=$(nowns)
    id=$(run_of demo-latency "$sha" ended)
    started=$(cli ci logs "$id" first | grep -E '^[0-9]{19}$' | head -1)
    lags+=("$(( (started - acked) / 1000000 ))")
done

# 2. Three trivial sequential jobs, against bash -c after the same checkout by hand.
cli repo create demo-trivial > /dev/null
src="$work/trivial"; git init -q -b main "$src"; mkdir -p "$src/.aspen"
printf 'version: 1\njobs:\n  a: { run: "true" }\n  b: { needs: [a], run: "true" }\n  c: { needs: [b], run: "true" }\n' > "$src/.aspen/ci.yml"
runs=(); bases=(); clones=()
for i in 1 2 3 4 5; do
    echo "$i" > "$src/n.txt"; git -C "$src" add -A; git -C "$src" commit -qm "trivial $i"
    sha=$(git -C "$src" rev-parse HEAD)
    push "$src" trivial
    id=$(run_of demo-trivial "$sha" ended)
    runs+=("$(cli ci show "$id" --json | python3 -c "import json, sys; r = json.load(sys.stdin); print(r['ended_ms'] - r['created_ms'])")")
    rm -rf "$work/bare.git" "$work/by-hand"; git clone -q --bare "$src" "$work/bare.git"
    start=$(nowns)
    git clone -q --shared --no-checkout "$work/bare.git" "$work/by-hand"
    git -C "$work/by-hand" -c advice.detachedHead=false checkout -q --detach "$sha"
    middle=$(nowns)
    (cd "$work/by-hand" && bash -eo pipefail -c true && bash -eo pipefail -c true && bash -eo pipefail -c true)
    end=$(nowns)
    clones+=("$(( (middle - start) / 1000 ))"); bases+=("$(( (end - middle) / 1000 ))")
done

# 3. Checkout of a big repository from a warm node cache.
cli repo create demo-big > /dev/null
big="$work/big"; git init -q -b main "$big"
python3 benchmarks/generate-repo.py "$commits" 28 | git -C "$big" fast-import --quiet
git -C "$big" reset -q --hard main
git -C "$big" repack -adq
objects=$(git -C "$big" count-objects -v | awk '/^in-pack/ {print $2}')
mkdir -p "$big/.aspen"; printf 'version: 1\njobs:\n  look: { run: "git rev-parse HEAD" }\n' > "$big/.aspen/ci.yml"
checkouts=()
for i in 1 2 3 4; do
    echo "$i" > "$big/n.txt"; git -C "$big" add -A; git -C "$big" commit -qm "big $i"
    sha=$(git -C "$big" rev-parse HEAD)
    push "$big" big
    id=$(run_of demo-big "$sha" ended)
    checkouts+=("$(cli ci logs "$id" look | sed -n 's/^aspen: checked out [0-9a-f]* in \([0-9]*\) ms.*/\1/p')")
done
rm -rf "$work/bare.git" "$work/by-hand"; git clone -q --bare "$big" "$work/bare.git"
start=$(nowns)
git clone -q --shared --no-checkout "$work/bare.git" "$work/by-hand"
git -C "$work/by-hand" -c advice.detachedHead=false checkout -q --detach "$sha"
byhand=$(( ($(nowns) - start) / 1000000 ))

# 4. KV put p99 without, then with, a job writing 50 MB of log (100 × 500 kB over ~10 s).
p99() { cli bench put --clients 16 --duration "$1" --value-size 256 --json 2> /dev/null | python3 -c "import json, sys; print(json.load(sys.stdin)['p99Us'])"; }
quiet=$(p99 10)
cli repo create demo-noisy > /dev/null
src="$work/noisy"; git init -q -b main "$src"; mkdir -p "$src/.aspen"
cat > "$src/.aspen/ci.yml" <<'YML'
version: 1
jobs:
  noisy:
    run: |
      for i in $(seq 1 100); do head -c 500000 /dev/zero | tr '\0' x | fold -w 100; sleep 0.1; done
YML
git -C "$src" add -A; git -C "$src" commit -qm noisy; sha=$(git -C "$src" rev-parse HEAD)
push "$src" noisy
id=$(run_of demo-noisy "$sha")
for _ in $(seq 1 100); do cli ci logs "$id" noisy | grep -q xxxx && break; sleep 0.1; done
noisy=$(p99 8)
id=$(run_of demo-noisy "$sha" ended)
logbytes=$(cli ci logs "$id" noisy | wc -c)

python3 - "${lags[*]}" "${runs[*]}" "${bases[*]}" "${checkouts[*]}" "$byhand" "$objects" "$quiet" "$noisy" "$logbytes" "${clones[*]}" <<'PY'
import statistics, sys
def pct(values, p):
    values = sorted(values); return values[min(len(values) - 1, int(round(p * (len(values) - 1))))]
lags = list(map(int, sys.argv[1].split())); runs = list(map(int, sys.argv[2].split())); bases = list(map(int, sys.argv[3].split()))
checkouts = [int(x) for x in sys.argv[4].split()]; byhand = int(sys.argv[5]); objects = sys.argv[6]
quiet, noisy, logbytes = float(sys.argv[7]), float(sys.argv[8]), int(sys.argv[9])
run = statistics.median(runs)
base = statistics.median(bases) / 1000; clone = statistics.median(map(int, sys.argv[10].split())) / 1000
goal = 1.5 * base + 3 * clone   # each of the three jobs checks the commit out
warm = statistics.median(checkouts[1:]) if len(checkouts) > 1 else checkouts[0]
print("| measure | Aspen | baseline | ratio | goal |")
print("|---|---|---|---|---|")
print(f"| push to first job started, p50 / p99 ({len(lags)} pushes) | {pct(lags, .5)} / {pct(lags, .99)} ms | | | p50 ≤ 2 s, p99 ≤ 5 s: {'met' if pct(lags, .5) <= 2000 and pct(lags, .99) <= 5000 else 'not met'} |")
print(f"| three trivial sequential jobs, run created to ended, median | {run:.0f} ms | {base:.1f} ms (3 × bash -c) + 3 × {clone:.0f} ms (checkout by hand) | {run / (base + 3 * clone):.1f} | ≤ 1.5× + checkouts = {goal:.0f} ms: {'met' if run <= goal else 'not met'} |")
print(f"| checkout of {objects} objects from the warm node cache, median | {warm:.0f} ms | {byhand} ms (clone --shared + checkout by hand) | {warm / max(byhand, 1):.2f} | ≤ 1 s: {'met' if warm <= 1000 else 'not met'} |")
print(f"| KV put p99, 16 clients, while a job logs {logbytes / 1e6:.0f} MB | {noisy / 1000:.2f} ms | {quiet / 1000:.2f} ms (no job) | {noisy / quiet:.2f} | ≤ 2×: {'met' if noisy <= 2 * quiet else 'not met'} |")
print(f"(push lags ms: {lags}; runs ms: {runs}; bash -c ×3 µs: {bases}; checkouts ms: {checkouts})")
PY
