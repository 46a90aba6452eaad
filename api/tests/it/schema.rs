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
        "schema.graphql is out of date; run `AULA_BLESS=1 cargo test -p aula-api --test it schema::` and commit it"
    );
}

/// Every type, field, argument, input field and enum value the schema declares carries
/// a description: GraphiQL's documentation explorer and code generators show them, and
/// a client should never have to read our source to learn what a field means.
#[test]
fn every_schema_element_is_described() {
    use async_graphql::parser::types::{TypeKind, TypeSystemDefinition};

    let sdl = aula_api::schema_sdl();
    let document = async_graphql::parser::parse_schema(&sdl).expect("the SDL parses");
    let mut missing = Vec::new();
    for definition in &document.definitions {
        let TypeSystemDefinition::Type(ty) = definition else {
            continue;
        };
        let ty = &ty.node;
        let name = ty.name.node.as_str();
        if ty.description.is_none() {
            missing.push(format!("type {name}"));
        }
        match &ty.kind {
            TypeKind::Object(object) => {
                for field in &object.fields {
                    let field = &field.node;
                    if field.description.is_none() {
                        missing.push(format!("field {name}.{}", field.name.node));
                    }
                    for argument in &field.arguments {
                        if argument.node.description.is_none() {
                            missing.push(format!(
                                "argument {name}.{}({})",
                                field.name.node, argument.node.name.node
                            ));
                        }
                    }
                }
            }
            TypeKind::InputObject(input) => {
                for field in &input.fields {
                    if field.node.description.is_none() {
                        missing.push(format!("input field {name}.{}", field.node.name.node));
                    }
                }
            }
            TypeKind::Enum(enumeration) => {
                for value in &enumeration.values {
                    if value.node.description.is_none() {
                        missing.push(format!("enum value {name}.{}", value.node.value.node));
                    }
                }
            }
            _ => {}
        }
    }
    assert!(
        missing.is_empty(),
        "{} schema elements have no description (add a doc comment):\n{}",
        missing.len(),
        missing.join("\n")
    );
}
