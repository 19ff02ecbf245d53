//! Watch streams: initial state (synthetic ADDED / sendInitialEvents), resume from a
//! resourceVersion through the bounded history, selectors (objects that stop matching become
//! DELETED), periodic and initial-events-end bookmarks, timeouts, 410 Gone, and fault-driven
//! drops. Each stream is a task writing newline-delimited JSON events into a channel.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::faults::Faults;
use crate::ops::{Core, for_version};
use crate::resource::ResourceInfo;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::store::{EventType, HistoryEvent};

/// Server default when the client sets no `timeoutSeconds` (kube-apiserver picks 30–60 min).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);
/// Bounded per-stream buffer: a client that stops reading stalls only its own stream.
const CHANNEL_DEPTH: usize = 64;

/// How event objects are rendered (full objects, PartialObjectMetadata, or Table rows).
pub type Render = Arc<dyn Fn(&Value, bool) -> Value + Send + Sync>;

/// Parameters of one watch request.
#[derive(Clone, Default)]
pub struct WatchRequest {
    pub namespace: Option<String>,
    pub resource_version: Option<String>,
    pub send_initial_events: Option<bool>,
    pub allow_bookmarks: bool,
    pub timeout: Option<Duration>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    /// Replaces the object of each ADDED/MODIFIED/DELETED event; the flag is true for the
    /// first event of the stream (Table watches send column definitions once).
    pub render: Option<Render>,
}

/// Signals every watch listens to.
#[derive(Clone)]
pub struct WatchContext {
    pub core: Arc<Core>,
    pub faults: Arc<Faults>,
    pub shutdown: watch::Receiver<bool>,
    pub bookmark_interval: Duration,
}

/// Validates the request and starts the stream task; the receiver yields encoded lines.
pub fn start(
    ctx: WatchContext,
    info: Arc<ResourceInfo>,
    req: WatchRequest,
) -> Result<mpsc::Receiver<Bytes>, ApiError> {
    let start_rv = match req.resource_version.as_deref() {
        None | Some("") | Some("0") => None,
        Some(s) => Some(
            s.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s:?}")))?,
        ),
    };
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    tokio::spawn(run(ctx, info, req, start_rv, tx));
    Ok(rx)
}

struct Stream {
    info: Arc<ResourceInfo>,
    req: WatchRequest,
    tx: mpsc::Sender<Bytes>,
    sent: u64,
    drop_after: Option<u64>,
}

impl Stream {
    fn visible(&self, obj: &Value) -> bool {
        if let Some(ns) = &self.req.namespace
            && obj.pointer("/metadata/namespace").and_then(Value::as_str) != Some(ns.as_str())
        {
            return false;
        }
        self.req.labels.matches(obj) && self.req.fields.matches(obj)
    }

    /// Maps a history event through the selectors: an object leaving the selection is
    /// DELETED for this watcher, one entering it is ADDED.
    fn translate(&self, ev: &HistoryEvent) -> Option<EventType> {
        let now = self.visible(&ev.object);
        match ev.kind {
            EventType::Added => now.then_some(EventType::Added),
            EventType::Deleted => {
                let before = ev.prev.as_deref().map(|p| self.visible(p)).unwrap_or(now);
                before.then_some(EventType::Deleted)
            }
            EventType::Modified => {
                let before = ev.prev.as_deref().is_some_and(|p| self.visible(p));
                match (before, now) {
                    (true, true) => Some(EventType::Modified),
                    (false, true) => Some(EventType::Added),
                    (true, false) => Some(EventType::Deleted),
                    (false, false) => None,
                }
            }
        }
    }

    /// Sends one event; false when the stream must end (client gone or drop fault).
    async fn send_object(&mut self, kind: &str, obj: Arc<Value>) -> bool {
        let obj = for_version(&self.info, obj);
        let line = match &self.req.render {
            Some(render) => encode(kind, &render(&obj, self.sent == 0)),
            None => encode(kind, &obj),
        };
        if self.tx.send(line).await.is_err() {
            return false;
        }
        self.sent += 1;
        self.drop_after.is_none_or(|n| self.sent < n)
    }

    async fn send_bookmark(&mut self, rv: u64, initial_end: bool) -> bool {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = json!({"kind": self.info.kind, "apiVersion": self.info.api_version(), "metadata": meta});
        self.tx.send(encode("BOOKMARK", &obj)).await.is_ok()
    }

    async fn send_gone(&mut self, requested: u64, oldest: u64) {
        let status =
            ApiError::gone(format!("too old resource version: {requested} ({oldest})")).to_status();
        let _ = self.tx.send(encode("ERROR", &status)).await;
    }
}

fn encode(kind: &str, obj: &Value) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"object\":");
    // Serializing a `Value` into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, obj);
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

async fn run(
    ctx: WatchContext,
    info: Arc<ResourceInfo>,
    req: WatchRequest,
    start_rv: Option<u64>,
    tx: mpsc::Sender<Bytes>,
) {
    let gr = info.group_resource_key();
    let mut drops = ctx.faults.subscribe_drops();
    drops.borrow_and_update();
    let mut shutdown = ctx.shutdown.clone();
    if *shutdown.borrow_and_update() {
        return;
    }
    let timeout = req.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let deadline = tokio::time::Instant::now() + timeout;
    let drop_after = ctx.faults.drop_after_events();
    let send_initial = req.send_initial_events.unwrap_or(start_rv.is_none());
    let mut s = Stream {
        info,
        req,
        tx,
        sent: 0,
        drop_after,
    };

    // Initial state (synthetic ADDED) or a resume point, read atomically with the RV.
    let start = {
        let state = ctx.core.store.lock();
        let Some(changes) = state.subscribe(&gr) else {
            return;
        };
        let current = state.current_rv();
        if send_initial {
            let ns = s.req.namespace.as_deref();
            let objs: Vec<Arc<Value>> = state
                .list(&gr, ns, None)
                .into_iter()
                .filter(|o| s.visible(o))
                .collect();
            Ok((objs, current, changes))
        } else {
            let rv = start_rv.unwrap_or(current);
            match state.check_resumable(&gr, rv) {
                Ok(()) => Ok((Vec::new(), rv, changes)),
                Err(e) => Err((rv, e.oldest)),
            }
        }
    };
    let (initial, mut pos, mut changes) = match start {
        Ok(s) => s,
        Err((rv, oldest)) => {
            s.send_gone(rv, oldest).await;
            return;
        }
    };
    for obj in initial {
        if !s.send_object("ADDED", obj).await {
            return;
        }
    }
    if s.req.send_initial_events == Some(true)
        && s.req.allow_bookmarks
        && !s.send_bookmark(pos, true).await
    {
        return;
    }

    let mut bookmarks = tokio::time::interval_at(
        tokio::time::Instant::now() + ctx.bookmark_interval,
        ctx.bookmark_interval,
    );
    bookmarks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut safe_rv = pos;
    loop {
        changes.borrow_and_update();
        let batch = {
            let state = ctx.core.store.lock();
            let current = state.current_rv();
            match state.events_since(&gr, pos) {
                Ok(events) => Ok((events, current)),
                Err(e) => Err(e),
            }
        };
        let (events, current) = match batch {
            Ok(b) => b,
            Err(e) => {
                s.send_gone(pos, e.oldest).await;
                return;
            }
        };
        for ev in events {
            pos = ev.rv;
            if let Some(kind) = s.translate(&ev)
                && !s.send_object(kind.as_str(), ev.object.clone()).await
            {
                return;
            }
        }
        // Every event of this resource up to `current` has been delivered.
        safe_rv = safe_rv.max(current).max(pos);
        pos = pos.max(safe_rv);
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = bookmarks.tick(), if s.req.allow_bookmarks => {
                if !s.send_bookmark(safe_rv, false).await {
                    return;
                }
            }
            _ = tokio::time::sleep_until(deadline) => return,
            _ = shutdown.changed() => return,
            _ = drops.changed() => return,
            _ = s.tx.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{Subresource, WriteParams};

    fn ctx(core: Arc<Core>) -> (WatchContext, watch::Sender<bool>) {
        let (tx, rx) = watch::channel(false);
        let faults = Arc::new(Faults::new(core.clone()));
        (
            WatchContext {
                core,
                faults,
                shutdown: rx,
                bookmark_interval: Duration::from_millis(50),
            },
            tx,
        )
    }

    async fn next(rx: &mut mpsc::Receiver<Bytes>) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        serde_json::from_slice(&line).unwrap()
    }

    #[tokio::test]
    async fn initial_events_resume_and_selectors() {
        let core = Arc::new(Core::new(100));
        let info = core.lookup("", "v1", "configmaps").unwrap();
        let p = WriteParams::default();
        core.create(
            &info,
            Some("default"),
            json!({"metadata": {"name": "a", "labels": {"x": "1"}}}),
            &p,
        )
        .unwrap();
        let (c, _sd) = ctx(core.clone());
        let req = WatchRequest {
            labels: LabelSelector::parse("x=1").unwrap(),
            ..Default::default()
        };
        let mut rx = start(c.clone(), info.clone(), req).unwrap();
        assert_eq!(next(&mut rx).await["type"], "ADDED");
        // Relabel so it stops matching: DELETED for this watcher.
        let cur = core.get(&info, "default", "a").unwrap();
        let mut o = (*cur).clone();
        o["metadata"]["labels"]["x"] = json!("2");
        core.update(&info, Some("default"), "a", o, &p, Subresource::Main)
            .unwrap();
        let ev = next(&mut rx).await;
        assert_eq!(ev["type"], "DELETED");

        // Resume from an old RV after history expiry: ERROR 410.
        core.store.lock().expire_history();
        let req = WatchRequest {
            resource_version: Some("2".into()),
            ..Default::default()
        };
        let mut rx = start(c, info, req).unwrap();
        let ev = next(&mut rx).await;
        assert_eq!(ev["type"], "ERROR");
        assert_eq!(ev["object"]["code"], 410);
        assert_eq!(ev["object"]["reason"], "Expired");
    }

    #[tokio::test]
    async fn bookmarks_and_initial_end() {
        let core = Arc::new(Core::new(100));
        let info = core.lookup("", "v1", "namespaces").unwrap();
        let (c, shutdown) = ctx(core);
        let req = WatchRequest {
            send_initial_events: Some(true),
            allow_bookmarks: true,
            resource_version: Some("".into()),
            ..Default::default()
        };
        let mut rx = start(c, info, req).unwrap();
        for _ in 0..4 {
            assert_eq!(next(&mut rx).await["type"], "ADDED");
        }
        let bm = next(&mut rx).await;
        assert_eq!(bm["type"], "BOOKMARK");
        assert_eq!(
            bm["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
            "true"
        );
        let bm = next(&mut rx).await;
        assert_eq!(bm["type"], "BOOKMARK");
        shutdown.send_replace(true);
        let end = tokio::time::timeout(Duration::from_secs(5), async {
            while rx.recv().await.is_some() {}
        })
        .await;
        assert!(end.is_ok());
    }
}
