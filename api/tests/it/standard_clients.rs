//! Standard GraphQL tooling against the running server (issue #24): graphql-core, the
//! reference implementation's Python port, sends its standard introspection query (9
//! `ofType` levels, as code generators, `gql` and GraphiQL's explorer do) and builds a
//! client schema from the answer. `.ci/run` installs graphql-core (`pip install
//! graphql-core`); without it the test fails, it never skips.

use crate::common;

use common::*;

const CLIENT: &str = r#"
import json, sys, urllib.request
from graphql import build_client_schema, get_introspection_query
query = get_introspection_query(descriptions=True)
request = urllib.request.Request(
    sys.argv[1],
    data=json.dumps({"query": query}).encode(),
    headers={"content-type": "application/json"},
)
with urllib.request.urlopen(request) as response:
    result = json.load(response)
if result.get("errors"):
    sys.exit("errors: " + json.dumps(result["errors"]))
schema = build_client_schema(result["data"])
print(len(schema.type_map), schema.query_type.name, schema.mutation_type.name)
"#;

#[tokio::test(flavor = "multi_thread")]
async fn graphql_core_introspects_the_schema_and_builds_a_client_schema() {
    let server = TestServer::start().await;
    let url = server.url("/graphql");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg("-c")
            .arg(CLIENT)
            .arg(url)
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "graphql-core failed (pip install graphql-core?): {stdout}{stderr}"
    );
    assert!(stdout.contains("QueryRoot MutationRoot"), "{stdout}");
    server.stop().await;
}
