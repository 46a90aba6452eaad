#!/usr/bin/env bash
# Task-queue drain, side by side on ONE PostgreSQL cluster (./pg.sh), interleaved rounds:
#   gw      graphile-worker 0.17.3: N no-op jobs added with one add_jobs() call, then 4
#           `graphile-worker --once` processes x 24 (peers/graphile-worker/graphile.config.js);
#           drain = wall of the 4 processes - wall of one --once on the empty queue (as drain.sh)
#   aula    `aula bench tasks --tasks N` (4 processes x 24, history kept)
#   events  `aula bench tasks --tasks N --issued-by-events` (production path)
# For each run: drain time, rate, server CPU (postmaster + reaped + live children), worker CPU,
# WAL bytes (pg_current_wal_lsn at drain start/end), peak RSS per worker process, load average.
# Env: WAITS (1: sample wait events), PSS_RESET_AT_OPEN (1: reset pg_stat_statements at drain start),
#      N (200000), ROUNDS (3), SYSTEMS ("gw aula events"), AULA (aula binary; default
#      target/release/aula under REPO), REPO (the Aula checkout, default .), PERF_DIR (as pg.sh),
#      GW_DIR (peers/graphile-worker with node_modules; default ../peers/graphile-worker), OUT.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
N=${N:-200000}; ROUNDS=${ROUNDS:-3}; SYSTEMS=${SYSTEMS:-"gw aula events"}
REPO=${REPO:-$(cd "$HERE/../.." && pwd)}; AULA=${AULA:-${CARGO_TARGET_DIR:-$REPO/target}/release/aula}
GW_DIR=${GW_DIR:-$HERE/graphile-worker}
export PERF_DIR=${PERF_DIR:-${TMPDIR:-/tmp}/aula-perf}
OUT=${OUT:-$PERF_DIR/results/drain-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
export NODE_PATH=$GW_DIR/node_modules
PGURL=$("$HERE/pg.sh" url postgres)
PGDATA=$PERF_DIR/pg
psqlq() { psql -X -qAt -v ON_ERROR_STOP=1 "$@"; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
# CPU seconds of the whole server: postmaster (+ its reaped children) + live children.
server_cpu() {
  local pm; pm=$(head -1 "$PGDATA/postmaster.pid")
  python3 - "$pm" <<'PY'
import os, sys
pm = sys.argv[1]; hz = os.sysconf('SC_CLK_TCK'); tot = 0
def f(p):
    s = open(f'/proc/{p}/stat').read(); return s[s.rfind(')')+2:].split()
x = f(pm); tot += sum(int(v) for v in x[11:15])
for d in os.listdir('/proc'):
    if not d.isdigit(): continue
    try:
        y = f(d)
        if y[1] == pm: tot += int(y[11]) + int(y[12])
    except Exception: pass
print(tot / hz)
PY
}
# drain window from the poller's samples: the first sample with open > 0 (completions may
# already have started: WAL per task = WAL delta / open tasks at that sample), the first
# later sample with open == 0.
analyse() { # file N
  python3 - "$1" "$2" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith('{')]
s = e = None
for i, r in enumerate(rows):
    if s is None and (r['open'] or 0) > 0: s = i
    elif s is not None and r['open'] == 0: e = i; break
hwm = {}
for r in rows:
    for pid, (rss, h) in r['p'].items(): hwm[pid] = max(hwm.get(pid, 0), h)
peak = max(hwm.values()) / 1024 if hwm else 0
tot = sum(hwm.values()) / 1024 if hwm else 0
if s is None or e is None: print(f"wal_bytes=NA wal_tasks=NA poll_drain_s=NA rss_peak_mb={peak:.1f} rss_sum_mb={tot:.1f} nproc={len(hwm)}")
else:
    print(f"wal_start={rows[s]['wal']} wal_end={rows[e]['wal']} wal_bytes={rows[e]['wal']-rows[s]['wal']} wal_tasks={rows[s]['open']} poll_drain_s={(rows[e]['t']-rows[s]['t'])/1000:.2f} rss_peak_mb={peak:.1f} rss_sum_mb={tot:.1f} nproc={len(hwm)}")
PY
}
peak_rss() { # file: peak VmHWM over the processes
  python3 - "$1" <<'PY'
import json, sys
hwm = {}
for l in open(sys.argv[1]):
    if not l.startswith('{'): continue
    for pid, (rss, h) in json.loads(l)['p'].items(): hwm[pid] = max(hwm.get(pid, 0), h)
print(f"rss_peak_mb={max(hwm.values())/1024 if hwm else 0:.1f} rss_sum_mb={sum(hwm.values())/1024:.1f} nproc={len(hwm)}")
PY
}

run_gw() { # round
  local db=gw_perf url log=$OUT/gw-$1.log cli="node $GW_DIR/node_modules/graphile-worker/dist/cli.js"
  url=$("$HERE/pg.sh" url $db)
  psqlq "$PGURL" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
  ( cd "$GW_DIR" && export DATABASE_URL=$url NO_LOG_SUCCESS=1
    $cli --schema-only -c "$url" >>"$log" 2>&1
    t0=$(now_ms); $cli --once >>"$log" 2>&1; t1=$(now_ms); echo "startup_ms=$((t1-t0))" >"$OUT/gw-$1.kv"
    psqlq "$url" -c "select count(*) from graphile_worker.add_jobs(array(
        select json_populate_record(null::graphile_worker.job_spec,
                 json_build_object('identifier', 'noop', 'payload', json_build_object('id', i)))
        from generate_series(1, $N) i))" >/dev/null
    psqlq "$url" -c checkpoint
    RSS_MATCH='graphile-worker/dist/cli.js' PGURL=$PGURL INTERVAL_MS=100 node "$HERE/poll.js" >"$OUT/gw-$1.poll" & poller=$!
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    w0=$(psqlq "$url" -c "select pg_wal_lsn_diff(pg_current_wal_lsn(),'0/0')"); c0=$(server_cpu)
    pids=(); t0=$(now_ms)
    for p in 1 2 3 4; do /usr/bin/time -f "%U %S %M" -o "$OUT/gw-$1-time-$p" $cli --once >>"$log" 2>&1 & pids+=($!); done
    for pid in "${pids[@]}"; do wait "$pid"; done
    t1=$(now_ms); c1=$(server_cpu)
    w1=$(psqlq "$url" -c "select pg_wal_lsn_diff(pg_current_wal_lsn(),'0/0')")
    left=$(psqlq "$url" -c "select count(*) from graphile_worker._private_jobs")
    kill $poller; wait $poller || true
    wcpu=$(cat "$OUT"/gw-$1-time-* | awk '{s+=$1+$2} END{print s}')
    wrss=$(cat "$OUT"/gw-$1-time-* | awk '{if($3>m)m=$3} END{printf "%.1f", m/1024}')
    echo "wall_ms=$((t1-t0)) server_cpu=$(echo "$c1 - $c0" | bc) worker_cpu=$wcpu wal_bytes=$(echo "$w1 - $w0" | bc) wal_start=$w0 wal_end=$w1 left=$left load_before=\"$load\" load_after=\"$(cut -d' ' -f1-3 /proc/loadavg)\" time_maxrss_mb=$wrss $(peak_rss "$OUT/gw-$1.poll")" >>"$OUT/gw-$1.kv"
  )
  local kv; kv=$(tr '\n' ' ' <"$OUT/gw-$1.kv")
  eval "$kv"
  local drain=$(( wall_ms - startup_ms ))
  python3 -c "
n=$N; d=$drain/1000; sc=$server_cpu; wc=$worker_cpu
print(f'round=$1 system=gw n={n} wal_start=$wal_start wal_end=$wal_end drain_s={d:.2f} rate={n/d:.0f} server_cpu_s={sc:.1f} worker_cpu_s={wc:.1f} cpu_us_per_task={(sc+wc)*1e6/n:.0f} wal_bytes_per_task={$wal_bytes/n:.0f} rss_peak_mb=$rss_peak_mb load_before=$load_before load_after=$load_after left=$left startup_ms=$startup_ms')" | tee -a "$OUT/summary.txt"
}

run_aula() { # round system
  local flag="" log=$OUT/$2-$1.log
  [ "$2" = events ] && flag=--issued-by-events
  WAITS=${WAITS:-0} SIZES_FILE=$OUT/$2-$1.sizes RELMAP_FILE=$OUT/$2-$1.relmap RSS_MATCH='bench task-worker' PGURL=$PGURL INTERVAL_MS=50 node "$HERE/poll.js" >"$OUT/$2-$1.poll" & local poller=$!
  local load; load=$(cut -d' ' -f1-3 /proc/loadavg)
  local c0; c0=$(server_cpu)
  DATABASE_URL=$PGURL RUST_LOG=warn "$AULA" bench tasks --tasks "$N" $flag >"$log" 2>&1 || { cat "$log"; kill $poller; return 1; }
  kill $poller; wait $poller || true
  local a; a=$(analyse "$OUT/$2-$1.poll" "$N")
  python3 - "$log" "$1" "$2" "$N" "$load" "$a" <<'PY' | tee -a "$OUT/summary.txt"
import re, sys
t = open(sys.argv[1]).read(); n = int(sys.argv[4])
d = float(re.search(r'drain:\s+([\d.]+) s', t).group(1))
m = re.search(r'CPU during the drain:\s+([\d.]+) s workers \+ ([\d.]+) s database = (\d+) us', t)
la = re.search(r'load average before / after: (.*) / (.*)', t)
kv = dict(x.split('=') for x in sys.argv[6].split())
wb = kv['wal_bytes']; wpt = f"{int(wb)/int(kv['wal_tasks']):.0f}" if wb != 'NA' else 'NA'
print(f"round={sys.argv[2]} system={sys.argv[3]} n={n} wal_start={kv.get('wal_start','NA')} wal_end={kv.get('wal_end','NA')} drain_s={d:.2f} rate={n/d:.0f} server_cpu_s={m.group(2)} worker_cpu_s={m.group(1)} cpu_us_per_task={m.group(3)} wal_bytes_per_task={wpt} rss_peak_mb={kv['rss_peak_mb']} load_before=\"{la.group(1)}\" load_after=\"{la.group(2)}\" poll_drain_s={kv['poll_drain_s']}")
PY
}

echo "# $(date -Is) N=$N ROUNDS=$ROUNDS SYSTEMS=$SYSTEMS $(nproc) CPUs; server $(psqlq "$PGURL" -c 'show server_version')" | tee "$OUT/summary.txt"
for r in $(seq 1 "$ROUNDS"); do
  for s in $SYSTEMS; do
    case $s in gw) run_gw "$r" ;; aula|events) run_aula "$r" "$s" ;; esac
  done
done
echo "results: $OUT"
