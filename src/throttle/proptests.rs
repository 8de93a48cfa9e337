//! Property tests of the `Retry-After` parser and the wait decision: no header value, clock
//! or configuration panics or overflows, and no wait exceeds `max_wait`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::RETRY_AFTER;
use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;

use super::ThrottleConfig;
use super::delay::{Decision, decide, retry_after};

/// The last second an HTTP-date can express: 9999-12-31T23:59:59Z.
const LAST_HTTP_DATE: u64 = 253_402_300_799;

fn headers_with(value: HeaderValue) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(RETRY_AFTER, value);
    headers
}

fn unix(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds)
}

/// Returns the value that `digits`, a string of ASCII digits, parses to: itself, or
/// `u64::MAX` when it is larger.
fn saturated_seconds(digits: &str) -> u64 {
    let significant = digits.trim_start_matches('0');
    if significant.len() > 20 {
        return u64::MAX;
    }
    let value = significant.parse::<u128>().unwrap_or(0);
    u64::try_from(value).unwrap_or(u64::MAX)
}

fn any_duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::MAX),
        (0..100_000u64).prop_map(Duration::from_millis),
        (any::<u64>(), 0..1_000_000_000u32).prop_map(|(secs, nanos)| Duration::new(secs, nanos)),
    ]
}

fn any_config() -> impl Strategy<Value = ThrottleConfig> {
    (any::<u32>(), any_duration(), any_duration(), any_duration()).prop_map(
        |(max_attempts, max_wait, base_delay, retry_after_jitter)| ThrottleConfig {
            max_attempts,
            max_wait,
            base_delay,
            retry_after_jitter,
        },
    )
}

/// Generates wall clocks from 1970 to the last HTTP-date, and before 1970.
fn any_now() -> impl Strategy<Value = SystemTime> {
    prop_oneof![
        (0..=LAST_HTTP_DATE).prop_map(unix),
        (0..=u64::from(u32::MAX)).prop_map(|seconds| UNIX_EPOCH - Duration::from_secs(seconds)),
        (0..=LAST_HTTP_DATE, 0..1_000_000_000u32)
            .prop_map(|(seconds, nanos)| unix(seconds) + Duration::from_nanos(u64::from(nanos))),
    ]
}

/// Generates `Retry-After` values that a header can carry: digits of any length,
/// HTTP-dates, printable text and raw bytes.
fn any_retry_after() -> impl Strategy<Value = HeaderValue> {
    prop_oneof![
        "[ \t]{0,2}[0-9]{1,400}[ \t]{0,2}",
        (0..=LAST_HTTP_DATE).prop_map(|seconds| httpdate::fmt_http_date(unix(seconds))),
        "[ -~]{0,60}",
        "-?[0-9]{1,30}(\\.[0-9]{1,5})?",
    ]
    .prop_map(|text| HeaderValue::from_str(&text).unwrap())
    .boxed()
    .prop_union(
        proptest::collection::vec(any::<u8>(), 0..80)
            .prop_filter_map("not a valid header value", |bytes| {
                HeaderValue::from_bytes(&bytes).ok()
            })
            .boxed(),
    )
}

proptest! {
    #[test]
    fn any_value_parses_without_panic(value in any_retry_after(), now in any_now()) {
        let _ = retry_after(&headers_with(value), now);
    }

    #[test]
    fn digits_of_any_length_saturate(
        digits in "[0-9]{1,400}",
        before in "[ \t]{0,3}",
        after in "[ \t]{0,3}",
        now in any_now(),
    ) {
        let value = HeaderValue::from_str(&format!("{before}{digits}{after}")).unwrap();
        let parsed = retry_after(&headers_with(value), now);
        prop_assert_eq!(parsed, Some(Duration::from_secs(saturated_seconds(&digits))));
    }

    #[test]
    fn http_date_gives_time_until_it(date in 0..=LAST_HTTP_DATE, now in any_now()) {
        let value = HeaderValue::from_str(&httpdate::fmt_http_date(unix(date))).unwrap();
        let parsed = retry_after(&headers_with(value), now);
        let expected = unix(date).duration_since(now).unwrap_or(Duration::ZERO);
        prop_assert_eq!(parsed, Some(expected));
    }

    #[test]
    fn decision_stays_within_cap(
        value in proptest::option::of(any_retry_after()),
        retry in any::<u32>(),
        config in any_config(),
        now in any_now(),
        seed in any::<u64>(),
    ) {
        let headers = value.map(headers_with).unwrap_or_default();
        let mut rng = fastrand::Rng::with_seed(seed);
        let decision = decide(&headers, retry, &config, now, &mut rng);
        match (retry_after(&headers, now), decision) {
            (Some(asked), Decision::GiveUp(given_up)) => {
                prop_assert_eq!(given_up, asked);
                prop_assert!(asked > config.max_wait);
            }
            (Some(asked), Decision::Wait(wait)) => {
                prop_assert!(asked <= config.max_wait);
                prop_assert!(wait >= asked);
                prop_assert!(wait <= asked.saturating_add(config.retry_after_jitter));
                prop_assert!(wait <= config.max_wait);
            }
            (None, Decision::Wait(wait)) => {
                let ceiling = config.base_delay.saturating_mul(1 << retry.min(31));
                prop_assert!(wait <= ceiling);
                prop_assert!(wait <= config.max_wait);
            }
            (None, Decision::GiveUp(given_up)) => {
                prop_assert!(false, "gave up after {given_up:?} without a Retry-After");
            }
        }
    }
}
