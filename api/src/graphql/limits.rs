//! Limits on the whole GraphQL document, checked before anything parses it.
//!
//! async-graphql's parser recurses on nested values and selections, so a 4 KB document
//! of 2,000 nested `[` aborted the process with a stack overflow, and the schema's own
//! depth limit only runs after parsing, on selection sets. [`scan`] is a flat
//! (non-recursive, linear) pass over the tokens that bounds nesting of every kind
//! (`{`, `[`, `(`), the token count, aliases and directives, and refuses NUL characters
//! (PostgreSQL text cannot hold them). Only a document that passes is handed to the
//! parser. After parsing, [`count_selections`] bounds the number of fields the
//! operation selects with every fragment expanded, `__typename` and introspection
//! fields included (async-graphql's complexity counts neither).
//!
//! `DocumentGuard` runs both as the schema's first extension, so HTTP and WebSocket
//! operations pass the same checks.

use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{ServerResult, Value, Variables};

use crate::error::ApiError;

/// Bounds of an untrusted document.
#[derive(Debug, Clone, Copy)]
pub struct DocumentLimits {
    /// Deepest nesting of `{`, `[` and `(` together (selections, lists, objects,
    /// arguments).
    pub max_nesting: usize,
    /// Most lexical tokens (names, punctuators, numbers, strings).
    pub max_tokens: usize,
    pub max_aliases: usize,
    pub max_directives: usize,
    /// Most fields and fragment spreads selected, fragments expanded.
    pub max_selections: usize,
}

impl Default for DocumentLimits {
    fn default() -> Self {
        Self {
            max_nesting: 48,
            max_tokens: 8_000,
            max_aliases: 100,
            max_directives: 50,
            max_selections: 1_000,
        }
    }
}

/// Why a document was refused: the `reason` code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub reason: &'static str,
    pub message: String,
}

impl Violation {
    fn new(reason: &'static str, message: String) -> Self {
        Self { reason, message }
    }
}

impl From<Violation> for ApiError {
    fn from(violation: Violation) -> Self {
        ApiError::validation("query", violation.reason, violation.message)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    /// `{` of a selection set.
    Selection,
    /// `{` of an object value.
    Object,
    /// `[` of a list value or list type.
    List,
    /// `(` of arguments or variable definitions.
    Arguments,
}

/// One linear pass over `query`'s tokens, with no recursion: nesting, token, alias and
/// directive counts, and NUL characters. Lexical errors are left to the parser (the
/// scan only has to stay linear on any input, valid or not).
pub fn scan(query: &str, limits: &DocumentLimits) -> Result<(), Violation> {
    let bytes = query.as_bytes();
    let mut stack: Vec<Open> = Vec::new();
    let (mut tokens, mut aliases, mut directives) = (0usize, 0usize, 0usize);
    // The previous token was a name inside a selection set: a `:` now makes it an alias.
    let mut name_in_selection = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            // Ignored tokens: white space, line terminators, commas, the BOM's bytes
            // are non-ASCII and fall into "other" below.
            b' ' | b'\t' | b'\n' | b'\r' | b',' => {
                i += 1;
                continue;
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
                continue;
            }
            0 => {
                return Err(Violation::new(
                    "NUL_CHARACTER",
                    "the document contains a NUL character".into(),
                ))
            }
            _ => {}
        }
        tokens += 1;
        if tokens > limits.max_tokens {
            return Err(Violation::new(
                "TOO_MANY_TOKENS",
                format!("the document has more than {} tokens", limits.max_tokens),
            ));
        }
        let was_name_in_selection = std::mem::take(&mut name_in_selection);
        match b {
            b'{' | b'[' | b'(' => {
                let open = match b {
                    b'[' => Open::List,
                    b'(' => Open::Arguments,
                    // A brace directly in a selection set, or at the top level, opens a
                    // selection set; anywhere inside a value it opens an object.
                    _ => match stack.last() {
                        None | Some(Open::Selection) => Open::Selection,
                        Some(_) => Open::Object,
                    },
                };
                stack.push(open);
                if stack.len() > limits.max_nesting {
                    return Err(Violation::new(
                        "TOO_DEEP",
                        format!(
                            "the document nests more than {} levels of braces, brackets and parentheses",
                            limits.max_nesting
                        ),
                    ));
                }
                i += 1;
            }
            b'}' | b']' | b')' => {
                // Unbalanced input is the parser's to report.
                stack.pop();
                i += 1;
            }
            b':' => {
                if was_name_in_selection {
                    aliases += 1;
                    if aliases > limits.max_aliases {
                        return Err(Violation::new(
                            "TOO_MANY_ALIASES",
                            format!("the document has more than {} aliases", limits.max_aliases),
                        ));
                    }
                }
                i += 1;
            }
            b'@' => {
                directives += 1;
                if directives > limits.max_directives {
                    return Err(Violation::new(
                        "TOO_MANY_DIRECTIVES",
                        format!(
                            "the document has more than {} directives",
                            limits.max_directives
                        ),
                    ));
                }
                i += 1;
            }
            b'"' => {
                i = skip_string(bytes, i)?;
            }
            b'_' | b'a'..=b'z' | b'A'..=b'Z' => {
                while i < bytes.len() && (bytes[i] == b'_' || bytes[i].is_ascii_alphanumeric()) {
                    i += 1;
                }
                name_in_selection = stack.last() == Some(&Open::Selection);
            }
            b'-' | b'0'..=b'9' => {
                i += 1;
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric()
                        || bytes[i] == b'.'
                        || bytes[i] == b'+'
                        || bytes[i] == b'-')
                {
                    i += 1;
                }
            }
            b'.' => {
                // `...` is one token; a lone dot is the parser's to refuse.
                i += if bytes[i..].starts_with(b"...") { 3 } else { 1 };
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// Returns the index after the string that opens at `start` (a `"`), refusing NUL
/// characters, `\u0000` escapes and strings that do not end.
///
/// An unterminated string is refused rather than guessed at: the parser's grammar
/// falls back on an unclosed `"""` to reading `""` as an empty string and goes on
/// parsing what this scan took for string content, so accepting it would let nesting
/// the scan never counted reach the recursive parser.
fn skip_string(bytes: &[u8], start: usize) -> Result<usize, Violation> {
    let nul = || {
        Violation::new(
            "NUL_CHARACTER",
            "the document contains a NUL character".into(),
        )
    };
    let unterminated = || {
        Violation::new(
            "UNTERMINATED_STRING",
            "the document has a string that does not end".into(),
        )
    };
    if bytes[start..].starts_with(b"\"\"\"") {
        // Block string: only `\"""` is an escape.
        let mut i = start + 3;
        while i < bytes.len() {
            if bytes[i] == 0 {
                return Err(nul());
            }
            if bytes[i..].starts_with(b"\\\"\"\"") {
                i += 4;
            } else if bytes[i..].starts_with(b"\"\"\"") {
                return Ok(i + 3);
            } else {
                i += 1;
            }
        }
        return Err(unterminated());
    }
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            0 => return Err(nul()),
            b'"' => return Ok(i + 1),
            // A string never spans lines.
            b'\n' | b'\r' => return Err(unterminated()),
            b'\\' => {
                if is_nul_escape(&bytes[i + 1..]) {
                    return Err(nul());
                }
                i += 2;
            }
            _ => i += 1,
        }
    }
    Err(unterminated())
}

/// `u0000`, `u{0}`, `u{000}`... after a backslash.
fn is_nul_escape(rest: &[u8]) -> bool {
    if rest.starts_with(b"u0000") {
        return true;
    }
    if let Some(braced) = rest.strip_prefix(b"u{") {
        let digits = braced.iter().take_while(|b| **b == b'0').count();
        return digits > 0 && braced.get(digits) == Some(&b'}');
    }
    false
}

/// Fields and fragment spreads the document selects, every fragment expanded each time
/// it is spread; stops counting past `max` (a cyclic fragment, which validation refuses
/// later, then simply exceeds it). Iterative: no recursion on the document's shape.
pub fn count_selections(document: &ExecutableDocument, max: usize) -> Result<usize, Violation> {
    let mut pending: Vec<&SelectionSet> = document
        .operations
        .iter()
        .map(|(_, operation)| &operation.node.selection_set.node)
        .collect();
    let mut count = 0usize;
    let too_many = || {
        Violation::new(
            "TOO_COMPLEX",
            format!("the operation selects more than {max} fields (fragments expanded, __typename and introspection included)"),
        )
    };
    while let Some(set) = pending.pop() {
        for selection in &set.items {
            match &selection.node {
                Selection::Field(field) => {
                    count += 1;
                    pending.push(&field.node.selection_set.node);
                }
                Selection::FragmentSpread(spread) => {
                    count += 1;
                    if let Some(fragment) = document.fragments.get(&spread.node.fragment_name.node)
                    {
                        pending.push(&fragment.node.selection_set.node);
                    }
                }
                Selection::InlineFragment(inline) => {
                    pending.push(&inline.node.selection_set.node);
                }
            }
            if count > max {
                return Err(too_many());
            }
        }
    }
    Ok(count)
}

/// Refuses variables that hold a NUL character in any string (as values or keys):
/// PostgreSQL text cannot store it, so it would come back as an internal error.
/// Iterative, like the rest of this module.
pub fn check_variables(variables: &Variables) -> Result<(), Violation> {
    let mut pending: Vec<&Value> = variables.values().collect();
    let nul = || {
        Violation::new(
            "NUL_CHARACTER",
            "a variable contains a NUL character".into(),
        )
    };
    if variables.keys().any(|key| key.contains('\0')) {
        return Err(nul());
    }
    while let Some(value) = pending.pop() {
        match value {
            Value::String(text) if text.contains('\0') => return Err(nul()),
            Value::List(items) => pending.extend(items.iter()),
            Value::Object(fields) => {
                if fields.keys().any(|key| key.contains('\0')) {
                    return Err(nul());
                }
                pending.extend(fields.values());
            }
            _ => {}
        }
    }
    Ok(())
}

/// The schema extension that applies [`DocumentLimits`] to every operation.
pub(crate) struct DocumentGuard(pub DocumentLimits);

impl ExtensionFactory for DocumentGuard {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(GuardExtension(self.0))
    }
}

struct GuardExtension(DocumentLimits);

#[async_trait::async_trait]
impl Extension for GuardExtension {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let refuse = |violation: Violation| {
            crate::metrics::record_refused(crate::error::VALIDATION);
            ApiError::from(violation).into_server_error()
        };
        scan(query, &self.0).map_err(refuse)?;
        check_variables(variables).map_err(refuse)?;
        let document = next.run(ctx, query, variables).await?;
        count_selections(&document, self.0.max_selections).map_err(refuse)?;
        Ok(document)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> DocumentLimits {
        DocumentLimits::default()
    }

    #[test]
    fn deep_values_are_refused_before_parsing() {
        let deep = format!(
            "{{health(x:{}1{}){{status}}}}",
            "[".repeat(2000),
            "]".repeat(2000)
        );
        assert_eq!(scan(&deep, &limits()).unwrap_err().reason, "TOO_DEEP");
        let objects = format!("{{health(x:{}1{})}}", "{a:".repeat(1500), "}".repeat(1500));
        assert_eq!(scan(&objects, &limits()).unwrap_err().reason, "TOO_DEEP");
        // Unbalanced closers never underflow into a panic.
        assert!(scan(&"]".repeat(10_000), &limits()).is_err());
    }

    #[test]
    fn ordinary_documents_pass() {
        let query = r#"
            # a comment with { [ ( that is ignored
            query Q($first: Int = 10, $f: EventFilter = {types: ["A", "B"]}) @cached {
              a: adminEvents(first: $first, filter: $f) { edges { node { id type } } }
              b: __typename
              ... on Query { health { status } }
            }
            fragment F on Query { health { status } }
        "#;
        assert_eq!(scan(query, &limits()), Ok(()));
    }

    #[test]
    fn aliases_are_counted_in_selections_only() {
        let aliases: String = (0..101).map(|i| format!("a{i}: __typename ")).collect();
        let query = format!("{{ {aliases} }}");
        assert_eq!(
            scan(&query, &limits()).unwrap_err().reason,
            "TOO_MANY_ALIASES"
        );
        // Argument names and object fields are not aliases.
        let args: String = (0..200).map(|i| format!("k{i}: {i} ")).collect();
        assert_eq!(
            scan(&format!("{{ f(x: {{ {args} }}) }}"), &limits()),
            Ok(())
        );
    }

    #[test]
    fn tokens_and_directives_are_bounded() {
        let many = "{ a }".repeat(3000);
        assert_eq!(
            scan(&many, &limits()).unwrap_err().reason,
            "TOO_MANY_TOKENS"
        );
        let directives = format!("{{ a {} }}", "@skip(if: false) ".repeat(51));
        assert_eq!(
            scan(&directives, &limits()).unwrap_err().reason,
            "TOO_MANY_DIRECTIVES"
        );
    }

    #[test]
    fn strings_hide_their_brackets_and_refuse_nul() {
        let deep_in_string = format!("{{ f(x: \"{}\") }}", "[".repeat(5000));
        assert_eq!(scan(&deep_in_string, &limits()), Ok(()));
        let block = format!("{{ f(x: \"\"\"{}\\\"\"\" ]]]\"\"\") }}", "{".repeat(5000));
        assert_eq!(scan(&block, &limits()), Ok(()));
        assert_eq!(
            scan(r#"{ f(x: "a\u0000b") }"#, &limits())
                .unwrap_err()
                .reason,
            "NUL_CHARACTER"
        );
        assert_eq!(
            scan(r#"{ f(x: "a\u{0}b") }"#, &limits())
                .unwrap_err()
                .reason,
            "NUL_CHARACTER"
        );
        assert_eq!(
            scan("{ f(x: \"a\0b\") }", &limits()).unwrap_err().reason,
            "NUL_CHARACTER"
        );
    }

    #[test]
    fn unterminated_strings_are_refused_not_guessed_at() {
        // The parser reads an unclosed `"""` as `""` and parses on: the nesting behind
        // it must never pass as string content.
        let sneaky = format!(
            "{{ health(x: [\"\"\" \" {}1{} ]) {{ status }} }}",
            "[".repeat(5000),
            "]".repeat(5000)
        );
        assert_eq!(
            scan(&sneaky, &limits()).unwrap_err().reason,
            "UNTERMINATED_STRING"
        );
        assert_eq!(
            scan("{ f(x: \"abc\ndef\") }", &limits())
                .unwrap_err()
                .reason,
            "UNTERMINATED_STRING"
        );
        assert_eq!(
            scan("{ f(x: \"abc", &limits()).unwrap_err().reason,
            "UNTERMINATED_STRING"
        );
        assert_eq!(scan("{ f(x: \"\"\"abc\"\"\") }", &limits()), Ok(()));
        assert_eq!(scan("{ f(x: \"\") }", &limits()), Ok(()));
    }

    #[test]
    fn expanded_selections_are_counted() {
        let fields: String = (0..20).map(|i| format!("f{i}: __typename ")).collect();
        let spreads = "...F ".repeat(60);
        let query = format!("{{ {spreads} }} fragment F on Query {{ {fields} }}");
        let document = async_graphql::parser::parse_query(&query).unwrap();
        assert_eq!(
            count_selections(&document, 1000).unwrap_err().reason,
            "TOO_COMPLEX"
        );
        let cyclic = "{ ...F } fragment F on Query { ...F }";
        let document = async_graphql::parser::parse_query(cyclic).unwrap();
        assert!(count_selections(&document, 1000).is_err());
        let small = async_graphql::parser::parse_query("{ a { b c } }").unwrap();
        assert_eq!(count_selections(&small, 1000), Ok(3));
    }

    #[test]
    fn variables_with_nul_are_refused() {
        let variables = Variables::from_json(serde_json::json!({"f": {"types": ["ok", "a\u{0}"]}}));
        assert_eq!(
            check_variables(&variables).unwrap_err().reason,
            "NUL_CHARACTER"
        );
        let fine = Variables::from_json(serde_json::json!({"f": {"types": ["ok"]}}));
        assert_eq!(check_variables(&fine), Ok(()));
    }
}
