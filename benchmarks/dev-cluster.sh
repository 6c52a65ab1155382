# Sourced by the benchmark scripts: release builds of aspen and aspen-node, a 3-node cluster of
# them on loopback (aspen dev) in a fresh directory, and `cli` to run aspen against it. The
# cluster and the directory go when the script exits.
#
# Usage: source benchmarks/dev-cluster.sh NAME BASE_PORT   (BENCH_DIR chooses the disk)
swift build -c release --product aspen > /dev/null
swift build -c release --product aspen-node > /dev/null
aspen="$PWD/.build/release/aspen"

work=$(mktemp -d "${BENCH_DIR:-/tmp}/aspen-$1.XXXXXX")
cleanup() {
    kill $(jobs -p) 2> /dev/null || true
    pkill -f "$work" 2> /dev/null || true
    wait 2> /dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/cluster"
(cd "$work/cluster" && exec "$aspen" dev --base-port "$2" > dev.out 2>&1) &
for _ in $(seq 1 120); do grep -q '^Try:' "$work/cluster/dev.out" 2> /dev/null && break; sleep 0.5; done
grep -q '^Try:' "$work/cluster/dev.out" || { cat "$work/cluster/dev.out" >&2; echo "the cluster did not start" >&2; exit 1; }
cli() { (cd "$work/cluster" && "$aspen" "$@"); }
