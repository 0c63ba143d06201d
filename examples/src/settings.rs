//! Reading the example programs' settings from environment variables, the way a container
//! gets them (from its pod spec, a ConfigMap or a Secret).

use std::time::Duration;

use crate::ExampleError;

/// The variable's value; an unset or empty variable is an error naming it.
pub fn required(name: &'static str) -> Result<String, ExampleError> {
    optional(name).ok_or_else(|| ExampleError::Setting {
        name,
        problem: "required; set this environment variable".into(),
    })
}

/// The variable's value, `None` when unset or empty.
pub fn optional(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A whole number from the variable, or `default` when it is unset.
pub fn number_or<T: std::str::FromStr>(name: &'static str, default: T) -> Result<T, ExampleError> {
    match optional(name) {
        None => Ok(default),
        Some(text) => parse_number(name, &text),
    }
}

/// A duration in milliseconds from the variable, or `default` when it is unset.
pub fn millis_or(name: &'static str, default: Duration) -> Result<Duration, ExampleError> {
    match optional(name) {
        None => Ok(default),
        Some(text) => parse_number(name, &text).map(Duration::from_millis),
    }
}

/// `text` as a whole number; the error names `name` and quotes the text (never a secret here).
pub fn parse_number<T: std::str::FromStr>(
    name: &'static str,
    text: &str,
) -> Result<T, ExampleError> {
    text.trim().parse().map_err(|_| ExampleError::Setting {
        name,
        problem: format!("expected a whole number >= 0, got {text:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_checked_and_name_the_setting() {
        assert_eq!(parse_number::<u64>("COUNT", " 12 ").ok(), Some(12));
        let err = parse_number::<u64>("COUNT", "-3").unwrap_err();
        assert_eq!(
            err.to_string(),
            "COUNT: expected a whole number >= 0, got \"-3\""
        );
    }
}
