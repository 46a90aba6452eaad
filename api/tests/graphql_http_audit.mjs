// The graphql-http conformance audit (GraphQL over HTTP, issue #24) against a running
// server: `node api/tests/graphql_http_audit.mjs http://127.0.0.1:8080/graphql`.
// Runs every audit of `serverAudits` from the npm package `graphql-http` and prints one
// JSON array: [{ id, name, status, reason?, statusCode?, body? }]. `api/tests/
// graphql_http.rs` runs it and asserts that every MUST and SHOULD audit passes.
//
// The package is installed (pinned in .ci/package.json and .ci/package-lock.json) by
// `.ci/run`: `npm ci --prefix .ci`. AULA_NODE_MODULES_PREFIX may name another folder
// holding `node_modules/graphql-http`.

import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const url = process.argv[2];
if (!url) {
  console.error('usage: node graphql_http_audit.mjs <graphql url>');
  process.exit(2);
}

const prefix =
  process.env.AULA_NODE_MODULES_PREFIX ||
  path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../.ci');
let serverAudits;
try {
  ({ serverAudits } = createRequire(path.join(prefix, 'package.json'))('graphql-http'));
} catch (error) {
  console.error(
    `graphql-http is not installed under ${prefix}/node_modules: run \`npm ci --prefix .ci\` ` +
      `(as .ci/run does). ${error.message}`,
  );
  process.exit(3);
}

const results = [];
for (const audit of serverAudits({ url })) {
  let result;
  try {
    result = await audit.fn();
  } catch (error) {
    result = { id: audit.id, name: audit.name, status: 'error', reason: `threw: ${error}` };
  }
  const entry = { id: result.id, name: result.name, status: result.status };
  if (result.status !== 'ok') {
    entry.reason = result.reason;
    if (result.response) {
      entry.statusCode = result.response.status;
      entry.contentType = result.response.headers.get('content-type');
      try {
        entry.body = await result.response.text();
      } catch {
        // The audit may have read the body already.
      }
    }
  }
  results.push(entry);
}
console.log(JSON.stringify(results, null, 2));
