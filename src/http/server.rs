//! The connection loop of calsync's HTTP server, with the limits an
//! internet-facing service needs.
//!
//! `axum::serve` runs hyper without a timer (so hyper's header-read timeout
//! is off), without a connection cap and without an idle timeout: a client
//! that trickles its headers, or opens connections and says nothing, holds
//! them for ever. Here every connection is served by hyper-util's builder
//! with a timer, under a semaphore (the cap: at the cap, calsync stops
//! accepting and new connections wait in the kernel's backlog), and watched
//! for idleness; every request runs under a deadline (tower-http).

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1::Builder;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// The server's limits. Every one is configurable (`calsync serve --help`,
/// `[server]` in `calsync.example.toml`); the defaults are safe for a
/// service on the internet behind nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// From the moment a connection waits for a request until its headers
    /// are complete (hyper's header-read timer: also the longest a
    /// kept-alive connection may wait for its next request).
    pub header_read_timeout: Duration,
    /// A whole request: reading its body, handling it, answering (503).
    pub request_timeout: Duration,
    /// A connection with no request in flight and none started for this
    /// long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once; past it calsync stops accepting.
    pub max_connections: usize,
    /// Largest body of the API and admin endpoints (413 above). Webhooks
    /// have their own limit (`webhook_body_limit`).
    pub api_body_limit: usize,
    /// How often the database gauges of `/metrics` are read (one query);
    /// scrapes never read the database.
    pub metrics_refresh: Duration,
}

pub mod defaults {
    use std::time::Duration;
    pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    pub const MAX_CONNECTIONS: usize = 1024;
    pub const API_BODY_LIMIT: usize = 256 * 1024;
    pub const METRICS_REFRESH: Duration = Duration::from_secs(5);
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_read_timeout: defaults::HEADER_READ_TIMEOUT,
            request_timeout: defaults::REQUEST_TIMEOUT,
            idle_timeout: defaults::IDLE_TIMEOUT,
            max_connections: defaults::MAX_CONNECTIONS,
            api_body_limit: defaults::API_BODY_LIMIT,
            metrics_refresh: defaults::METRICS_REFRESH,
        }
    }
}

impl ServerLimits {
    /// Refuses limits that would switch a protection off or serve nothing.
    pub fn validate(self) -> Result<Self, String> {
        for (name, d) in [
            ("header_read_timeout", self.header_read_timeout),
            ("request_timeout", self.request_timeout),
            ("idle_timeout", self.idle_timeout),
            ("metrics_refresh", self.metrics_refresh),
        ] {
            if d.is_zero() {
                return Err(format!("{name} must be more than 0"));
            }
        }
        // Bounded so shutdown can wait for every slot at once.
        if !(1..=1_000_000).contains(&self.max_connections) {
            return Err("max_connections must be 1..=1000000".into());
        }
        if self.api_body_limit < 1024 {
            return Err("api_body_limit must be at least 1024 bytes".into());
        }
        Ok(self)
    }

    /// The request deadline around a router (503 when it passes: the
    /// request was not completed and may be retried).
    pub fn apply(&self, router: Router) -> Router {
        router.layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            self.request_timeout,
        ))
    }
}

/// When a connection last had a request, and how many are in flight.
struct Activity {
    in_flight: AtomicUsize,
    last: Mutex<Instant>,
}

impl Activity {
    fn touch(&self) {
        if let Ok(mut last) = self.last.lock() {
            *last = Instant::now();
        }
    }

    /// When the connection becomes idle for good, as things stand.
    fn idle_deadline(&self, idle: Duration) -> Instant {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Instant::now() + idle;
        }
        self.last
            .lock()
            .map(|last| *last + idle)
            .unwrap_or_else(|_| Instant::now())
    }
}

/// Ends a request's stay in flight, also when its future is dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.touch();
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves `router` on `listener` under `limits` until `shutdown` completes,
/// then lets in-flight requests finish and closes idle connections.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = limits.apply(router);
    // HTTP/1.1 only, as axum::serve without its `http2` feature served.
    let mut builder = Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let stop = CancellationToken::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off
                    // instead of spinning on the error.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let router = router.clone();
        let builder = builder.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            connection(stream, router, &builder, limits.idle_timeout, stop).await;
            drop(permit);
        });
    }
    drop(listener);
    stop.cancel();
    // Every connection holds a slot until it is done.
    // `validate` bounds max_connections far below u32::MAX.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
    Ok(())
}

async fn connection(
    stream: tokio::net::TcpStream,
    router: Router,
    builder: &Builder,
    idle_timeout: Duration,
    stop: CancellationToken,
) {
    let activity = Arc::new(Activity {
        in_flight: AtomicUsize::new(0),
        last: Mutex::new(Instant::now()),
    });
    let seen = activity.clone();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let guard = InFlight::start(&seen);
        let router = router.clone();
        async move {
            let response = router.oneshot(request.map(Body::new)).await;
            drop(guard);
            response
        }
    });
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let mut closing = false;
    loop {
        let idle_at = activity.idle_deadline(idle_timeout);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.cancelled(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = tokio::time::sleep_until(idle_at), if !closing => {
                if activity.idle_deadline(idle_timeout) <= Instant::now() {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_that_switch_a_protection_off_are_refused() {
        assert!(ServerLimits::default().validate().is_ok());
        let zero = ServerLimits {
            header_read_timeout: Duration::ZERO,
            ..Default::default()
        };
        assert!(zero.validate().is_err());
        let none = ServerLimits {
            max_connections: 0,
            ..Default::default()
        };
        assert!(none.validate().is_err());
        let tiny = ServerLimits {
            api_body_limit: 10,
            ..Default::default()
        };
        assert!(tiny.validate().is_err());
    }
}
