//! What the event list's search sees of a payload (`admin_event_search.body`).
//!
//! The same text as the database's `aula_search_text(jsonb)` (`0041_dashboard_search.sql`,
//! which filled the table for the events projected before it): the payload's scalar
//! values at any depth, in `jsonb_path_query(doc, 'strict $.**')` order (depth first,
//! an object's keys shortest first, then bytewise, as `jsonb` stores them; arrays in
//! order), joined by single spaces, without nulls and without the string values of the
//! catalog's sensitive fields ([`aula_domain::catalog::SENSITIVE_FIELDS`]). Computed
//! here rather than by that function because the function re-parses and re-prints
//! every payload in the database: on a rebuild it was most of the projection's time
//! (issue #20). `tests/it/read_models/event_list.rs` holds the two to the same output.

use std::fmt::Write as _;

use aula_domain::catalog::SENSITIVE_FIELDS;
use serde_json::{Number, Value};

/// The search text of `payload`.
pub fn search_text(payload: &Value) -> String {
    let mut text = Text {
        body: String::new(),
        empty: true,
    };
    text.push_values(payload);
    text.body
}

struct Text {
    body: String,
    /// No value yet (the body can be empty after values that were empty strings).
    empty: bool,
}

impl Text {
    fn push_values(&mut self, value: &Value) {
        match value {
            Value::Null => {}
            Value::Bool(true) => self.push("true"),
            Value::Bool(false) => self.push("false"),
            Value::Number(number) => self.push_number(number),
            Value::String(string) => self.push(string),
            Value::Array(items) => items.iter().for_each(|item| self.push_values(item)),
            Value::Object(fields) => {
                let mut fields: Vec<(&String, &Value)> = fields.iter().collect();
                fields.sort_by(|(a, _), (b, _)| {
                    a.len()
                        .cmp(&b.len())
                        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
                });
                for (key, value) in fields {
                    if value.is_string() && SENSITIVE_FIELDS.contains(&key.as_str()) {
                        continue;
                    }
                    self.push_values(value);
                }
            }
        }
    }

    fn push(&mut self, word: &str) {
        if !self.empty {
            self.body.push(' ');
        }
        self.empty = false;
        self.body.push_str(word);
    }

    /// As PostgreSQL's `numeric` prints it: never in exponent notation.
    fn push_number(&mut self, number: &Number) {
        let mut printed = String::new();
        // Writing to a String cannot fail.
        let _ = write!(printed, "{number}");
        match printed.find(['e', 'E']) {
            Some(at) => self.push(&plain_decimal(&printed[..at], &printed[at + 1..])),
            // `numeric` has no negative zero.
            None if printed.starts_with('-') && !has_nonzero_digit(&printed) => {
                self.push(&printed[1..])
            }
            None => self.push(&printed),
        }
    }
}

/// `mantissa`e`exponent` written out: `1.5`,`-7` → `0.00000015`; `1`,`21` → `1` and 21
/// zeros (the digits after the point that `numeric` keeps: the mantissa's, less the
/// exponent).
fn plain_decimal(mantissa: &str, exponent: &str) -> String {
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, mantissa),
    };
    let exponent: i64 = exponent.trim_start_matches('+').parse().unwrap_or(0);
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: String = format!("{whole}{fraction}");
    let point = whole.len() as i64 + exponent;
    let mut out = String::new();
    if point <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-point) as usize));
        out.push_str(&digits);
    } else if point as usize >= digits.len() {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', point as usize - digits.len()));
    } else {
        out.push_str(&digits[..point as usize]);
        out.push('.');
        out.push_str(&digits[point as usize..]);
    }
    // Leading zeros of the whole part, as `numeric` drops them.
    let trimmed = out.trim_start_matches('0');
    let out = if trimmed.is_empty() || trimmed.starts_with('.') {
        format!("0{trimmed}")
    } else {
        trimmed.to_owned()
    };
    if negative && has_nonzero_digit(&out) {
        format!("-{out}")
    } else {
        out
    }
}

fn has_nonzero_digit(number: &str) -> bool {
    number.bytes().any(|b| matches!(b, b'1'..=b'9'))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn values_in_jsonb_order_without_sensitive_strings() {
        let payload = json!({
            "type": "UserRegistered", "email": "a@b.c", "password_hash": "secret",
            "nested": {"token_hash": "t", "zz": [1, true, null, "x"], "b": {"c": -2.5}},
            "id": 7, "empty": ""
        });
        // Keys by length, then bytes: id, type, email, empty, nested (b, zz), password_hash.
        assert_eq!(
            search_text(&payload),
            "7 UserRegistered a@b.c  -2.5 1 true x"
        );
    }

    #[test]
    fn numbers_print_as_numeric_does() {
        assert_eq!(plain_decimal("1.5", "-7"), "0.00000015");
        assert_eq!(plain_decimal("1", "21"), "1000000000000000000000");
        assert_eq!(plain_decimal("1.234", "1"), "12.34");
        assert_eq!(plain_decimal("-1.25", "2"), "-125");
        assert_eq!(search_text(&json!(1e21)), "1000000000000000000000");
        assert_eq!(search_text(&json!(6.0)), "6.0");
        assert_eq!(search_text(&json!(-0.0)), "0.0");
    }
}
