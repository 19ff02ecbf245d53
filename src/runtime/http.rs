//! The probe and metrics endpoints: two small HTTP/1.1 servers (hyper), one on the health
//! address (`/healthz`, `/readyz`) and one on the metrics address (`/metrics`), as the chart's
//! probes and Service expect.
//!
//! Readiness: without leader election, `/readyz` answers 200 once the controller's request
//! cache has synced (`controller::Config::synced`), so a ready replica has seen every request.
//! With leader election it answers 200 from the first successful Lease round: standbys hold no
//! caches and must be ready too, or a rolling update with `maxUnavailable: 0` would never
//! finish. It is a flag that `run` sets.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{Error, Result};

/// What the probes report.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
}

impl Health {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// Content type of the OpenMetrics text that prometheus-client writes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds an address, with an error that names it.
pub async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        Error::Config(format!(
            "cannot listen on {addr} for the {what} endpoint: {e}"
        ))
    })
}

/// Serves `/healthz` and `/readyz` until `stop` turns true.
pub fn serve_health(
    listener: TcpListener,
    health: Arc<Health>,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    serve(
        listener,
        Arc::new(move |method: &Method, path: &str| health_route(&health, method, path)),
        stop,
    )
}

/// Serves `/metrics` until `stop` turns true.
pub fn serve_metrics(listener: TcpListener, stop: watch::Receiver<bool>) -> JoinHandle<()> {
    serve(listener, Arc::new(metrics_route), stop)
}

type Reply = (StatusCode, &'static str, String);
type Route = Arc<dyn Fn(&Method, &str) -> Reply + Send + Sync>;

fn health_route(health: &Health, method: &Method, path: &str) -> Reply {
    const TEXT: &str = "text/plain; charset=utf-8";
    if method != Method::GET && method != Method::HEAD {
        return (StatusCode::METHOD_NOT_ALLOWED, TEXT, "GET only\n".into());
    }
    match path {
        "/healthz" | "/livez" => (StatusCode::OK, TEXT, "ok\n".into()),
        "/readyz" if health.is_ready() => (StatusCode::OK, TEXT, "ok\n".into()),
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            "not ready: the API server has not answered yet\n".into(),
        ),
        _ => (StatusCode::NOT_FOUND, TEXT, "not found\n".into()),
    }
}

fn metrics_route(method: &Method, path: &str) -> Reply {
    const TEXT: &str = "text/plain; charset=utf-8";
    if method != Method::GET && method != Method::HEAD {
        return (StatusCode::METHOD_NOT_ALLOWED, TEXT, "GET only\n".into());
    }
    match path {
        "/metrics" => (
            StatusCode::OK,
            OPENMETRICS,
            super::metrics::global().encode(),
        ),
        _ => (StatusCode::NOT_FOUND, TEXT, "not found\n".into()),
    }
}

fn serve(listener: TcpListener, route: Route, stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let stop = super::stopped(stop);
        tokio::pin!(stop);
        loop {
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = &mut stop => return,
            };
            let route = route.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (status, content_type, body) = route(req.method(), req.uri().path());
                    let reply = Response::builder()
                        .status(status)
                        .header(header::CONTENT_TYPE, content_type)
                        .body(Full::new(Bytes::from(body)));
                    async move {
                        Ok::<_, Infallible>(reply.unwrap_or_else(|_| {
                            let mut r = Response::new(Full::new(Bytes::new()));
                            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                            r
                        }))
                    }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    // A slow client must not pin a connection (and its task) forever.
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "probe/metrics connection ended with an error");
                }
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_the_flag() {
        let h = Health::default();
        assert_eq!(
            health_route(&h, &Method::GET, "/readyz").0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(health_route(&h, &Method::GET, "/healthz").0, StatusCode::OK);
        h.set_ready(true);
        assert_eq!(health_route(&h, &Method::GET, "/readyz").0, StatusCode::OK);
        assert_eq!(
            health_route(&h, &Method::GET, "/nope").0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            health_route(&h, &Method::POST, "/healthz").0,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
