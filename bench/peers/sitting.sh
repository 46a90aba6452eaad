#!/usr/bin/env bash
# One sitting of issue #20's figures, in the order BENCHMARKS.md's "Session 14" entries
# were measured: latency first (on the idle machine), then the drain beside
# graphile-worker, the database's floor, the drain at 100,000 / 1,000,000 / 100,000, the
# rebuild and its floor, appends beside pgbench, the log read beside COPY, two rushes.
# Run from anywhere after `cargo build --release`, on a machine doing nothing else.
# Usage: bench/peers/sitting.sh [out dir]. Env: PERF_DIR, PGPORT (as pg.sh).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
cd "$HERE/../.."
export PSS=1 PERF_DIR=${PERF_DIR:-${TMPDIR:-/tmp}/aula-perf}
bench/peers/pg.sh start >/dev/null
OUT=${1:-$PERF_DIR/results/sitting-$(date +%Y%m%d-%H%M%S)}; mkdir -p "$OUT"
U=$(bench/peers/pg.sh url)
log() { echo "## $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg) $*" | tee -a "$OUT"/all.txt; }
log start commit $(git rev-parse --short HEAD)
log latency
ROUNDS=2 bench/peers/latency_compare.sh > "$OUT"/latency.txt 2>&1; tail -10 "$OUT"/latency.txt >> "$OUT"/all.txt
log drain_compare
N=200000 ROUNDS=1 SYSTEMS="gw events" bench/peers/drain_compare.sh > "$OUT"/drain.txt 2>&1; tail -8 "$OUT"/drain.txt >> "$OUT"/all.txt
log floor
N=200000 ROUNDS=1 bench/peers/floor.sh > "$OUT"/floor.txt 2>&1; tail -5 "$OUT"/floor.txt >> "$OUT"/all.txt
for n in 100000 1000000 100000; do
  log tasks $n
  DATABASE_URL=$U RUST_LOG=error target/release/aula bench tasks --tasks $n --issued-by-events > "$OUT"/tasks-$n-$(date +%s).txt 2>&1
  grep -E "throughput|admin rows|WAL|CPU dur" "$OUT"/tasks-$n-*.txt | tail -4 >> "$OUT"/all.txt
done
log rebuild
DATABASE_URL=$U RUST_LOG=error target/release/aula bench rebuild --events 1000000 > "$OUT"/rebuild.txt 2>&1; tail -15 "$OUT"/rebuild.txt >> "$OUT"/all.txt
log append
ROUNDS=1 DURATION=10 bench/peers/append_compare.sh > "$OUT"/append.txt 2>&1; tail -12 "$OUT"/append.txt >> "$OUT"/all.txt
log log
DATABASE_URL=$U RUST_LOG=error target/release/aula bench log --events 1000000 --rounds 5 > "$OUT"/log.txt 2>&1; tail -12 "$OUT"/log.txt >> "$OUT"/all.txt
log rush
for i in 1 2; do DATABASE_URL=$U RUST_LOG=error target/release/aula bench rush --applicants 5000 --courses 1 > "$OUT"/rush-$i.txt 2>&1; tail -12 "$OUT"/rush-$i.txt >> "$OUT"/all.txt; done
log end
