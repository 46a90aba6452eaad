#!/usr/bin/env bash
# Append path side by side on ONE cluster (./pg.sh), interleaved rounds:
#   pgbench   peers/pgbench insert1 and select_insert (same SQL, seed and schema as
#             peers/pgbench.sh), -M prepared, CLIENTS 1 8 32, -T DURATION, over the Unix socket
#   aula      `aula bench append --seconds DURATION` (bare INSERT + full command path, 1/8/32)
# Env: ROUNDS (3), DURATION (10 s per measurement), AULA, REPO, PERF_DIR, OUT.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd); PEERS=$HERE
ROUNDS=${ROUNDS:-3}; SECONDS_=${DURATION:-10}; CLIENTS=${CLIENTS:-"1 8 32"}
REPO=${REPO:-$(cd "$HERE/../.." && pwd)}; AULA=${AULA:-${CARGO_TARGET_DIR:-$REPO/target}/release/aula}
export PERF_DIR=${PERF_DIR:-${TMPDIR:-/tmp}/aula-perf}
OUT=${OUT:-$PERF_DIR/results/append-$(date +%Y%m%d-%H%M%S)}; mkdir -p "$OUT"
eval "$(python3 - "$("$HERE/pg.sh" url postgres)" <<'PY'
import sys, urllib.parse as u
p = u.urlparse(sys.argv[1]); q = dict(u.parse_qsl(p.query))
print(f"export PGHOST={q['host']} PGPORT={q['port']} PGUSER={p.username}")
PY
)"
DB=peer_pgbench
psql -X -qAt -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
psql -X -qAt -d "$DB" -v ON_ERROR_STOP=1 -f "$PEERS/pgbench/schema.sql"
run_pgbench() { # round
  for s in insert1 select_insert; do for c in $CLIENTS; do
    psql -X -qAt -d "$DB" -v ON_ERROR_STOP=1 -v naggs=10240 -v nevents=10 -f "$PEERS/pgbench/seed.sql" >/dev/null
    j=2; [ "$j" -gt "$c" ] && j=$c
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    pgbench -n -M prepared -T "$SECONDS_" -c "$c" -j "$j" -D naggs=10240 -D nclients="$c" \
      -f "$PEERS/pgbench/$s.sql" "$DB" >"$OUT/pgbench-$1-$s-c$c.txt" 2>&1
    tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$OUT/pgbench-$1-$s-c$c.txt")
    echo "round=$1 system=pgbench_$s clients=$c tps=$tps load_before=\"$load\"" | tee -a "$OUT/summary.txt"
  done; done
}
run_aula() {
  # pgbench's seed ends with a CHECKPOINT, so its first writes pay full-page images:
  # start Aula's run after one too (its database is created right after it, so its
  # first writes pay them as well).
  psql -X -qAt -d postgres -c CHECKPOINT
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  DATABASE_URL=$("$HERE/pg.sh" url postgres) RUST_LOG=warn "$AULA" bench append --seconds "$SECONDS_" >"$OUT/aula-$1.txt" 2>&1
  awk -v r="$1" -v l="$load" '$1 ~ /^[0-9]+$/ {printf "round=%s system=aula_bare_insert clients=%s tps=%s load_before=\"%s\"\nround=%s system=aula_command_path clients=%s tps=%s\n", r, $1, $2, l, r, $1, $3}' "$OUT/aula-$1.txt" | tee -a "$OUT/summary.txt"
}
for r in $(seq 1 "$ROUNDS"); do run_pgbench "$r"; run_aula "$r"; done
echo "results: $OUT"
