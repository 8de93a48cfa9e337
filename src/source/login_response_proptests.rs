//! Property tests of the `/login` response parser: no body or clock panics or overflows,
//! no `expires_at` gives a lifetime above 100 years, and server error text never repeats
//! the password.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use serde_json::{Value, json};

use super::login_response::{LoginGrant, error_text, parse_grant};

/// The maximum lifetime the parser may return: 100 years of 365 days.
const HUNDRED_YEARS: Duration = Duration::from_secs(100 * 365 * 86_400);
/// The maximum number of characters of server text in an error message, the ellipsis
/// included.
const MAX_ERROR_CHARS: usize = 201;

/// Generates wall clocks from before 1970 to far beyond the year 9999.
fn any_now() -> impl Strategy<Value = SystemTime> {
    prop_oneof![
        (0..=4_000_000_000u64).prop_map(|seconds| UNIX_EPOCH + Duration::from_secs(seconds)),
        (0..=u64::from(u32::MAX)).prop_map(|seconds| UNIX_EPOCH - Duration::from_secs(seconds)),
        (0..=i64::MAX as u64 / 2).prop_map(|seconds| UNIX_EPOCH + Duration::from_secs(seconds)),
    ]
}

/// Generates JSON number text: integers of any length, fractions and exponents, signed or
/// not.
fn any_number_text() -> impl Strategy<Value = String> {
    "-?(0|[1-9][0-9]{0,400})(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,5})?"
}

/// Checks what every successful parse must satisfy.
fn check_grant(grant: &LoginGrant) -> Result<(), TestCaseError> {
    prop_assert!(!grant.token.is_empty());
    prop_assert!(
        grant
            .token
            .bytes()
            .all(|byte| (0x21..=0x7e).contains(&byte))
    );
    if let Some(lifetime) = grant.lifetime {
        prop_assert!(lifetime <= HUNDRED_YEARS, "lifetime {lifetime:?}");
    }
    Ok(())
}

fn body_with_expiry(expires_at: &str) -> Vec<u8> {
    format!(r#"{{"token":"tok-1","expires_at":{expires_at}}}"#).into_bytes()
}

proptest! {
    #[test]
    fn any_bytes_parse_without_panic(body in proptest::collection::vec(any::<u8>(), 0..512), now in any_now()) {
        if let Ok(grant) = parse_grant(&body, now) {
            check_grant(&grant)?;
        }
    }

    #[test]
    fn json_like_text_parses_without_panic(body in r#"[{}\[\]":,0-9a-z_ .eE+-]{0,200}"#, now in any_now()) {
        if let Ok(grant) = parse_grant(body.as_bytes(), now) {
            check_grant(&grant)?;
        }
    }

    #[test]
    fn f64_expiry_is_bounded(expires_at in any::<f64>(), now in any_now()) {
        let body = json!({"token": "tok-1", "expires_at": expires_at}).to_string();
        if let Ok(grant) = parse_grant(body.as_bytes(), now) {
            check_grant(&grant)?;
        }
    }

    #[test]
    fn integer_expiry_is_bounded(signed in any::<i64>(), unsigned in any::<u64>(), now in any_now()) {
        for expires_at in [signed.to_string(), unsigned.to_string()] {
            if let Ok(grant) = parse_grant(&body_with_expiry(&expires_at), now) {
                check_grant(&grant)?;
            }
        }
    }

    #[test]
    fn huge_number_expiry_is_bounded(expires_at in any_number_text(), now in any_now()) {
        if let Ok(grant) = parse_grant(&body_with_expiry(&expires_at), now) {
            check_grant(&grant)?;
        }
    }

    #[test]
    fn future_expiry_is_accepted(seconds_left in 1..=1_000_000_000u64, now_seconds in 0..=4_000_000_000u64) {
        // Whole seconds ahead of a whole-second clock, and below the millisecond threshold
        // of 10^11, parse exactly.
        let now = UNIX_EPOCH + Duration::from_secs(now_seconds);
        let expires_at = (now_seconds + seconds_left).to_string();
        let grant = parse_grant(&body_with_expiry(&expires_at), now);
        prop_assert!(grant.is_ok(), "{grant:?}");
        prop_assert_eq!(grant.unwrap().lifetime, Some(Duration::from_secs(seconds_left)));
    }

    #[test]
    fn error_text_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512), password in ".{0,20}") {
        if let Some(text) = error_text(&body, &password) {
            prop_assert!(text.chars().count() <= MAX_ERROR_CHARS);
        }
    }

    #[test]
    fn error_text_hides_password(
        password in "[a-zA-Z0-9]{12,32}",
        pieces in proptest::collection::vec("[ .,:;!?()/-]{0,120}", 1..5),
        nested in any::<bool>(),
    ) {
        // The text repeats the password between pieces without letters or digits, so no
        // new occurrence can form where a password was replaced by `[redacted]`.
        let text = pieces.join(&password);
        let error = if nested { json!({"message": text, "code": 7}) } else { Value::String(text) };
        let body = json!({ "error": error }).to_string();
        let output = error_text(body.as_bytes(), &password).unwrap();
        prop_assert!(!output.contains(&password), "{output}");
        prop_assert!(output.chars().count() <= MAX_ERROR_CHARS);
    }
}
