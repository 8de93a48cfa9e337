//! The single login in flight: started by one caller, run in a task of its own, awaited
//! by every caller that needs a token meanwhile.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::entry::{Authorization, Entry};
use super::{State, TokenCache};
use crate::error::{Error, ErrorKind};
use crate::token::Token;

type Outcome = Option<Result<Authorization, Error>>;

/// The maximum cooldown that a `Retry-After` from `/login` can impose: 15 minutes.
const MAX_REQUESTED_COOLDOWN: Duration = Duration::from_secs(15 * 60);

/// A login in flight. Waiters subscribe to the outcome, which the login task sends once.
pub(super) struct Flight {
    receiver: watch::Receiver<Outcome>,
}

impl Flight {
    pub(super) fn subscribe(&self) -> watch::Receiver<Outcome> {
        self.receiver.clone()
    }

    /// Returns `true` when the login task ended without sending an outcome.
    pub(super) fn is_dead(&self) -> bool {
        self.receiver.has_changed().is_err()
    }
}

/// Waits for the outcome of a login in flight.
///
/// # Cancel safety
///
/// Cancel-safe: the login goes on without this waiter.
pub(super) async fn wait(mut receiver: watch::Receiver<Outcome>) -> Result<Authorization, Error> {
    match receiver.wait_for(Option::is_some).await {
        Ok(outcome) => outcome.clone().unwrap_or_else(|| Err(task_ended())),
        Err(_) => Err(task_ended()),
    }
}

pub(super) fn task_ended() -> Error {
    Error::new(
        ErrorKind::LoginTransport,
        "the login task ended before it finished, which happens when the Tokio runtime shuts \
         down; retry the request on a running runtime",
    )
}

impl TokenCache {
    /// Starts a login task and records it as the flight in `state`.
    ///
    /// The task waits until `min_login_interval` has passed since the last successful login,
    /// which rate-limits logins of every cause.
    ///
    /// # Errors
    ///
    /// Returns a [`Config`](ErrorKind::Config) error when no Tokio runtime is running.
    pub(super) fn start_login(
        &self,
        state: &mut State,
        now: Instant,
    ) -> Result<watch::Receiver<Outcome>, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::config(
                "resq-auth needs a Tokio runtime to log in; poll the request inside one, \
                 for example under #[tokio::main]",
            )
        })?;
        let not_before = state
            .last_login
            .map(|last| last + self.config().min_login_interval)
            .filter(|instant| *instant > now);
        let (sender, receiver) = watch::channel(None);
        state.flight = Some(Flight {
            receiver: receiver.clone(),
        });
        let cache = self.clone();
        let epoch = state.epoch;
        runtime.spawn(async move {
            if let Some(instant) = not_before {
                tokio::time::sleep_until(instant).await;
            }
            tracing::debug!("login started");
            let fetched = cache.fetch().await;
            let outcome = cache.store(fetched, epoch).await;
            // No caller may be waiting any more, which is fine because the token is cached anyway.
            let _ = sender.send(Some(outcome));
        });
        Ok(receiver)
    }

    /// Runs the source in a task of its own, so that a panic in it becomes an error, under
    /// the login timeout.
    async fn fetch(&self) -> Result<Token, Error> {
        let source = self.source().clone();
        let timeout = self.config().login_timeout;
        let task = tokio::spawn(async move { source.fetch().await });
        let abort = task.abort_handle();
        match tokio::time::timeout(timeout, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::new(
                ErrorKind::LoginTransport,
                "the token source panicked while fetching a token",
            )),
            Err(_) => {
                abort.abort();
                let target = match self.source().origin() {
                    Some(origin) => origin.to_string(),
                    None => "the token source".to_owned(),
                };
                Err(Error::new(
                    ErrorKind::LoginTimeout,
                    format!(
                        "login did not complete within {:.1} s; check that {target} is \
                         reachable, or raise login_timeout",
                        timeout.as_secs_f64()
                    ),
                ))
            }
        }
    }

    /// Stores the result of a login: a new token and generation, or the failure and its
    /// cooldown. A failure leaves a still-valid token in place. A login that started
    /// before the last [`clear`](TokenCache::clear) only returns its outcome.
    async fn store(
        &self,
        fetched: Result<Token, Error>,
        epoch: u64,
    ) -> Result<Authorization, Error> {
        let mut state = self.shared.state.write().await;
        let now = Instant::now();
        let generation = state.next_generation + 1;
        let entry = fetched.and_then(|token| Entry::new(&token, generation, self.config()));
        if state.epoch != epoch {
            state.next_generation = generation;
            return entry.map(|entry| entry.authorization);
        }
        state.flight = None;
        match entry {
            Ok(entry) => {
                let authorization = entry.authorization.clone();
                tracing::info!(
                    generation,
                    expires_in_seconds = entry.lifetime.as_secs_f64(),
                    "logged in"
                );
                state.next_generation = generation;
                state.entry = Some(entry);
                state.failure = None;
                state.last_login = Some(now);
                self.counters().login_succeeded();
                Ok(authorization)
            }
            Err(error) => {
                // A server that requested a longer wait, with `Retry-After` on a `429` from
                // `/login`, gets it, up to `MAX_REQUESTED_COOLDOWN`.
                let requested = error
                    .retry_in()
                    .unwrap_or_default()
                    .min(MAX_REQUESTED_COOLDOWN);
                let (consecutive, cooldown) =
                    state.record_failure(error.clone(), self.config(), now, requested);
                tracing::warn!(
                    error = %error,
                    kind = ?error.kind(),
                    consecutive,
                    retry_in_seconds = cooldown.as_secs_f64(),
                    "login failed"
                );
                self.counters().login_failed();
                Err(error)
            }
        }
    }
}
