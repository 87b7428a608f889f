//! Lambda event filtering, the subset `template.yaml` can use: a record is forwarded when any
//! pattern matches its JSON.
//!
//! A pattern is a JSON object mirroring the record; each leaf is an array of alternatives: exact
//! values, `{"prefix": ..}`, `{"suffix": ..}`, `{"exists": bool}`, `{"anything-but": ..}` and
//! `{"equals-ignore-case": ..}`. Other operators are refused when the pattern is compiled, so a
//! template using them fails loudly instead of filtering differently from AWS.
//! <https://docs.aws.amazon.com/lambda/latest/dg/invocation-eventfiltering.html>

use serde_json::{Map, Value};

/// A pattern that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter pattern {pattern}: {problem}")]
pub struct PatternError {
    /// The pattern text.
    pub pattern: String,
    /// What is wrong with it.
    pub problem: String,
}

/// One compiled `FilterCriteria.Filters[].Pattern`.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterPattern {
    /// The pattern's object, checked by [`FilterPattern::compile`].
    root: Map<String, Value>,
}

impl FilterPattern {
    /// Parses and checks a pattern.
    ///
    /// # Errors
    /// [`PatternError`] when it is not a JSON object of objects with arrays of supported
    /// alternatives at the leaves.
    pub fn compile(text: &str) -> Result<Self, PatternError> {
        let error = |problem: String| PatternError {
            pattern: text.to_owned(),
            problem,
        };
        let value: Value = serde_json::from_str(text).map_err(|err| error(err.to_string()))?;
        let Value::Object(root) = value else {
            return Err(error("a pattern is a JSON object".into()));
        };
        check_object(&root).map_err(error)?;
        Ok(Self { root })
    }

    /// Whether `event` (one record as JSON) passes.
    #[must_use]
    pub fn matches(&self, event: &Value) -> bool {
        matches_object(&self.root, event)
    }
}

fn check_object(object: &Map<String, Value>) -> Result<(), String> {
    for (field, pattern) in object {
        match pattern {
            Value::Object(inner) => check_object(inner)?,
            Value::Array(alternatives) => {
                for alternative in alternatives {
                    check_alternative(alternative).map_err(|problem| format!("{field}: {problem}"))?;
                }
            }
            other => return Err(format!("{field}: expected an object or an array, found {other}")),
        }
    }
    Ok(())
}

fn check_alternative(alternative: &Value) -> Result<(), String> {
    let Value::Object(operator) = alternative else {
        return Ok(());
    };
    let mut entries = operator.iter();
    let (Some((name, operand)), None) = (entries.next(), entries.next()) else {
        return Err(format!("an operator object has exactly one key: {alternative}"));
    };
    match (name.as_str(), operand) {
        ("prefix" | "suffix" | "equals-ignore-case", Value::String(_)) | ("exists", Value::Bool(_)) => Ok(()),
        ("anything-but", Value::String(_) | Value::Number(_) | Value::Bool(_)) => Ok(()),
        ("anything-but", Value::Array(values)) if values.iter().all(|value| !value.is_object()) => Ok(()),
        _ => Err(format!("unsupported filter operator {alternative}")),
    }
}

fn matches_object(pattern: &Map<String, Value>, event: &Value) -> bool {
    pattern.iter().all(|(field, pattern)| {
        let value = event.get(field);
        match pattern {
            // A missing parent still lets `{"exists": false}` below it match.
            Value::Object(inner) => matches_object(inner, value.unwrap_or(&Value::Null)),
            Value::Array(alternatives) => alternatives.iter().any(|alternative| matches_leaf(alternative, value)),
            _ => false,
        }
    })
}

fn matches_leaf(alternative: &Value, value: Option<&Value>) -> bool {
    // A field holding an array matches when any element does, as in EventBridge patterns.
    if let Some(Value::Array(elements)) = value {
        return elements.iter().any(|element| matches_leaf(alternative, Some(element)));
    }
    let Value::Object(operator) = alternative else {
        return value == Some(alternative);
    };
    let Some((name, operand)) = operator.iter().next() else {
        return false;
    };
    let text = value.and_then(Value::as_str);
    match (name.as_str(), operand) {
        ("exists", Value::Bool(expected)) => value.is_some() == *expected,
        ("prefix", Value::String(prefix)) => text.is_some_and(|text| text.starts_with(prefix.as_str())),
        ("suffix", Value::String(suffix)) => text.is_some_and(|text| text.ends_with(suffix.as_str())),
        ("equals-ignore-case", Value::String(expected)) => text.is_some_and(|text| text.eq_ignore_ascii_case(expected)),
        ("anything-but", Value::Array(excluded)) => value.is_some_and(|value| !excluded.contains(value)),
        ("anything-but", excluded) => value.is_some_and(|value| value != excluded),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const USERS: &str = r#"{"dynamodb":{"Keys":{"PK":{"S":[{"prefix":"USER#"}]}}}}"#;

    fn record(pk: Value) -> Value {
        json!({"eventName": "INSERT", "dynamodb": {"Keys": {"PK": pk, "SK": {"S": "PROFILE"}}}})
    }

    #[test]
    fn a_prefix_pattern_matches_the_partition_key() {
        let pattern = FilterPattern::compile(USERS).expect("compiles");
        assert!(pattern.matches(&record(json!({"S": "USER#u-1"}))));
        assert!(!pattern.matches(&record(json!({"S": "TOOL#search"}))));
        assert!(!pattern.matches(&record(json!({"N": "1"}))));
        assert!(!pattern.matches(&json!({"dynamodb": {}})));
    }

    #[test]
    fn operators_and_exact_values() {
        let pattern = FilterPattern::compile(
            r#"{"eventName":["INSERT","MODIFY"],"dynamodb":{"Keys":{"SK":{"S":[{"anything-but":["X"]}]}},"NewImage":{"gone":[{"exists":false}]}}}"#,
        )
        .expect("compiles");
        assert!(pattern.matches(&record(json!({"S": "USER#1"}))));
        let mut removed = record(json!({"S": "USER#1"}));
        removed["eventName"] = json!("REMOVE");
        assert!(!pattern.matches(&removed));
    }

    #[test]
    fn unsupported_operators_are_refused() {
        for text in [
            r#"{"a":[{"numeric":[">",1]}]}"#,
            r#"{"a":"b"}"#,
            "[]",
            r#"{"a":[{"prefix":"x","suffix":"y"}]}"#,
        ] {
            assert!(FilterPattern::compile(text).is_err(), "{text}");
        }
    }
}
