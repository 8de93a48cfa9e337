//! Soak run: mixed traffic through `BearerAuthLayer` against the mock ResQ API on loopback,
//! with periodic token revocations, bursts of `429`, and failed logins.
//!
//! ```text
//! cargo run --release --example soak -- 600
//! ```
//!
//! The first argument is the duration in seconds, 60 by default. Every 10 s and at the end
//! the run prints the requests sent, the responses by status, the errors by kind, the
//! layer's counters and the resident memory of this process.
//!
//! The mock runs in a child process (this program started with `--serve-mock`), because
//! it keeps every request it receives in memory. The resident memory printed for this
//! process therefore covers the client side alone. The child's is printed next to it. The
//! parent steers the mock through the child's standard input, one command per line:
//! `revoke`, `throttle N`, `fail-login` and `stats`.
//!
//! Traffic: `WORKERS` tasks each send at most one request every `REQUEST_INTERVAL`: 80%
//! `GET /evidence`, 15% `POST /admin/missions/approve`, 5% `GET /admin/audit` (denied with
//! `403`). Every 5 s all tokens are revoked, every 7 s the next 20 protected requests get
//! `429` with `Retry-After: 0`, and every 30 s the next login fails with `503`.

use std::collections::BTreeMap;
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use resq_auth::mock::{DEFAULT_PASSWORD, DEFAULT_USERNAME, MockServer, ScriptedResponse};
use resq_auth::{
    AuthStats, BearerAuth, BearerAuthLayer, BoxError, Credentials, LoginSource, ReplayBody,
    TokenCache,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::{Instant, MissedTickBehavior, interval, sleep, timeout};
use tower::{Layer, ServiceExt};

const DEFAULT_SECONDS: u64 = 60;
const WORKERS: usize = 8;
const REQUEST_INTERVAL: Duration = Duration::from_millis(10);
/// The bound on each request, and on the child's replies.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const REPORT_EVERY: u64 = 10;
const REVOKE_EVERY: u64 = 5;
const THROTTLE_EVERY: u64 = 7;
const THROTTLED_REQUESTS: usize = 20;
const FAIL_LOGIN_EVERY: u64 = 30;
/// The lifetime of the mock's tokens. With the default 60 s refresh margin a token is
/// refreshed at half its lifetime, about 4 s, so refreshes happen between revocations.
const TOKEN_LIFETIME: Duration = Duration::from_secs(8);
const PAGE_SIZE: u64 = 4096;
const SERVE_MOCK: &str = "--serve-mock";

type Authenticated = BearerAuth<Client<HttpConnector, ReplayBody<Full<Bytes>>>>;

fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    if arguments.first().map(String::as_str) == Some(SERVE_MOCK) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("failed to build the Tokio runtime of the mock");
        return match runtime.block_on(serve_mock()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("mock: {error}");
                ExitCode::FAILURE
            }
        };
    }
    let seconds = match arguments.first() {
        None => DEFAULT_SECONDS,
        Some(text) => match text.parse::<u64>() {
            Ok(seconds) if seconds > 0 => seconds,
            _ => {
                eprintln!(
                    "error: invalid duration `{text}`; pass the duration in whole seconds, \
                     for example `cargo run --release --example soak -- 600`"
                );
                return ExitCode::from(2);
            }
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("failed to build the Tokio runtime");
    match runtime.block_on(run(Duration::from_secs(seconds))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the mock ResQ API and applies the commands read from standard input until it
/// closes.
async fn serve_mock() -> Result<(), BoxError> {
    let server = MockServer::builder()
        .token_lifetime(TOKEN_LIFETIME)
        .start()
        .await?;
    server.deny_path("/admin/audit");
    let mut stdout = tokio::io::stdout();
    stdout
        .write_all(format!("listening {}\n", server.local_addr()).as_bytes())
        .await?;
    stdout.flush().await?;

    let mut commands = BufReader::new(tokio::io::stdin()).lines();
    while let Some(command) = commands.next_line().await? {
        let reply = match command.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["revoke"] => {
                server.revoke_all_tokens();
                "ok".to_owned()
            }
            ["throttle", count] => {
                let count: usize = count.parse()?;
                let throttled =
                    ScriptedResponse::new(StatusCode::TOO_MANY_REQUESTS).header("retry-after", "0");
                server.respond_next(count, throttled);
                "ok".to_owned()
            }
            ["fail-login"] => {
                server.fail_next_logins(1, StatusCode::SERVICE_UNAVAILABLE);
                "ok".to_owned()
            }
            ["stats"] => format!("{} {}", server.login_attempts(), server.logins()),
            _ => return Err(format!("unknown command `{command}`").into()),
        };
        stdout.write_all(format!("{reply}\n").as_bytes()).await?;
        stdout.flush().await?;
    }
    Ok(())
}

/// The mock in its child process, and the pipes that steer it.
struct MockProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl MockProcess {
    /// Starts this program with `--serve-mock` and returns the process and its address.
    async fn start() -> Result<(MockProcess, String), BoxError> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg(SERVE_MOCK)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().ok_or("the mock's stdin is not piped")?;
        let stdout = child
            .stdout
            .take()
            .ok_or("the mock's stdout is not piped")?;
        let mut process = MockProcess {
            child,
            stdin,
            stdout: BufReader::new(stdout).lines(),
        };
        let line = process.read_line().await?;
        let address = line
            .strip_prefix("listening ")
            .ok_or_else(|| format!("unexpected first line from the mock: `{line}`"))?
            .to_owned();
        Ok((process, address))
    }

    async fn read_line(&mut self) -> Result<String, BoxError> {
        let line = timeout(REQUEST_TIMEOUT, self.stdout.next_line())
            .await
            .map_err(|_| "the mock did not reply within 10 s")??;
        Ok(line.ok_or("the mock exited")?)
    }

    /// Sends one command and returns the reply.
    async fn command(&mut self, command: &str) -> Result<String, BoxError> {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await?;
        self.stdin.flush().await?;
        self.read_line().await
    }

    /// Returns the mock's login attempts and logins.
    async fn logins(&mut self) -> Result<(u64, u64), BoxError> {
        let reply = self.command("stats").await?;
        let mut numbers = reply.split(' ').map(str::parse::<u64>);
        match (numbers.next(), numbers.next()) {
            (Some(Ok(attempts)), Some(Ok(logins))) => Ok((attempts, logins)),
            _ => Err(format!("unexpected stats reply from the mock: `{reply}`").into()),
        }
    }

    fn resident_bytes(&self) -> Option<u64> {
        resident_bytes(&format!("/proc/{}/statm", self.child.id()?))
    }

    /// Closes the mock's standard input, which ends it, and waits up to 10 s for it.
    async fn stop(mut self) -> Result<(), BoxError> {
        drop(self.stdin);
        match timeout(REQUEST_TIMEOUT, self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                if !status.success() {
                    return Err(format!("the mock exited with {status}").into());
                }
                Ok(())
            }
            Err(_) => {
                self.child.kill().await?;
                Err("the mock did not exit within 10 s of its input closing; killed it".into())
            }
        }
    }
}

/// Reads the resident set size from a `statm` file: its second field, in pages of 4 KiB.
fn resident_bytes(path: &str) -> Option<u64> {
    let statm = std::fs::read_to_string(path).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * PAGE_SIZE)
}

fn mebibytes(bytes: Option<u64>) -> String {
    match bytes {
        Some(bytes) => format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0)),
        None => "unknown".to_owned(),
    }
}

/// The outcomes of the requests sent: responses by status and errors by kind.
#[derive(Default)]
struct Tally {
    statuses: BTreeMap<u16, u64>,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn requests(&self) -> u64 {
        self.statuses.values().sum::<u64>() + self.errors.values().sum::<u64>()
    }

    fn statuses(&self) -> String {
        let parts: Vec<String> = self
            .statuses
            .iter()
            .map(|(status, count)| format!("{status}: {count}"))
            .collect();
        parts.join(", ")
    }

    fn errors(&self) -> String {
        if self.errors.is_empty() {
            return "none".to_owned();
        }
        let parts: Vec<String> = self
            .errors
            .iter()
            .map(|(kind, count)| format!("{kind}: {count}"))
            .collect();
        parts.join(", ")
    }
}

fn counters(stats: &AuthStats) -> String {
    format!(
        "logins {}, login failures {}, refreshes {}, replays {}, throttle retries {}",
        stats.logins, stats.login_failures, stats.refreshes, stats.replays, stats.throttle_retries
    )
}

/// Picks the next request: 80% `GET /evidence`, 15% an approval, 5% a denied path.
fn next_request(base: &str, rng: &mut fastrand::Rng) -> Request<Full<Bytes>> {
    let pick = rng.u8(0..100);
    let builder = match pick {
        0..80 => Request::get(format!("{base}/evidence")),
        80..95 => Request::post(format!("{base}/admin/missions/approve"))
            .header("content-type", "application/json"),
        _ => Request::get(format!("{base}/admin/audit")),
    };
    let body = if (80..95).contains(&pick) {
        Full::new(Bytes::from(format!(r#"{{"mission":"m-{}"}}"#, rng.u32(..))))
    } else {
        Full::default()
    };
    builder.body(body).expect("the soak requests are valid")
}

/// Sends requests until `deadline`, one per `REQUEST_INTERVAL` at most, and counts the
/// outcomes in `tally`.
async fn send_until(
    service: Authenticated,
    base: String,
    deadline: Instant,
    tally: Arc<Mutex<Tally>>,
    seed: u64,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut ticks = interval(REQUEST_INTERVAL);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    while Instant::now() < deadline {
        ticks.tick().await;
        let request = next_request(&base, &mut rng);
        let outcome = timeout(REQUEST_TIMEOUT, service.clone().oneshot(request)).await;
        let mut tally = tally.lock().expect("tally lock poisoned");
        match outcome {
            Ok(Ok(response)) => {
                *tally
                    .statuses
                    .entry(response.status().as_u16())
                    .or_default() += 1;
            }
            Ok(Err(error)) => {
                *tally
                    .errors
                    .entry(format!("{:?}", error.kind()))
                    .or_default() += 1;
            }
            Err(_) => {
                *tally
                    .errors
                    .entry("request timeout".to_owned())
                    .or_default() += 1;
            }
        }
    }
}

async fn report(
    elapsed: Duration,
    tally: &Mutex<Tally>,
    cache: &TokenCache,
    mock: &mut MockProcess,
) -> Result<(), BoxError> {
    let (attempts, logins) = mock.logins().await?;
    let tally = tally.lock().expect("tally lock poisoned");
    println!(
        "[{:>4} s] requests {} ({}); errors: {}; {}; mock logins {logins} of {attempts} \
         attempts; resident {} (mock {})",
        elapsed.as_secs(),
        tally.requests(),
        tally.statuses(),
        tally.errors(),
        counters(&cache.stats()),
        mebibytes(resident_bytes("/proc/self/statm")),
        mebibytes(mock.resident_bytes()),
    );
    Ok(())
}

async fn run(duration: Duration) -> Result<(), BoxError> {
    let (mut mock, address) = MockProcess::start().await?;
    let base = format!("http://{address}");
    let login = LoginSource::new(
        Client::builder(TokioExecutor::new()).build_http(),
        base.parse()?,
        Credentials::new(DEFAULT_USERNAME, DEFAULT_PASSWORD),
    );
    let layer = BearerAuthLayer::new(login);
    let cache = layer.cache().clone();
    let service: Authenticated = layer.layer(Client::builder(TokioExecutor::new()).build_http());
    let resident_at_start = resident_bytes("/proc/self/statm");
    println!(
        "soak: {} s against the mock at {base}; {WORKERS} workers, at most one request each \
         per {} ms; resident at start {}",
        duration.as_secs(),
        REQUEST_INTERVAL.as_millis(),
        mebibytes(resident_at_start),
    );

    let started = Instant::now();
    let deadline = started + duration;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let workers: Vec<_> = (0..WORKERS)
        .map(|worker| {
            tokio::spawn(send_until(
                service.clone(),
                base.clone(),
                deadline,
                tally.clone(),
                worker as u64,
            ))
        })
        .collect();

    let mut second = 0;
    while Instant::now() < deadline {
        sleep(Duration::from_secs(1)).await;
        second += 1;
        if second % FAIL_LOGIN_EVERY == 0 {
            mock.command("fail-login").await?;
        }
        if second % REVOKE_EVERY == 0 {
            mock.command("revoke").await?;
        }
        if second % THROTTLE_EVERY == 0 {
            mock.command(&format!("throttle {THROTTLED_REQUESTS}"))
                .await?;
        }
        // The report at the deadline comes after the workers stop.
        if second % REPORT_EVERY == 0 && Instant::now() < deadline {
            report(started.elapsed(), &tally, &cache, &mut mock).await?;
        }
    }
    for worker in workers {
        // Each worker stops at the deadline, after at most one more request.
        timeout(REQUEST_TIMEOUT + REQUEST_INTERVAL, worker).await??;
    }

    report(started.elapsed(), &tally, &cache, &mut mock).await?;
    let (attempts, logins) = mock.logins().await?;
    let resident_at_end = resident_bytes("/proc/self/statm");
    let mock_resident = mock.resident_bytes();
    mock.stop().await?;
    let tally = tally.lock().expect("tally lock poisoned");
    let stats = cache.stats();
    println!(
        "soak finished after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!("requests: {} ({})", tally.requests(), tally.statuses());
    println!("errors by kind: {}", tally.errors());
    println!("layer: {}", counters(&stats));
    println!("mock: {logins} logins of {attempts} attempts");
    println!(
        "resident memory: {} at start, {} at end (mock process: {})",
        mebibytes(resident_at_start),
        mebibytes(resident_at_end),
        mebibytes(mock_resident),
    );
    Ok(())
}
