//! The HTTP connector: a SaaS or third-party processor reached through the webhook contract
//! (docs/connectors/http-webhook.md).
//!
//! One run makes one signed `POST {baseURL}/{operation}` with the step's idempotency key,
//! retried on transient failures within the connector's timeout. A `completed` answer ends
//! the run with the processor's confirmation as evidence in the manifest. A `pending` answer
//! (202) is polled at its status URL every pollInterval, but only for a short while (at most
//! [`Options::max_polls`] polls within [`Options::confirmation_window`]): a processor may take
//! days, and a Job must not wait that long. Past that the run ends `Pending` with a time to run
//! again; the rerun sends the same idempotency key, so the processor reports on the work it
//! already has instead of doing it twice.
//!
//! Nothing the processor says reaches logs or the manifest unless it is a short token or an
//! evidence field that does not mention the subject.

mod answer;
mod client;
pub mod sign;

use std::time::Duration;

use jiff::Timestamp;
use reqwest::{Method, StatusCode};
use serde_json::json;
use url::Url;

use crate::api::datasystem::HttpConnector;
use crate::plan::jobs::JobStep;
use answer::{Answer, State};
pub use client::Backoff;
use client::{Caller, Reply};

use super::WorkerError;
use super::output::Output;
use super::task::{Confirmation, FileEntry, Manifest, Outcome, TableCount, Task};

/// Version of the webhook body; processors should refuse versions they do not know.
pub const WEBHOOK_VERSION: &str = "privacy-operator.dev/webhook/v1";

/// Limits of one run. Defaults suit production; tests shorten them.
#[derive(Clone, Debug)]
pub struct Options {
    /// Longest a run waits for an asynchronous completion before it ends Pending.
    pub confirmation_window: Duration,
    /// Most status polls in one run.
    pub max_polls: u32,
    /// Replaces the connector's pollInterval (tests: sub-second polls).
    pub poll_interval: Option<Duration>,
    /// Replaces the connector's timeout (tests).
    pub timeout: Option<Duration>,
    pub backoff: Backoff,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            confirmation_window: Duration::from_secs(15 * 60),
            max_polls: 10,
            poll_interval: None,
            timeout: None,
            backoff: Backoff::default(),
        }
    }
}

/// A pending answer is rechecked no sooner than this, whatever the processor asks.
const MIN_RECHECK: Duration = Duration::from_secs(60);

/// The call a step makes: path under the base URL and the operation's extra body fields.
fn operation(step: JobStep) -> Option<(&'static str, Option<&'static str>)> {
    Some(match step {
        JobStep::Export => ("export", None),
        JobStep::SoftDelete => ("erase", Some("soft")),
        JobStep::Purge | JobStep::ThirdPartyPurge => ("erase", Some("purge")),
        JobStep::Restore => ("restore", None),
        JobStep::Rectify => ("rectify", None),
        JobStep::Restrict => ("restrict", None),
        // Steps of other resources (retention, consent) have no webhook call (yet).
        #[allow(unreachable_patterns)]
        _ => return None,
    })
}

/// The request body: deterministic for a step (no send time; that is in the signature), so
/// a processor may check that a replayed idempotency key comes with the same body.
pub fn body(task: &Task) -> Result<serde_json::Value, WorkerError> {
    let (op, mode) = operation(task.step).ok_or_else(|| unsupported(task.step))?;
    let request_id = task
        .request
        .uid
        .clone()
        .unwrap_or_else(|| format!("{}/{}", task.request.namespace, task.request.name));
    let mut v = json!({
        "apiVersion": WEBHOOK_VERSION,
        "operation": op,
        "requestId": request_id,
        "request": {"namespace": task.request.namespace, "name": task.request.name},
        "system": task.system.name,
        "thirdParty": task.system.spec.third_party,
        "subject": {
            "digest": task.request.digest,
            "identifiers": task.identifiers,
        },
    });
    if let Some(mode) = mode {
        v["mode"] = json!(mode);
    }
    if task.step == JobStep::Restrict {
        v["purposes"] = json!(task.purposes);
    }
    if task.step == JobStep::Rectify {
        v["changes"] = json!(task.changes);
    }
    Ok(v)
}

fn unsupported(step: JobStep) -> WorkerError {
    WorkerError::unsupported(format!(
        "the HTTP connector has no webhook call for the {} step",
        step.as_str()
    ))
}

fn std_duration(d: &crate::api::duration::Duration, what: &str) -> Result<Duration, WorkerError> {
    let now = Timestamp::now();
    let end = d
        .after(now)
        .map_err(|e| WorkerError::invalid(format!("{what}: {e}")))?;
    Duration::try_from(end.duration_since(now))
        .map_err(|_| WorkerError::invalid(format!("{what} must not be negative")))
}

/// Resolves a URL the processor gave (status or download) against the base URL. Status URLs
/// must stay on the base URL's origin: the signature and token are sent there.
fn resolve(base: &Url, given: &str, same_origin: bool) -> Result<Url, WorkerError> {
    let url = base.join(given).map_err(|_| {
        WorkerError::new(
            "ProcessorError",
            "the processor gave a URL that does not parse",
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(WorkerError::new(
            "ProcessorError",
            "the processor gave a URL that is not http(s)",
        ));
    }
    if same_origin && url.origin() != base.origin() {
        return Err(WorkerError::new(
            "ProcessorError",
            format!(
                "the processor's status URL is not on {} (the DataSystem's baseURL): refusing to send credentials elsewhere",
                base.origin().ascii_serialization()
            ),
        ));
    }
    Ok(url)
}

/// Runs an HTTP task and fills `manifest`: Succeeded with the confirmation, Pending with a
/// time to run again, or an error (the caller turns it into a Failed manifest).
pub async fn run(
    task: &Task,
    http: &HttpConnector,
    output: &Output,
    options: &Options,
    manifest: &mut Manifest,
) -> Result<(), WorkerError> {
    let secrets = task.webhook.as_ref().ok_or_else(|| {
        WorkerError::invalid("the task has no webhook secrets for the HTTP system")
    })?;
    let base_text = format!("{}/", http.base_url.trim_end_matches('/'));
    let base = Url::parse(&base_text)
        .map_err(|e| WorkerError::invalid(format!("connector.http.baseURL: {e}")))?;
    let (op, _) = operation(task.step).ok_or_else(|| unsupported(task.step))?;
    let endpoint = base
        .join(op)
        .map_err(|e| WorkerError::invalid(format!("connector.http.baseURL: {e}")))?;
    let timeout = match options.timeout {
        Some(t) => t,
        None => std_duration(&http.timeout, "connector.http.timeout")?,
    };
    let poll_interval = match options.poll_interval {
        Some(p) => p,
        None => std_duration(&http.poll_interval, "connector.http.pollInterval")?,
    };
    let key = sign::idempotency_key(&task.request, &task.system.name, task.step);
    let mut caller = Caller::new(
        &secrets.hmac_secret,
        secrets.bearer_token.as_deref(),
        key,
        timeout,
        options.backoff.clone(),
    )?;
    let bytes = serde_json::to_vec(&body(task)?)
        .map_err(|e| WorkerError::invalid(format!("cannot encode the request: {e}")))?;
    let what = format!("POST {op}");
    let reply = caller
        .send(Method::POST, &endpoint, Some(&bytes), &what)
        .await?;
    let mut answer = interpret(&reply, &what, task)?;
    let mut accepted = reply.status == StatusCode::ACCEPTED;
    let mut location = reply.location;
    let mut last_retry_after = reply.retry_after;

    let started = std::time::Instant::now();
    let mut polls = 0u32;
    let mut status_url = None;
    loop {
        let state = answer
            .state(accepted)
            .map_err(|m| WorkerError::new("ProcessorError", format!("{what}: {m}")))?;
        let evidence = confirmation(&answer, &caller, task, state);
        match state {
            State::Completed => {
                return completed(task, &base, &mut caller, answer, evidence, output, manifest)
                    .await;
            }
            State::Failed => {
                manifest.confirmation = Some(evidence);
                let code = answer::error_code(
                    answer.error.as_ref().and_then(|e| e.code.as_deref()),
                    &task.identifiers,
                );
                return Err(WorkerError::new(
                    "ProcessorRejected",
                    format!(
                        "the processor reports the {} as failed{}",
                        task.step.describe(),
                        code.map_or(String::new(), |c| format!(" (code {c})"))
                    ),
                ));
            }
            State::Pending => {}
        }
        if let Some(given) = answer.status_url.as_deref().or(location.as_deref()) {
            status_url = Some(resolve(&base, given, true)?);
        }
        let wait = last_retry_after.unwrap_or(poll_interval).max(poll_interval);
        let elapsed = started.elapsed();
        let Some(url) = status_url
            .clone()
            .filter(|_| polls < options.max_polls && elapsed + wait <= options.confirmation_window)
        else {
            // Waited as long as a run may: end Pending and let the controller run it again.
            let at = Timestamp::now() + wait.max(MIN_RECHECK);
            let at = at.round(jiff::Unit::Second).unwrap_or(at);
            manifest.outcome = Outcome::Pending;
            manifest.reason = Some("AwaitingConfirmation".into());
            manifest.retry_after = Some(at.to_string());
            manifest.confirmation = Some(evidence);
            manifest.message = format!(
                "the processor accepted the {} but has not confirmed it yet ({polls} status check(s) in {}s); check again after {at}",
                task.step.describe(),
                elapsed.as_secs(),
            );
            return Ok(());
        };
        tokio::time::sleep(wait).await;
        polls += 1;
        let what = "GET status";
        let reply = caller.send(Method::GET, &url, None, what).await?;
        if reply.status == StatusCode::NOT_FOUND {
            // The status URL expired or the processor lost it; the retry of this step
            // posts again with the same key, and the processor answers with the state of
            // the work it has under that key.
            return Err(WorkerError::new(
                "ProcessorError",
                "the processor's status URL answered 404 Not Found; the next attempt asks again with the same idempotency key",
            ));
        }
        answer = interpret(&reply, what, task)?;
        accepted = reply.status == StatusCode::ACCEPTED;
        location = None;
        last_retry_after = reply.retry_after;
    }
}

/// Maps a final HTTP answer to the processor's answer or a clear error.
fn interpret(reply: &Reply, what: &str, task: &Task) -> Result<Answer, WorkerError> {
    let s = reply.status;
    if s.is_success() {
        let a = Answer::parse(&reply.body)
            .map_err(|m| WorkerError::new("ProcessorError", format!("{what}: {m}")))?;
        return Ok(a);
    }
    let (reason, hint) = match s {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => (
            "AuthenticationFailed",
            "check the DataSystem's hmacSecretRef and authSecretRef against what the processor expects",
        ),
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED => (
            "Unsupported",
            "the processor does not implement this call of the webhook contract; check baseURL",
        ),
        StatusCode::CONFLICT => (
            "Conflict",
            "the processor reports a conflicting request in progress",
        ),
        s if s.is_redirection() => (
            "ProcessorError",
            "redirects are not followed (they would carry the credentials elsewhere); set baseURL to the final address",
        ),
        _ => (
            "ProcessorRejected",
            "the processor refused the request as sent",
        ),
    };
    let code = Answer::parse(&reply.body).ok().and_then(|a| {
        answer::error_code(
            a.error.as_ref().and_then(|e| e.code.as_deref()),
            &task.identifiers,
        )
    });
    Err(WorkerError::new(
        reason,
        format!(
            "{what}: the processor answered {s}{}; {hint}",
            code.map_or(String::new(), |c| format!(" (code {c})"))
        ),
    ))
}

/// The evidence of an answer, with everything that mentions the subject left out.
fn confirmation(answer: &Answer, caller: &Caller, task: &Task, state: State) -> Confirmation {
    let ids = &task.identifiers;
    let body = answer.confirmation.as_ref();
    let (evidence, dropped) =
        body.map_or_else(Default::default, |c| answer::evidence(&c.evidence, ids));
    if dropped > 0 {
        tracing::warn!(
            system = %task.system.name,
            dropped,
            "evidence fields from the processor were left out of the manifest (too large, badly named or mentioning the subject)"
        );
    }
    let completed_at = body
        .and_then(|c| answer::token(c.completed_at.as_deref(), ids))
        .filter(|t| t.parse::<Timestamp>().is_ok());
    Confirmation {
        idempotency_key: caller.key().to_string(),
        status: match state {
            State::Completed => "completed",
            State::Pending => "pending",
            State::Failed => "failed",
        }
        .into(),
        reference: answer::token(answer.reference.as_deref(), ids),
        confirmation_id: body.and_then(|c| answer::token(c.id.as_deref(), ids)),
        completed_at,
        received_at: Timestamp::now()
            .round(jiff::Unit::Second)
            .map_or_else(|_| Timestamp::now().to_string(), |t| t.to_string()),
        calls: caller.calls,
        evidence,
    }
}

async fn completed(
    task: &Task,
    base: &Url,
    caller: &mut Caller,
    answer: Answer,
    evidence: Confirmation,
    output: &Output,
    manifest: &mut Manifest,
) -> Result<(), WorkerError> {
    for (name, n) in &answer.records {
        if answer::valid_table_name(name) {
            manifest.tables.insert(
                name.clone(),
                TableCount {
                    rows: *n,
                    detached: 0,
                },
            );
        }
    }
    if task.step == JobStep::Export {
        export(base, caller, &answer, output, manifest).await?;
    }
    let id = evidence
        .confirmation_id
        .as_deref()
        .map_or(String::new(), |c| format!(" (confirmation {c})"));
    manifest.message = match task.step {
        JobStep::Export => format!(
            "the processor exported {} record(s) in {} file(s)",
            manifest.files.iter().map(|f| f.records).sum::<u64>(),
            manifest.files.len()
        ),
        step => format!(
            "the processor confirmed the {}{id}; {} record(s) reported",
            step.describe(),
            manifest.total_rows()
        ),
    };
    manifest.confirmation = Some(evidence);
    Ok(())
}

/// Writes an export answer: inline `data` and downloaded `files`, one NDJSON file per table.
async fn export(
    base: &Url,
    caller: &mut Caller,
    answer: &Answer,
    output: &Output,
    manifest: &mut Manifest,
) -> Result<(), WorkerError> {
    let bad_name = |name: &str| {
        WorkerError::new(
            "ProcessorError",
            format!(
                "the processor named a table {:?}: use letters, digits, '_', '-' and '.'",
                name.chars().take(20).collect::<String>()
            ),
        )
    };
    for (name, rows) in &answer.data {
        if !answer::valid_table_name(name) {
            return Err(bad_name(name));
        }
        let mut file = output.ndjson(&format!("{name}.ndjson")).await?;
        let key = file.key().to_string();
        for row in rows {
            let mut line = serde_json::to_vec(row)
                .map_err(|e| WorkerError::new("OutputError", e.to_string()))?;
            line.push(b'\n');
            if let Err(e) = file.write_chunk(&line).await {
                file.abort().await;
                return Err(e);
            }
        }
        let (records, size, sha256) = file.finish().await?;
        push_file(manifest, key, name, records, size, sha256);
    }
    for d in &answer.files {
        if !answer::valid_table_name(&d.name) {
            return Err(bad_name(&d.name));
        }
        if d.format != "ndjson" {
            return Err(WorkerError::new(
                "ProcessorError",
                "the processor offered a file that is not ndjson",
            ));
        }
        let url = resolve(base, &d.url, false)?;
        let same_origin = url.origin() == base.origin();
        let file_name = format!("{}.ndjson", d.name);
        let (key, records, size, sha256) = download(
            caller,
            &url,
            same_origin,
            output,
            &file_name,
            d.sha256.as_deref(),
        )
        .await?;
        push_file(manifest, key, &d.name, records, size, sha256);
    }
    Ok(())
}

fn push_file(
    manifest: &mut Manifest,
    path: String,
    table: &str,
    records: u64,
    size: u64,
    sha256: String,
) {
    manifest.tables.entry(table.to_string()).or_default().rows = records;
    manifest.files.push(FileEntry {
        path,
        table: table.to_string(),
        format: "ndjson".into(),
        records,
        size,
        sha256,
    });
}

/// Streams a download into the output as `file_name`, published only when complete and, if
/// the processor gave one, matching `expected` (SHA-256 of the bytes as downloaded).
/// Credentials go only to the base URL's origin; a presigned URL elsewhere gets a plain GET.
/// Returns the stored key, records, and the stored size and SHA-256 (of the encrypted bytes
/// when the output is encrypted).
async fn download(
    caller: &mut Caller,
    url: &Url,
    same_origin: bool,
    output: &Output,
    file_name: &str,
    expected: Option<&str>,
) -> Result<(String, u64, u64, String), WorkerError> {
    use sha2::Digest;
    let mut resp = if same_origin {
        caller.get_stream(url).await?
    } else {
        caller.get_plain(url).await?
    };
    let mut file = output.ndjson(file_name).await?;
    let key = file.key().to_string();
    let mut plain = sha2::Sha256::new();
    loop {
        let chunk = match resp.chunk().await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => {
                file.abort().await;
                return Err(WorkerError::new(
                    "ProcessorUnreachable",
                    format!("download interrupted: {}", client::chain(e)),
                ));
            }
        };
        plain.update(&chunk);
        if let Err(e) = file.write_chunk(&chunk).await {
            file.abort().await;
            return Err(e);
        }
    }
    let got = hex::encode(plain.finalize());
    if expected.is_some_and(|e| !e.eq_ignore_ascii_case(&got)) {
        file.abort().await;
        return Err(WorkerError::new(
            "ProcessorError",
            format!("the download of {file_name} does not match the sha256 the processor gave"),
        ));
    }
    let (records, size, sha256) = file.finish().await?;
    Ok((key, records, size, sha256))
}

/// Runs an HTTP task with `options` and returns its manifest, like [`super::run_task`] does
/// with the defaults; for tests and tools that need shorter waits.
pub async fn run_task(task: &Task, options: &Options) -> Manifest {
    let mut manifest = Manifest::new(&task.system.name, task.step);
    let result = async {
        task.validate().map_err(WorkerError::invalid)?;
        let output = super::output(task)?;
        let connector = task
            .system
            .spec
            .connector
            .http
            .as_ref()
            .ok_or_else(|| WorkerError::invalid("the system has no connector.http"))?;
        if task.step == JobStep::Export && !task.system.spec.exportable {
            return Err(WorkerError::invalid(
                "the system is marked exportable: false and cannot be exported by the operator",
            ));
        }
        run(task, connector, &output, options, &mut manifest).await
    }
    .await;
    if let Err(e) = result {
        manifest.outcome = Outcome::Failed;
        manifest.reason = Some(e.reason.to_string());
        manifest.message = e.message;
        manifest.tables.clear();
        manifest.files.clear();
    }
    manifest
}
