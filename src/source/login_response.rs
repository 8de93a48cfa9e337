//! Parsing of the `/login` response bodies.
//!
//! Rules for `expires_at`, which the server sends in Unix seconds:
//! - missing or `null`: the token has no known expiry, so the cache keeps it for its
//!   maximum token lifetime (12 hours by default) or until a `401`;
//! - larger than 10^11 (a date after the year 5000 in seconds): read as milliseconds,
//!   the usual mistake;
//! - at or before the current time: rejected as an invalid response, because the token
//!   would be unusable and the clocks of this host and the server probably disagree;
//! - a string, boolean, array or object: rejected as an invalid response;
//! - a fractional number: accepted, with sub-second precision.
//!
//! The cache caps every lifetime at its maximum token lifetime, so no value can cache a
//! token for centuries.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// Seconds beyond which `expires_at` is read as milliseconds.
const MILLISECONDS_THRESHOLD: f64 = 1e11;
/// The maximum lifetime the parser returns: about 100 years, far below `Duration::MAX`.
const MAX_PARSED_LIFETIME: f64 = 100.0 * 365.0 * 86_400.0;
/// The maximum length, in characters, of server error text repeated in an error message.
const MAX_ERROR_TEXT: usize = 200;

/// The parts of a successful login response.
#[derive(Debug)]
pub(crate) struct LoginGrant {
    pub(crate) token: String,
    pub(crate) lifetime: Option<Duration>,
}

/// The reason a success body was rejected. The text names the field and its value, never
/// the token.
#[derive(Debug, PartialEq)]
pub(crate) struct InvalidBody(pub(crate) String);

/// Parses a `200` body: `{"token": "...", "expires_at": <Unix seconds>}`. Unknown fields
/// are ignored.
pub(crate) fn parse_grant(body: &[u8], now: SystemTime) -> Result<LoginGrant, InvalidBody> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(InvalidBody("the body is empty".into()));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|error| InvalidBody(format!("the body is not valid JSON ({error})")))?;
    let Value::Object(fields) = value else {
        return Err(InvalidBody(format!(
            "the body is {}, expected a JSON object",
            json_type(&value)
        )));
    };
    let token = match fields.get("token") {
        Some(Value::String(token)) => validate_token(token)?,
        Some(other) => {
            return Err(InvalidBody(format!(
                "field `token` is {}, expected a string",
                json_type(other)
            )));
        }
        None => return Err(InvalidBody("field `token` is missing".into())),
    };
    let lifetime = match fields.get("expires_at") {
        None | Some(Value::Null) => None,
        Some(value) => Some(lifetime_until(value, now)?),
    };
    Ok(LoginGrant { token, lifetime })
}

fn validate_token(token: &str) -> Result<String, InvalidBody> {
    if token.is_empty() {
        return Err(InvalidBody("field `token` is empty".into()));
    }
    let header_safe = token.bytes().all(|byte| (0x21..=0x7e).contains(&byte));
    if !header_safe {
        return Err(InvalidBody(
            "field `token` contains spaces, control or non-ASCII characters, which an \
             Authorization header cannot carry"
                .into(),
        ));
    }
    Ok(token.to_owned())
}

/// Converts `expires_at` to the time left from `now`.
fn lifetime_until(value: &Value, now: SystemTime) -> Result<Duration, InvalidBody> {
    let Some(mut expires_at) = value.as_f64().filter(|seconds| seconds.is_finite()) else {
        return Err(InvalidBody(format!(
            "field `expires_at` is {}, expected Unix seconds as a number",
            shorten(&value.to_string())
        )));
    };
    if expires_at > MILLISECONDS_THRESHOLD {
        expires_at /= 1000.0;
    }
    let now_seconds = now
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64());
    let left = expires_at - now_seconds;
    if left <= 0.0 {
        return Err(InvalidBody(format!(
            "field `expires_at` is {value}, which is {:.0} s before this host's clock \
             ({now_seconds:.0}); check the clocks of this host and of the server",
            -left
        )));
    }
    Ok(Duration::from_secs_f64(left.min(MAX_PARSED_LIFETIME)))
}

/// Extracts the `error` text of a failure body, if any, shortened and with `password`
/// removed in case the server echoes it.
pub(crate) fn error_text(body: &[u8], password: &str) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let text = match value.get("error")? {
        Value::String(text) => text.clone(),
        Value::Object(object) => object.get("message")?.as_str()?.to_owned(),
        _ => return None,
    };
    let text = if password.is_empty() {
        text
    } else {
        text.replace(password, "[redacted]")
    };
    Some(shorten(&text))
}

fn shorten(text: &str) -> String {
    if text.chars().count() <= MAX_ERROR_TEXT {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(MAX_ERROR_TEXT).collect();
    short.push('…');
    short
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW)
    }

    fn parse(body: &str) -> Result<LoginGrant, InvalidBody> {
        parse_grant(body.as_bytes(), now())
    }

    #[test]
    fn seconds_give_lifetime() {
        let grant = parse(r#"{"token":"abc","expires_at":1800000900}"#).unwrap();
        assert_eq!(grant.token, "abc");
        assert_eq!(grant.lifetime, Some(Duration::from_secs(900)));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let grant = parse(r#"{"token":"abc","expires_at":1800000060,"role":"ops"}"#).unwrap();
        assert_eq!(grant.lifetime, Some(Duration::from_secs(60)));
    }

    #[test]
    fn milliseconds_are_converted() {
        let grant = parse(r#"{"token":"abc","expires_at":1800000900000}"#).unwrap();
        assert_eq!(grant.lifetime, Some(Duration::from_secs(900)));
    }

    #[test]
    fn fractional_seconds_are_kept() {
        let grant = parse(r#"{"token":"abc","expires_at":1800000000.5}"#).unwrap();
        assert_eq!(grant.lifetime, Some(Duration::from_millis(500)));
    }

    #[test]
    fn missing_or_null_expiry_is_unknown() {
        assert_eq!(parse(r#"{"token":"abc"}"#).unwrap().lifetime, None);
        assert_eq!(
            parse(r#"{"token":"abc","expires_at":null}"#)
                .unwrap()
                .lifetime,
            None
        );
    }

    #[test]
    fn past_or_present_expiry_is_rejected() {
        let error = parse(r#"{"token":"abc","expires_at":1799999000}"#).unwrap_err();
        assert!(error.0.contains("1799999000"), "{}", error.0);
        assert!(error.0.contains("1000 s before"), "{}", error.0);
        assert!(parse(r#"{"token":"abc","expires_at":1800000000}"#).is_err());
        assert!(parse(r#"{"token":"abc","expires_at":-5}"#).is_err());
    }

    #[test]
    fn huge_expiry_does_not_overflow() {
        let grant = parse(r#"{"token":"abc","expires_at":1e300}"#).unwrap();
        let lifetime = grant.lifetime.unwrap();
        assert!(lifetime <= Duration::from_secs_f64(MAX_PARSED_LIFETIME));
        let grant = parse(r#"{"token":"abc","expires_at":18446744073709551615}"#).unwrap();
        assert!(grant.lifetime.is_some());
    }

    #[test]
    fn non_number_expiry_is_rejected() {
        let error = parse(r#"{"token":"abc","expires_at":"tomorrow"}"#).unwrap_err();
        assert_eq!(
            error.0,
            r#"field `expires_at` is "tomorrow", expected Unix seconds as a number"#
        );
        assert!(parse(r#"{"token":"abc","expires_at":true}"#).is_err());
        assert!(parse(r#"{"token":"abc","expires_at":[1]}"#).is_err());
    }

    #[test]
    fn bad_token_field_is_rejected_without_echo() {
        assert_eq!(
            parse(r#"{"expires_at":1800000900}"#).unwrap_err().0,
            "field `token` is missing"
        );
        assert_eq!(
            parse(r#"{"token":42}"#).unwrap_err().0,
            "field `token` is a number, expected a string"
        );
        assert_eq!(
            parse(r#"{"token":""}"#).unwrap_err().0,
            "field `token` is empty"
        );
        let error = parse("{\"token\":\"sec ret\\n\"}").unwrap_err();
        assert!(!error.0.contains("sec"), "{}", error.0);
    }

    #[test]
    fn non_json_or_empty_body_is_rejected() {
        assert_eq!(parse("").unwrap_err().0, "the body is empty");
        assert!(
            parse("<html>")
                .unwrap_err()
                .0
                .starts_with("the body is not valid JSON")
        );
        assert_eq!(
            parse("[1]").unwrap_err().0,
            "the body is an array, expected a JSON object"
        );
    }

    #[test]
    fn error_text_is_read_and_scrubbed() {
        assert_eq!(
            error_text(br#"{"error":"Invalid credentials"}"#, "pw").as_deref(),
            Some("Invalid credentials")
        );
        assert_eq!(
            error_text(
                br#"{"error":{"message":"bad pw hunter2","code":7}}"#,
                "hunter2"
            )
            .as_deref(),
            Some("bad pw [redacted]")
        );
        assert_eq!(error_text(b"not json", "pw"), None);
        let long = format!(r#"{{"error":"{}"}}"#, "x".repeat(500));
        assert_eq!(
            error_text(long.as_bytes(), "pw").unwrap().chars().count(),
            201
        );
    }
}
