//! How long to wait after a `429`: `Retry-After` plus jitter, or exponential backoff with
//! full jitter.

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use http::header::RETRY_AFTER;

use super::ThrottleConfig;

/// The decision for one `429`: wait, or give up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Wait this long, then retry.
    Wait(Duration),
    /// Return the `429` now, because the server asked for a wait above the cap.
    GiveUp(Duration),
}

/// Decides the wait before retry number `retry` (0 for the first retry).
///
/// - `Retry-After` in delta-seconds or as an HTTP-date: that wait plus up to
///   `retry_after_jitter`, capped at `max_wait`. A date in the past, or `0`, means the
///   jitter alone. A wait above `max_wait` gives up.
/// - No usable `Retry-After` (absent, negative, not a number or a date): a random wait
///   between zero and `base_delay * 2^retry`, capped at `max_wait` (full jitter).
pub(crate) fn decide(
    headers: &HeaderMap,
    retry: u32,
    config: &ThrottleConfig,
    now: SystemTime,
    rng: &mut fastrand::Rng,
) -> Decision {
    match retry_after(headers, now) {
        Some(asked) if asked > config.max_wait => Decision::GiveUp(asked),
        Some(asked) => {
            let wait = asked.saturating_add(uniform(rng, config.retry_after_jitter));
            Decision::Wait(wait.min(config.max_wait))
        }
        None => {
            let ceiling = config
                .base_delay
                .saturating_mul(1u32 << retry.min(31))
                .min(config.max_wait);
            Decision::Wait(uniform(rng, ceiling))
        }
    }
}

/// Parses `Retry-After`. Delta-seconds too large for a `u64` saturate, so they exceed any
/// cap instead of overflowing. Returns `None` for a missing or unusable value.
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit()) {
        let seconds = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Returns a random duration in `0..=max`.
fn uniform(rng: &mut fastrand::Rng, max: Duration) -> Duration {
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.u64(0..=nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(retry_after: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(retry_after).unwrap());
        headers
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    #[test]
    fn delta_seconds() {
        assert_eq!(
            retry_after(&headers("1"), now()),
            Some(Duration::from_secs(1))
        );
        assert_eq!(retry_after(&headers(" 0 "), now()), Some(Duration::ZERO));
        assert_eq!(
            retry_after(&headers("3600"), now()),
            Some(Duration::from_secs(3600))
        );
    }

    #[test]
    fn thirty_digits_saturate() {
        let parsed = retry_after(&headers("123456789012345678901234567890"), now());
        assert_eq!(parsed, Some(Duration::from_secs(u64::MAX)));
    }

    #[test]
    fn http_date_future_and_past() {
        let future = httpdate::fmt_http_date(now() + Duration::from_secs(2));
        assert_eq!(
            retry_after(&headers(&future), now()),
            Some(Duration::from_secs(2))
        );
        let past = httpdate::fmt_http_date(now() - Duration::from_secs(60));
        assert_eq!(retry_after(&headers(&past), now()), Some(Duration::ZERO));
    }

    #[test]
    fn unusable_values() {
        assert_eq!(retry_after(&headers("-5"), now()), None);
        assert_eq!(retry_after(&headers("abc"), now()), None);
        assert_eq!(retry_after(&headers("1.5"), now()), None);
        assert_eq!(retry_after(&headers(""), now()), None);
        assert_eq!(retry_after(&HeaderMap::new(), now()), None);
    }

    #[test]
    fn wait_above_cap_gives_up() {
        let config = ThrottleConfig::default();
        let mut rng = fastrand::Rng::with_seed(7);
        let decision = decide(&headers("3600"), 0, &config, now(), &mut rng);
        assert_eq!(decision, Decision::GiveUp(Duration::from_secs(3600)));
    }

    #[test]
    fn retry_after_adds_bounded_jitter() {
        let config = ThrottleConfig::default();
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..1000 {
            let Decision::Wait(wait) = decide(&headers("1"), 0, &config, now(), &mut rng) else {
                panic!("gave up on Retry-After: 1");
            };
            assert!(wait >= Duration::from_secs(1), "{wait:?}");
            assert!(
                wait <= Duration::from_secs(1) + config.retry_after_jitter,
                "{wait:?}"
            );
        }
    }

    #[test]
    fn backoff_ceiling_doubles_and_caps() {
        let config = ThrottleConfig::default();
        let mut rng = fastrand::Rng::with_seed(7);
        for retry in [0, 1, 2, 10, 40] {
            let ceiling = config
                .base_delay
                .saturating_mul(1 << retry.min(31))
                .min(config.max_wait);
            for _ in 0..200 {
                let Decision::Wait(wait) = decide(&headers("abc"), retry, &config, now(), &mut rng)
                else {
                    panic!("gave up without Retry-After");
                };
                assert!(wait <= ceiling, "retry {retry}: {wait:?} > {ceiling:?}");
            }
        }
    }
}
