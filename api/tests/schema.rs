//! The committed `schema.graphql` must match the code. `AULA_BLESS=1` rewrites it.

use std::path::PathBuf;

#[test]
fn committed_schema_matches_the_code() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schema.graphql");
    let actual = aula_api::schema_sdl();
    if std::env::var("AULA_BLESS").as_deref() == Ok("1") {
        std::fs::write(&path, &actual).expect("writing schema.graphql");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == actual,
        "schema.graphql is out of date; run `AULA_BLESS=1 cargo test -p aula-api --test schema` and commit it"
    );
}
