#!/usr/bin/env bash
# The database's floor for a drain that keeps history (issue #20): the cost per task of queue
# designs written as bare SQL and driven by pgbench (no application between the statements)
# on ONE cluster (./pg.sh), interleaved rounds, same tasks and workers shape (CLIENTS
# connections, claims of 24). Adapted from the research prototype of issue #20 to today's
# schema (`task_history`, migration 0046):
#   gw  graphile-worker-like: claim = UPDATE locked_at on the queue row; completion = DELETE
#   p1  narrow queue + history: claim as gw; completion = DELETE + INSERT the finished task into
#       Aula's `task_history` (its 13 indexes, list indexes included) + INSERT its attempt + counters
#   p2  p1 + the event's admin_events row finished in the same statement (Aula's 19 indexes,
#       ADMIN_ROWS rows in the table)
# Prints tasks/s, server CPU per task, WAL per task. The queue rows are pre-loaded (not timed).
# Env: N (200000), ROUNDS (3), CLIENTS (8), VARIANTS ("gw p1 p2"), SRCDB (a database whose
#      admin_events rows are copied in once, e.g. the floor database; else N synthetic rows),
#      AULA, REPO, PERF_DIR, OUT.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd); P=$HERE/floor
N=${N:-200000}; ROUNDS=${ROUNDS:-3}; CLIENTS=${CLIENTS:-8}; VARIANTS=${VARIANTS:-"gw p1 p2"}
REPO=${REPO:-$(cd "$HERE/../.." && pwd)}; AULA=${AULA:-${CARGO_TARGET_DIR:-$REPO/target}/release/aula}
export PERF_DIR=${PERF_DIR:-${TMPDIR:-/tmp}/aula-perf}
OUT=${OUT:-$PERF_DIR/results/floor-$(date +%Y%m%d-%H%M%S)}; mkdir -p "$OUT"
ADMIN=$("$HERE/pg.sh" url postgres); DBURL=$("$HERE/pg.sh" url proto); PGDATA=$PERF_DIR/pg
q() { psql -X -qAt -v ON_ERROR_STOP=1 "$DBURL" "$@"; }
if [ "${REUSE:-0}" != 1 ]; then
  psql -X -qAt "$ADMIN" -c "DROP DATABASE IF EXISTS proto" -c "CREATE DATABASE proto"
  DATABASE_URL=$DBURL RUST_LOG=error "$AULA" migrate >/dev/null
  if [ -n "${SRCDB:-}" ]; then
    psql -X -qAt "$("$HERE/pg.sh" url "$SRCDB")" -c "\\copy admin_events to '$OUT/admin.bin' with (format binary)"
    q -c "\\copy admin_events from '$OUT/admin.bin' with (format binary)"; rm -f "$OUT/admin.bin"
  else
    q -c "INSERT INTO admin_events (event_id, global_position, event_type, aggregate_type, aggregate_id, sequence, recorded_at, tx_id)
          SELECT gen_random_uuid(), g, 'BenchTaskIssued', 'BenchTask', 'bench-' || g, 0, now(), g FROM generate_series(1, $N) g"
  fi
  q -f "$P/schema.sql"
fi
server_cpu() {
  python3 - "$(head -1 "$PGDATA/postmaster.pid")" <<'PY'
import os, sys
pm = sys.argv[1]; hz = os.sysconf('SC_CLK_TCK'); tot = 0
def f(p):
    s = open(f'/proc/{p}/stat').read(); return s[s.rfind(')')+2:].split()
tot += sum(int(v) for v in f(pm)[11:15])
for d in os.listdir('/proc'):
    if d.isdigit():
        try:
            y = f(d)
            if y[1] == pm: tot += int(y[11]) + int(y[12])
        except Exception: pass
print(tot / hz)
PY
}
echo "# $(date -Is) N=$N CLIENTS=$CLIENTS admin_events rows: $(q -c 'select count(*) from admin_events')" | tee -a "$OUT/summary.txt"
for r in $(seq 1 "$ROUNDS"); do
  for v in $VARIANTS; do
    ev=1; [ "$v" = gw ] && ev=0
    q -v n="$N" -v events="$ev" -f "$P/seed.sql" >/dev/null
    t=$(( N / (24 * CLIENTS) + 5 ))
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    w0=$(q -c "select pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')"); c0=$(server_cpu); t0=$(date +%s.%N)
    /usr/bin/time -f "%U %S" -o "$OUT/$v-$r.time" pgbench -n -M prepared -c "$CLIENTS" -j 2 -t "$t" -f "$P/$v.sql" "$DBURL" >"$OUT/$v-$r.txt" 2>&1 \
      || { cat "$OUT/$v-$r.txt"; exit 1; }
    t1=$(date +%s.%N); c1=$(server_cpu); w1=$(q -c "select pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')")
    left=$(q -c "select count(*) from q"); [ "$v" = gw ] && left=$(q -c "select count(*) from q where locked_at is null")
    python3 - "$v" "$r" "$N" "$left" "$t0" "$t1" "$c0" "$c1" "$w0" "$w1" "$(cat "$OUT/$v-$r.time")" "$load" <<'PY' | tee -a "$OUT/summary.txt"
import sys
v, r, n, left, t0, t1, c0, c1, w0, w1, tm, load = sys.argv[1:13]
done = int(n) - int(left); wall = float(t1) - float(t0); sc = float(c1) - float(c0); cc = sum(map(float, tm.split()[:2]))
print(f"round={r} variant={v} tasks={done} wall_s={wall:.2f} rate={done/wall:.0f} server_cpu_us_per_task={sc*1e6/done:.0f} pgbench_cpu_us_per_task={cc*1e6/done:.0f} wal_bytes_per_task={(float(w1)-float(w0))/done:.0f} load_before=\"{load}\"")
PY
  done
done
echo "results: $OUT"
