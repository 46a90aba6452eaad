#!/usr/bin/env bash
# What a longer drain pays: WAL records, full-page images, bytes and checkpoints
# (pg_stat_wal, pg_stat_bgwriter) around `aula bench tasks --issued-by-events` at each N,
# on the ./pg.sh cluster. Start the cluster with PGOPTS="-c max_wal_size=20GB" to keep
# checkpoints out of the runs (BENCHMARKS.md, session 19).
# Env: SIZES ("100000 1000000"), AULA (default target/release/aula), PERF_DIR/PGPORT (as pg.sh).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
AULA=${AULA:-${CARGO_TARGET_DIR:-$REPO/target}/release/aula}
SIZES=${SIZES:-"100000 1000000"}
URL=$("$HERE/pg.sh" url postgres)
snap() {
  psql -X -qAt -F' ' "$URL" -c "SELECT w.wal_records, w.wal_fpi, w.wal_bytes,
      b.checkpoints_timed + b.checkpoints_req FROM pg_stat_wal w, pg_stat_bgwriter b"
}
echo "# $(date -u +%FT%TZ) max_wal_size=$(psql -X -qAt "$URL" -c 'SHOW max_wal_size') load $(cut -d' ' -f1-3 /proc/loadavg)"
for n in $SIZES; do
  read -r r0 f0 b0 c0 < <(snap)
  out=$(DATABASE_URL=$URL RUST_LOG=error "$AULA" bench tasks --tasks "$n" --issued-by-events 2>&1)
  read -r r1 f1 b1 c1 < <(snap)
  echo "n=$n wal_records=$((r1 - r0)) full_page_images=$((f1 - f0)) wal_bytes=$((b1 - b0)) checkpoints=$((c1 - c0))"
  grep -E "throughput|WAL:|CPU during" <<<"$out" | sed 's/^ */  /'
done
