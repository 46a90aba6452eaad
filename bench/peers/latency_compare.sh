#!/usr/bin/env bash
# Pickup latency side by side on ONE cluster (./pg.sh), interleaved rounds:
#   gw    peers/graphile-worker/latency.js: 1000 sequential add_job calls, each awaited until
#         the task function starts (client clock: before add_job is sent -> task start)
#   aula  `aula bench latency`: 1000 sequential events, each awaited until its task starts
#         (database clock: event commit -> task start, and task insert -> task start)
#   floor peers/graphile-worker/latency_floor.js: the same bare in SQL, one hop (insert task ->
#         start, graphile-worker's shape) and two hops (insert event -> react -> task start,
#         Aula's shape), client clock as gw
# Env: ROUNDS (3), SAMPLES (1000), AULA, REPO, PERF_DIR, GW_DIR, OUT.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROUNDS=${ROUNDS:-3}; SAMPLES=${SAMPLES:-1000}
REPO=${REPO:-$(cd "$HERE/../.." && pwd)}; AULA=${AULA:-${CARGO_TARGET_DIR:-$REPO/target}/release/aula}
GW_DIR=${GW_DIR:-$HERE/graphile-worker}
export PERF_DIR=${PERF_DIR:-${TMPDIR:-/tmp}/aula-perf}
OUT=${OUT:-$PERF_DIR/results/latency-$(date +%Y%m%d-%H%M%S)}; mkdir -p "$OUT"
GWURL=$("$HERE/pg.sh" url gw_latency)
psql -X -qAt "$("$HERE/pg.sh" url postgres)" -c "DROP DATABASE IF EXISTS gw_latency" -c "CREATE DATABASE gw_latency"
(cd "$GW_DIR" && node node_modules/graphile-worker/dist/cli.js --schema-only -c "$GWURL" >/dev/null 2>&1)
for r in $(seq 1 "$ROUNDS"); do
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  (cd "$GW_DIR" && DATABASE_URL=$GWURL SAMPLES=$SAMPLES node latency.js) >"$OUT/gw-$r.txt" 2>&1
  echo "round=$r system=gw load_before=\"$load\" $(grep -o 'min.*' "$OUT/gw-$r.txt")" | tee -a "$OUT/summary.txt"
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  (cd "$GW_DIR" && DATABASE_URL=$GWURL SAMPLES=$SAMPLES node latency_floor.js) >"$OUT/floor-$r.txt" 2>&1
  echo "round=$r system=floor load_before=\"$load\" | $(grep -o 'floor.*' "$OUT/floor-$r.txt" | tr -s ' ' | tr '\n' '|')" | tee -a "$OUT/summary.txt"
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  DATABASE_URL=$("$HERE/pg.sh" url postgres) RUST_LOG=warn "$AULA" bench latency --events "$SAMPLES" >"$OUT/aula-$r.txt" 2>&1
  echo "round=$r system=aula load_before=\"$load\" | $(grep -E 'event commit|task insert' "$OUT/aula-$r.txt" | tr -s ' ' | tr '\n' '|')" | tee -a "$OUT/summary.txt"
done
echo "results: $OUT"
