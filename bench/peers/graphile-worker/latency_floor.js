// The database's floor for pick-up latency (issue #20), measured like latency.js (same
// runtime, client clock, SAMPLES sequential samples, each awaited until its task starts):
//   one-hop  the writer inserts a task and notifies in one statement; a worker that LISTENs
//            claims it (UPDATE ... FOR UPDATE SKIP LOCKED) - graphile-worker's shape, bare
//   two-hop  the writer inserts an *event* and notifies; a reactor that LISTENs reads the
//            events after its last one and inserts their tasks, notifying, in ONE statement
//            (asynchronous commit, as Aula's reactions); the worker claims as above
// Each hop is the least a design of that shape can do: one statement and its commit, one
// notification, one claim. Aula issues tasks by reacting to committed events (two hops), so
// its event -> task start cannot beat the two-hop floor, and the peer's add -> start is a
// one-hop design. Tables of its own (fl_*), dropped first. Usage: DATABASE_URL=... node
// latency_floor.js. Env: SAMPLES (1000), WARMUP (100).
const { Client } = require("pg");

const SAMPLES = parseInt(process.env.SAMPLES || "1000", 10);
const WARMUP = parseInt(process.env.WARMUP || "100", 10);
const url = process.env.DATABASE_URL;

async function connect(settings) {
  const client = new Client({ connectionString: url });
  await client.connect();
  for (const s of settings || []) await client.query(s);
  return client;
}

async function main() {
  const admin = await connect();
  await admin.query(`
    DROP TABLE IF EXISTS fl_tasks, fl_events;
    CREATE TABLE fl_events (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                            recorded_at timestamptz NOT NULL DEFAULT now(), payload jsonb NOT NULL);
    CREATE TABLE fl_tasks (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, event_id bigint,
                           sample int NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),
                           started_at timestamptz);
    CREATE INDEX ON fl_tasks (id) WHERE started_at IS NULL;`);

  const started = new Map(); // sample -> resolve
  const worker = await connect(["SET synchronous_commit = off", "LISTEN fl_tasks"]);
  let claiming = Promise.resolve();
  worker.on("notification", () => {
    claiming = claiming.then(async () => {
      for (;;) {
        const { rows } = await worker.query(
          `UPDATE fl_tasks SET started_at = now()
            WHERE id = (SELECT id FROM fl_tasks WHERE started_at IS NULL ORDER BY id
                        LIMIT 1 FOR UPDATE SKIP LOCKED)
            RETURNING sample`,
        );
        if (rows.length === 0) return;
        const resolve = started.get(rows[0].sample);
        if (resolve) resolve(process.hrtime.bigint());
      }
    });
  });

  const reactor = await connect(["SET synchronous_commit = off", "LISTEN fl_events"]);
  let reacting = Promise.resolve();
  let last = 0;
  reactor.on("notification", () => {
    reacting = reacting.then(async () => {
      const { rows } = await reactor.query(
        `WITH t AS (INSERT INTO fl_tasks (event_id, sample)
                    SELECT id, (payload->>'sample')::int FROM fl_events WHERE id > $1 ORDER BY id
                    RETURNING event_id)
         SELECT max(event_id) AS last, pg_notify('fl_tasks', '') FROM t`,
        [last],
      );
      if (rows[0] && rows[0].last !== null) last = Number(rows[0].last);
    });
  });

  const writer = await connect();
  async function measure(label, insert, samples) {
    const latencies = [];
    for (let sample = 0; sample < samples; sample++) {
      const taskStarted = new Promise((resolve) => started.set(sample, resolve));
      const sent = process.hrtime.bigint();
      await writer.query(insert, [sample]);
      const at = await taskStarted;
      started.delete(sample);
      latencies.push(Number(at - sent) / 1e6);
    }
    return { label, latencies };
  }
  const oneHop = `WITH t AS (INSERT INTO fl_tasks (sample) VALUES ($1) RETURNING id)
                  SELECT pg_notify('fl_tasks', '') FROM t`;
  const twoHop = `WITH e AS (INSERT INTO fl_events (payload) VALUES (json_build_object('sample', $1::int)) RETURNING id)
                  SELECT pg_notify('fl_events', '') FROM e`;
  await measure("warm-up", oneHop, WARMUP);
  await admin.query("DELETE FROM fl_tasks");
  await measure("warm-up", twoHop, WARMUP);
  await admin.query("DELETE FROM fl_tasks");
  await new Promise((r) => setTimeout(r, 1000));
  const results = [await measure("one-hop (insert task -> start)", oneHop, SAMPLES)];
  results.push(await measure("two-hop (insert event -> task start)", twoHop, SAMPLES));

  const f = (x) => x.toFixed(2);
  for (const { label, latencies } of results) {
    const s = [...latencies].sort((a, b) => a - b);
    const pct = (p) => s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
    console.log(
      `floor ${label}: latency ms over ${SAMPLES} samples: min ${f(s[0])}  median ${f(pct(50))}  ` +
        `p90 ${f(pct(90))}  p99 ${f(pct(99))}  max ${f(s[s.length - 1])}`,
    );
  }
  // Stop listening and let the last claim and reaction finish before the tables go.
  await worker.query("UNLISTEN *");
  await reactor.query("UNLISTEN *");
  await claiming;
  await reacting;
  for (const c of [worker, reactor, writer]) await c.end();
  await admin.query("DROP TABLE fl_tasks, fl_events");
  await admin.end();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
