//! The metrics endpoint: HTTP/1.1 on tokio (hyper). `GET /metrics` is one scrape,
//! read and encoded on tokio's blocking pool (map reads are syscalls, and SYN cookies'
//! counter is an `nft` run); `GET /` points there; anything else is 404.

use std::{convert::Infallible, future::Future, sync::Arc, time::Duration};

use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header,
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::watch, task::JoinSet};

use super::{Exporter, render};

/// Prometheus' classic text format, which `promtool check metrics` reads.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A client gets this long to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Scrapes under way get this long to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

const INDEX: &str = "<!DOCTYPE html>\n<html><head><title>floodgate</title></head><body>\
<h1>floodgate</h1><p><a href=\"/metrics\">Metrics</a></p></body></html>\n";

/// Serves the metrics on `listener` until `shutdown` completes; then stops accepting,
/// lets scrapes under way finish (at most [`SHUTDOWN_GRACE`]) and returns.
pub async fn serve(listener: TcpListener, exporter: Arc<Exporter>, shutdown: impl Future<Output = ()>) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: pass, and try again.
                        tracing::warn!(error = %e, "metrics: accepting a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let exporter = exporter.clone();
                let mut stop = stop_rx.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| handle(exporter.clone(), req));
                    let conn = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_TIMEOUT)
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = stop.changed() => {
                            // Closes an idle keep-alive connection at once, a busy one
                            // after its response.
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    let _ = stop_tx.send(true);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        connections.abort_all();
    }
}

fn response(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_str(content_type).expect("ASCII"));
    r
}

async fn handle(
    exporter: Arc<Exporter>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    if path != "/metrics" && path != "/" {
        return Ok(response(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "not found: see /metrics\n"));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = response(StatusCode::METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", "GET only\n");
        r.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return Ok(r);
    }
    if path == "/" {
        return Ok(response(StatusCode::OK, "text/html; charset=utf-8", INDEX));
    }
    Ok(match tokio::task::spawn_blocking(move || render(&exporter)).await {
        Ok(text) => response(StatusCode::OK, CONTENT_TYPE, text),
        Err(e) => {
            tracing::error!(error = %e, "metrics: the scrape failed");
            response(StatusCode::INTERNAL_SERVER_ERROR, "text/plain; charset=utf-8", "scrape failed\n")
        }
    })
}
