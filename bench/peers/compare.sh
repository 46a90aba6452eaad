#!/usr/bin/env bash
# Aula beside its peers on ONE private PostgreSQL 15 (./pg.sh), interleaved rounds, then
# the medians and the ratios (ratios.py). Reproduces BENCHMARKS.md's side-by-side figures.
#
#   bench/peers/compare.sh                 # drain + latency (the task queue), ~10 min
#   WHAT="drain latency append" bench/peers/compare.sh
#
# What each part runs (see the scripts):
#   drain    drain_compare.sh: graphile-worker 0.17.3 (pinned in graphile-worker/package-lock.json,
#            4 `--once` processes x 24) / `aula bench tasks --issued-by-events` (production's path)
#            / `aula bench tasks` (tasks without an event); N no-op tasks, history kept.
#   latency  latency_compare.sh: graphile-worker add_job -> start / `aula bench latency`.
#   append   append_compare.sh: pgbench insert1 and select_insert / `aula bench append`.
# Env: WHAT ("drain latency"), N (200000), ROUNDS (3), SAMPLES (1000), DURATION (10),
#      AULA (default: $CARGO_TARGET_DIR or target, release/aula; build it with
#      `cargo build --release` first), PERF_DIR (${TMPDIR:-/tmp}/aula-perf: the cluster and results).
# Needs: node + npm (graphile-worker is installed here with `npm ci` on first use), pgbench
# and psql, PostgreSQL 15 server binaries. The cluster keeps running; stop it with ./pg.sh stop.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
WHAT=${WHAT:-"drain latency"}
export PERF_DIR=${PERF_DIR:-${TMPDIR:-/tmp}/aula-perf}
REPO=$(cd "$HERE/../.." && pwd)
export AULA=${AULA:-${CARGO_TARGET_DIR:-$REPO/target}/release/aula}
[ -x "$AULA" ] || { echo "no $AULA: run cargo build --release (or set AULA)" >&2; exit 1; }
[ -d "$HERE/graphile-worker/node_modules/graphile-worker" ] \
  || (cd "$HERE/graphile-worker" && npm ci --no-audit --no-fund >/dev/null)
"$HERE/pg.sh" start
OUT=${OUT:-$PERF_DIR/results/compare-$(date +%Y%m%d-%H%M%S)}; mkdir -p "$OUT"
{
  echo "# $(date -Is) $(uname -n) $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "# aula $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?'), graphile-worker $(node -p "require('$HERE/graphile-worker/node_modules/graphile-worker/package.json').version"), $(pgbench --version)"
  echo "# uptime: $(uptime)"
} | tee "$OUT/machine.txt"
for w in $WHAT; do
  case $w in
    drain)   OUT=$OUT/drain SYSTEMS=${SYSTEMS:-"gw events aula"} "$HERE/drain_compare.sh" ;;
    latency) OUT=$OUT/latency "$HERE/latency_compare.sh" ;;
    append)  OUT=$OUT/append "$HERE/append_compare.sh" ;;
    *) echo "unknown part $w" >&2; exit 2 ;;
  esac
done
echo "# uptime after: $(uptime)" | tee -a "$OUT/machine.txt"
python3 "$HERE/ratios.py" "$OUT" | tee "$OUT/ratios.txt"
echo "results: $OUT"
