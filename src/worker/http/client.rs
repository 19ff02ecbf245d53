//! One logical webhook call: signed, carrying the idempotency key, retried with exponential
//! backoff and full jitter on 429, 5xx (except 501) and connection errors, honouring
//! `Retry-After`, all within the connector's timeout.

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode, header};
use url::Url;

use super::sign::{IDEMPOTENCY_HEADER, SIGNATURE_HEADER, sign};
use crate::worker::WorkerError;

/// Largest response body read (inline export data included).
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// A response that is not worth retrying (any status but 429 and retryable 5xx).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    /// Location header, for 202 answers that name their status URL there.
    pub location: Option<String>,
    /// Retry-After, when the processor sent one.
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
}

/// Retry pacing.
#[derive(Clone, Debug)]
pub struct Backoff {
    /// Upper bound of the first wait (full jitter: the wait is uniform in [0, bound]).
    pub base: Duration,
    /// Largest bound.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The wait before retry `n` (from 1): uniform in [0, min(cap, base * 2^(n-1))].
    pub fn wait(&self, n: u32) -> Duration {
        let bound = self
            .base
            .saturating_mul(1u32 << (n.saturating_sub(1)).min(16))
            .min(self.cap);
        let nanos = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(random_u64() % (nanos + 1))
    }
}

/// A fresh random number from the standard library's per-instance random hasher keys (good
/// enough for jitter; no extra dependency).
fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// Makes the calls of one worker run.
pub struct Caller {
    client: reqwest::Client,
    secret: Vec<u8>,
    bearer: Option<String>,
    key: String,
    /// Budget of one logical call, retries included (the connector's `timeout`).
    timeout: Duration,
    backoff: Backoff,
    /// HTTP requests made so far (for the evidence).
    pub calls: u32,
}

impl Caller {
    pub fn new(
        secret: &str,
        bearer: Option<&str>,
        key: String,
        timeout: Duration,
        backoff: Backoff,
    ) -> Result<Self, WorkerError> {
        let client = reqwest::Client::builder()
            // A redirect could carry the signature and token to another host: refuse them.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("privacy-operator/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(timeout)
            // Downloads have no overall limit (they may be large) but must keep moving.
            .read_timeout(timeout)
            .build()
            .map_err(|e| WorkerError::new("InvalidTask", format!("HTTP client: {e}")))?;
        Ok(Caller {
            client,
            secret: secret.as_bytes().to_vec(),
            bearer: bearer.map(str::to_string),
            key,
            timeout,
            backoff,
            calls: 0,
        })
    }

    /// The idempotency key every call carries.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Sends a signed request (a POST with `body`, or a GET when `body` is `None`), retrying
    /// transient failures until the timeout. `what` names the call in messages.
    pub async fn send(
        &mut self,
        method: Method,
        url: &Url,
        body: Option<&[u8]>,
        what: &str,
    ) -> Result<Reply, WorkerError> {
        let deadline = Instant::now() + self.timeout;
        let mut retries = 0u32;
        // The most telling failure so far: a status the processor sent beats a later attempt
        // that merely ran out of the remaining time.
        let mut seen_status: Option<(StatusCode, Option<Duration>)> = None;
        loop {
            self.calls += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let (failure, retry_after) = match self.once(&method, url, body, remaining).await {
                Ok(Attempt::Done(reply)) => return Ok(reply),
                Ok(Attempt::Retry {
                    status,
                    retry_after,
                }) => {
                    seen_status = Some((status, retry_after));
                    (Failure::Status(status), retry_after)
                }
                Err(Failure::TooLarge) => {
                    return Err(Failure::TooLarge.into_error(what, self.calls, self.timeout, None));
                }
                Err(e) => (e, None),
            };
            retries += 1;
            // Never sooner than the processor asked, nor than the backoff (a `Retry-After: 0`
            // must not turn into a busy loop).
            let backoff = self.backoff.wait(retries);
            let wait = retry_after.map_or(backoff, |asked| asked.max(backoff));
            if Instant::now() + wait >= deadline {
                let (failure, retry_after) = match (failure, seen_status) {
                    (Failure::Timeout, Some((status, after))) => (Failure::Status(status), after),
                    (f, _) => (f, retry_after),
                };
                return Err(failure.into_error(what, self.calls, self.timeout, retry_after));
            }
            tracing::debug!(
                call = what,
                retry = retries,
                wait_ms = wait.as_millis() as u64,
                "retrying webhook call"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// A signed GET whose body is streamed by the caller (an export download on the
    /// processor's own origin). One attempt: the planner retries a failed run.
    pub async fn get_stream(&mut self, url: &Url) -> Result<reqwest::Response, WorkerError> {
        self.calls += 1;
        let now = jiff::Timestamp::now().as_second();
        let mut req = self
            .client
            .get(url.clone())
            .header(SIGNATURE_HEADER, sign(&self.secret, now, b""))
            .header(IDEMPOTENCY_HEADER, &self.key);
        if let Some(token) = &self.bearer {
            req = req.bearer_auth(token);
        }
        download_response(req.send().await).await
    }

    /// A plain GET (a presigned URL on another origin): no signature, no token.
    pub async fn get_plain(&mut self, url: &Url) -> Result<reqwest::Response, WorkerError> {
        self.calls += 1;
        download_response(self.client.get(url.clone()).send().await).await
    }

    async fn once(
        &self,
        method: &Method,
        url: &Url,
        body: Option<&[u8]>,
        remaining: Duration,
    ) -> Result<Attempt, Failure> {
        if remaining.is_zero() {
            return Err(Failure::Timeout);
        }
        let bytes = body.unwrap_or_default();
        let now = jiff::Timestamp::now().as_second();
        let mut req = self
            .client
            .request(method.clone(), url.clone())
            .timeout(remaining)
            .header(SIGNATURE_HEADER, sign(&self.secret, now, bytes))
            .header(IDEMPOTENCY_HEADER, &self.key)
            .header(header::ACCEPT, "application/json");
        if let Some(token) = &self.bearer {
            req = req.bearer_auth(token);
        }
        if body.is_some() {
            req = req
                .header(header::CONTENT_TYPE, "application/json")
                .body(bytes.to_vec());
        }
        let resp = req.send().await.map_err(Failure::from_reqwest)?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        if status == StatusCode::TOO_MANY_REQUESTS
            || (status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED)
        {
            return Ok(Attempt::Retry {
                status,
                retry_after,
            });
        }
        let location = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = read_limited(resp).await?;
        Ok(Attempt::Done(Reply {
            status,
            location,
            retry_after,
            body,
        }))
    }
}

enum Attempt {
    Done(Reply),
    Retry {
        status: StatusCode,
        retry_after: Option<Duration>,
    },
}

/// A transient failure of one attempt.
#[derive(Debug)]
enum Failure {
    Status(StatusCode),
    Timeout,
    Connect(String),
    TooLarge,
}

impl Failure {
    fn from_reqwest(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            Failure::Timeout
        } else {
            // The URL is left out: a status URL is the processor's and may say more than
            // it should; what the call was is in the message already.
            Failure::Connect(chain(e))
        }
    }

    fn into_error(
        self,
        what: &str,
        calls: u32,
        timeout: Duration,
        retry_after: Option<Duration>,
    ) -> WorkerError {
        let within = format!(
            "after {calls} attempt(s) within the connector timeout of {}s",
            timeout.as_secs()
        );
        match self {
            Failure::Status(StatusCode::TOO_MANY_REQUESTS) => WorkerError::new(
                "RateLimited",
                format!(
                    "{what}: the processor kept answering 429 Too Many Requests {within}{}",
                    retry_after.map_or(String::new(), |d| format!(
                        " (it asked to wait {}s)",
                        d.as_secs()
                    ))
                ),
            ),
            Failure::Status(s) => WorkerError::new(
                "ProcessorUnavailable",
                format!("{what}: the processor answered {s} {within}"),
            ),
            Failure::Timeout => WorkerError::new(
                "ProcessorUnreachable",
                format!("{what}: no answer {within}"),
            ),
            Failure::Connect(e) => WorkerError::new(
                "ProcessorUnreachable",
                format!("{what}: cannot reach the processor ({e}) {within}"),
            ),
            Failure::TooLarge => WorkerError::new(
                "ProcessorError",
                format!("{what}: the answer is larger than {MAX_BODY} bytes"),
            ),
        }
    }
}

/// An error with its causes ("error sending request: … connection refused"), without the URL.
pub fn chain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

async fn download_response(
    r: Result<reqwest::Response, reqwest::Error>,
) -> Result<reqwest::Response, WorkerError> {
    let resp =
        r.map_err(|e| WorkerError::new("ProcessorUnreachable", format!("download: {}", chain(e))))?;
    let s = resp.status();
    if !s.is_success() {
        let reason = match s {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "AuthenticationFailed",
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                "ProcessorUnavailable"
            }
            _ => "ProcessorError",
        };
        return Err(WorkerError::new(
            reason,
            format!("download: the processor answered {s}"),
        ));
    }
    Ok(resp)
}

async fn read_limited(mut resp: reqwest::Response) -> Result<Vec<u8>, Failure> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(Failure::from_reqwest)? {
        if out.len() + chunk.len() > MAX_BODY {
            return Err(Failure::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// `Retry-After`: delay-seconds or an HTTP-date (RFC 9110 §10.2.3). A date in the past is no
/// wait; anything unparsable is ignored (the backoff applies).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = jiff::fmt::rfc2822::parse(v).ok()?.timestamp();
    let wait = at.duration_since(jiff::Timestamp::now());
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_below_a_doubling_capped_bound() {
        let b = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_millis(1000),
        };
        for n in 1..40 {
            let bound = Duration::from_millis(100 * (1u64 << (n - 1).min(16))).min(b.cap);
            for _ in 0..20 {
                assert!(b.wait(n) <= bound);
            }
        }
        let zero = Backoff {
            base: Duration::ZERO,
            cap: Duration::ZERO,
        };
        assert_eq!(zero.wait(3), Duration::ZERO);
        // Jitter: not every wait is the same.
        let waits: std::collections::BTreeSet<_> = (0..50).map(|_| b.wait(4)).collect();
        assert!(waits.len() > 1);
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        let later = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(120);
        let text = jiff::fmt::rfc2822::to_string(&later.to_zoned(jiff::tz::TimeZone::UTC)).unwrap();
        let d = parse_retry_after(&text).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
