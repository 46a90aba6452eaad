//! The HTTP SERVER span of every request, when spans are exported (see
//! `aula_eventlog::trace`): named `{method} {route}` and carrying the HTTP semantic
//! conventions' attributes (`http.request.method`, `url.path`, `url.scheme`,
//! `http.route`, `http.response.status_code`, `server.address`, `server.port`,
//! `client.address`, `network.peer.address`, `user_agent.original`,
//! `network.protocol.version`); status `ERROR` on a 5xx answer. It continues the
//! caller's W3C trace context (`traceparent`, `tracestate` headers), read by the
//! OpenTelemetry SDK's standard propagator. Every other span of the request (`graphql`,
//! `command`, ...) is below it.
//!
//! Without an exporter the middleware only passes the request on.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, Version};
use axum::middleware::Next;
use axum::response::Response;
use tracing::field::Empty;
use tracing::Instrument as _;

use crate::client_address::client_address;
use crate::state::AppState;

pub(crate) async fn server_span(
    State(app): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if !aula_eventlog::trace::enabled() {
        return next.run(request).await;
    }
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let name = match &route {
        Some(route) => format!("{method} {route}"),
        None => method.clone(),
    };
    let headers = request.headers();
    let span = tracing::info_span!(
        "http.request",
        otel.kind = "server",
        otel.name = %name,
        "http.request.method" = %method,
        "url.path" = request.uri().path(),
        "url.scheme" = "http",
        "http.route" = Empty,
        "server.address" = Empty,
        "server.port" = Empty,
        "client.address" = Empty,
        "network.peer.address" = Empty,
        "network.peer.port" = Empty,
        "user_agent.original" = Empty,
        "network.protocol.name" = "http",
        "network.protocol.version" = protocol_version(request.version()),
        "http.response.status_code" = Empty,
        "error.type" = Empty,
        otel.status_code = Empty,
    );
    if let Some(route) = &route {
        span.record("http.route", route.as_str());
    }
    if let Some((host, port)) = server_address(headers) {
        span.record("server.address", host.as_str());
        if let Some(port) = port {
            span.record("server.port", port);
        }
    }
    if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>() {
        let client = client_address(peer.ip(), headers, &app.config.server.trusted_proxies);
        span.record("client.address", tracing::field::display(client));
        span.record(
            "network.peer.address",
            tracing::field::display(peer.ip().to_canonical()),
        );
        span.record("network.peer.port", peer.port());
    }
    if let Some(agent) = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        span.record("user_agent.original", agent);
    }
    if let Some(traceparent) = headers.get("traceparent").and_then(|v| v.to_str().ok()) {
        aula_eventlog::trace::TraceContext {
            traceparent: traceparent.to_owned(),
            tracestate: headers
                .get("tracestate")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        }
        .adopt(&span);
    }
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        // Semantic conventions: 5xx is the server's failure, 4xx the client's.
        span.record("error.type", status.as_str());
        span.record("otel.status_code", "ERROR");
    }
    response
}

/// `1.1`, `2`, ... as `network.protocol.version` has it.
fn protocol_version(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// Host and port the client addressed (the `Host` header), as `server.address` and
/// `server.port` have them.
fn server_address(headers: &HeaderMap) -> Option<(String, Option<u16>)> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let authority: axum::http::uri::Authority = host.parse().ok()?;
    let name = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    Some((name.to_owned(), authority.port_u16()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_header_names_the_server() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(
            server_address(&headers),
            Some(("127.0.0.1".into(), Some(8080)))
        );
        headers.insert(header::HOST, "[::1]:80".parse().unwrap());
        assert_eq!(server_address(&headers), Some(("::1".into(), Some(80))));
        headers.insert(header::HOST, "aula.example.org".parse().unwrap());
        assert_eq!(
            server_address(&headers),
            Some(("aula.example.org".into(), None))
        );
    }
}
