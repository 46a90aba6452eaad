//! The HTTP edge: routes, the GraphQL handler (body limit, JSON parsing, access token,
//! timeout, request id, error codes), WebSocket subscriptions, health, readiness and
//! metrics (`GET /metrics`, see [`crate::metrics`]).

use std::net::SocketAddr;
use std::time::Duration;

use async_graphql::http::{WebSocketProtocols, ALL_WEBSOCKET_PROTOCOLS};
use async_graphql::{Data, ErrorExtensions as _, ServerError, Value};
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::json;
use tracing::Instrument;

use crate::auth;
use crate::client_address::client_address;
use crate::error::{self, ApiError};
use crate::graphql::{self, AulaSchema, RequestContext};
use crate::keepalive::KeepAlive;
use crate::state::AppState;

#[derive(Clone)]
struct Http {
    app: AppState,
    schema: AulaSchema,
}

const REQUEST_ID_HEADER: &str = "x-request-id";

/// All routes of the API.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.body_limit_bytes;
    let spans = state.clone();
    let http = Http {
        schema: graphql::build(Some(state.clone())),
        app: state,
    };
    Router::new()
        .route("/graphql", get(crate::graphiql::page).post(graphql_post))
        .route("/graphql/ws", get(graphql_ws))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .merge(crate::dashboard::routes())
        .merge(crate::graphiql::routes())
        .merge(crate::pages::routes())
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::map_response(
            crate::static_files::no_sniff,
        ))
        // Outermost: the SERVER span is around everything else of the request.
        .layer(axum::middleware::from_fn_with_state(
            spans,
            crate::http_span::server_span,
        ))
        .with_state(http)
}

/// The request id: the caller's `x-request-id` when it is short and plain, else new.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// A GraphQL-shaped error response for failures before execution.
fn error_response(
    format: Format,
    status: StatusCode,
    request_id: &str,
    error: ApiError,
) -> Response {
    crate::metrics::record_refused(error.code());
    let error: async_graphql::Error = error.into();
    let mut server_error = error.into_server_error(Default::default());
    server_error.locations.clear();
    let response = async_graphql::Response::from_errors(vec![server_error]);
    finish(format, status, request_id, response)
}

/// The media type of an answer, as the client's `Accept` asks (GraphQL over HTTP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// `application/json`: without an `Accept` naming the other, as before; a request
    /// error is still 200 with `"data": null` (clients of the legacy watershed expect
    /// it).
    Json,
    /// `application/graphql-response+json`: a request that did not execute (parse,
    /// validation and variable errors, refused before execution) answers 4xx or 5xx
    /// and has no `data` entry; one that executed answers 200 whatever its errors.
    GraphQLResponse,
}

const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";

impl Format {
    /// `application/graphql-response+json` when `Accept` names it with a quality at
    /// least that of `application/json` (or without that one); else JSON.
    fn of(headers: &HeaderMap) -> Self {
        let Some(accept) = headers
            .get(axum::http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
        else {
            return Self::Json;
        };
        let (mut graphql, mut json) = (None::<f32>, None::<f32>);
        for item in accept.split(',') {
            let item = item.to_ascii_lowercase();
            let mut parts = item.split(';');
            let media = parts.next().unwrap_or("").trim().to_owned();
            let quality = parts
                .find_map(|p| p.trim().strip_prefix("q=").map(str::to_owned))
                .map_or(1.0, |q| q.trim().parse::<f32>().unwrap_or(0.0));
            let slot = match media.as_str() {
                GRAPHQL_RESPONSE_JSON => &mut graphql,
                "application/json" => &mut json,
                _ => continue,
            };
            *slot = Some(slot.map_or(quality, |q| q.max(quality)));
        }
        match graphql {
            Some(g) if g > 0.0 && json.is_none_or(|j| g >= j) => Self::GraphQLResponse,
            _ => Self::Json,
        }
    }
}

/// The status of a request that did not execute, answered as
/// `application/graphql-response+json`, by its first error's code.
fn request_error_status(response: &async_graphql::Response) -> StatusCode {
    let code = response
        .errors
        .first()
        .and_then(|e| e.extensions.as_ref())
        .and_then(|e| e.get("code"));
    match code {
        Some(Value::String(code)) => match code.as_str() {
            error::VALIDATION => StatusCode::BAD_REQUEST,
            error::UNAUTHENTICATED => StatusCode::UNAUTHORIZED,
            error::FORBIDDEN => StatusCode::FORBIDDEN,
            error::RATE_LIMITED => StatusCode::TOO_MANY_REQUESTS,
            error::TIMEOUT => StatusCode::GATEWAY_TIMEOUT,
            error::UNAVAILABLE => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        },
        _ => StatusCode::BAD_REQUEST,
    }
}

fn finish(
    format: Format,
    status: StatusCode,
    request_id: &str,
    mut response: async_graphql::Response,
) -> Response {
    for error in &mut response.errors {
        normalize(error, request_id);
    }
    // A database that cannot be reached is the service's trouble, not the request's:
    // 503 with Retry-After, so clients and proxies retry. Only when nothing was done:
    // a retried request whose other fields committed would repeat them.
    let nothing_done = match &response.data {
        Value::Null => true,
        Value::Object(fields) => fields.values().all(|value| *value == Value::Null),
        _ => false,
    };
    let unavailable = nothing_done
        && response.errors.iter().any(|error| {
            matches!(
                error.extensions.as_ref().and_then(|e| e.get("code")),
                Some(Value::String(code)) if code == error::UNAVAILABLE
            )
        });
    let status = if unavailable {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        status
    };
    let mut http = match format {
        Format::Json => (status, Json(response)).into_response(),
        Format::GraphQLResponse => {
            // Nothing executed: errors, none of them a field's (no path), and no data.
            let request_error = !response.errors.is_empty()
                && response.data == Value::Null
                && response.errors.iter().all(|e| e.path.is_empty());
            let status = if request_error && status == StatusCode::OK {
                request_error_status(&response)
            } else {
                status
            };
            let mut body = serde_json::to_value(&response).unwrap_or_default();
            if request_error {
                if let Some(body) = body.as_object_mut() {
                    body.remove("data");
                }
            }
            let content_type =
                HeaderValue::from_static("application/graphql-response+json; charset=utf-8");
            (
                status,
                [(axum::http::header::CONTENT_TYPE, content_type)],
                body.to_string(),
            )
                .into_response()
        }
    };
    if let Ok(value) = HeaderValue::from_str(request_id) {
        http.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    if unavailable {
        http.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            HeaderValue::from(error::UNAVAILABLE_RETRY_AFTER_SECONDS),
        );
    }
    http
}

/// Whether a POST may execute: only JSON bodies. A form or `text/plain` POST is what a
/// page on another site can make a visitor's browser send without a CORS preflight,
/// so it must never run a mutation.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence.eq_ignore_ascii_case("application/graphql-response+json")
}

/// Every error leaves with a code: errors async-graphql raised itself (syntax, unknown
/// field, wrong type, limits) are VALIDATION; INTERNAL ones carry the request id.
/// Socket operations get the same (`graphql::SocketErrorCodes`).
pub(crate) fn normalize(error: &mut ServerError, request_id: &str) {
    // An error raised outside the document (a timeout, a refusal before execution) was
    // given the default position, 0:0, which is not a location: GraphQL's start at 1:1.
    error.locations.retain(|location| location.line > 0);
    let extensions = error.extensions.get_or_insert_with(Default::default);
    match extensions.get("code") {
        None => {
            extensions.set("code", error::VALIDATION);
            extensions.set("field", "query");
            extensions.set("reason", "INVALID_OPERATION");
        }
        Some(Value::String(code))
            if code == error::INTERNAL || code == error::TIMEOUT || code == error::UNAVAILABLE =>
        {
            extensions.set("requestId", request_id);
        }
        Some(_) => {}
    }
}

/// What a request body must be, said plainly.
const REQUEST_SHAPE: &str = "the request body must be a JSON object with a `query` string, \
     and optionally `variables` (an object), `operationName` (a string) and `extensions` \
     (an object)";

/// The GraphQL request a JSON body holds, or why it holds none: stable words of our
/// own, never serde's (which named Rust types: "expected struct Request").
fn graphql_request(json: serde_json::Value) -> Result<async_graphql::Request, &'static str> {
    use serde_json::Value as Json;
    let fields = match &json {
        Json::Object(fields) => fields,
        Json::Array(_) => {
            return Err("batch requests are not supported: send one operation per \
                 request, as a JSON object with a `query` string")
        }
        _ => return Err(REQUEST_SHAPE),
    };
    let is = |name: &str, fits: fn(&Json) -> bool| fields.get(name).is_none_or(fits);
    if !is("query", Json::is_string) {
        return Err("`query` must be a string holding the GraphQL document");
    }
    if !is("operationName", |v| v.is_null() || v.is_string()) {
        return Err("`operationName` must be a string or null");
    }
    if !is("variables", |v| v.is_null() || v.is_object()) {
        return Err("`variables` must be a JSON object or null");
    }
    if !is("extensions", |v| v.is_null() || v.is_object()) {
        return Err("`extensions` must be a JSON object or null");
    }
    serde_json::from_value(json).map_err(|error| {
        tracing::debug!(%error, "request body refused");
        REQUEST_SHAPE
    })
}

/// The caller's address: the peer's, or the one a trusted proxy forwarded.
fn caller_address(
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: &HeaderMap,
    http: &Http,
) -> Option<std::net::IpAddr> {
    connect.map(|Extension(ConnectInfo(addr))| {
        client_address(addr.ip(), headers, &http.app.config.server.trusted_proxies)
    })
}

async fn graphql_post(
    State(http): State<Http>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let request_id = request_id(&headers);
    // Every log line of the request carries its id; `operation` (the root fields) is
    // filled in once the query is parsed (see `metrics`).
    let span = tracing::info_span!(
        "graphql",
        request_id = %request_id,
        operation = tracing::field::Empty
    );
    // A child of the HTTP SERVER span (`crate::http_span`), which continues the
    // caller's trace context.
    let format = Format::of(&headers);
    async move {
        let started = tokio::time::Instant::now();
        // Every refusal of the body names the input field `body`.
        let refuse_body = |status: StatusCode, reason: &str, message: String| {
            error_response(
                format,
                status,
                &request_id,
                ApiError::validation("body", reason, message),
            )
        };
        if !is_json(&headers) {
            let mut response = refuse_body(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                "send the request as `Content-Type: application/json`".into(),
            );
            response.headers_mut().insert(
                axum::http::header::ACCEPT,
                HeaderValue::from_static("application/json"),
            );
            return response;
        }
        let limit = http.app.config.body_limit_bytes;
        let read = axum::body::to_bytes(body, limit);
        let body = match tokio::time::timeout(http.app.config.server.body_timeout, read).await {
            Ok(Ok(body)) => body,
            Err(_) => {
                return refuse_body(
                    StatusCode::REQUEST_TIMEOUT,
                    "BODY_TIMEOUT",
                    format!(
                        "the request body did not arrive within {} s",
                        http.app.config.server.body_timeout.as_secs_f64()
                    ),
                );
            }
            Ok(Err(error)) => {
                let too_large = std::error::Error::source(&error)
                    .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
                return if too_large {
                    refuse_body(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "TOO_LARGE",
                        format!("the request body exceeds {limit} bytes"),
                    )
                } else {
                    refuse_body(
                        StatusCode::BAD_REQUEST,
                        "UNREADABLE",
                        "the request body could not be read".into(),
                    )
                };
            }
        };
        let json: serde_json::Value = match serde_json::from_slice(&body) {
            Ok(json) => json,
            Err(e) => {
                return refuse_body(
                    StatusCode::BAD_REQUEST,
                    "MALFORMED_JSON",
                    format!("the request body is not valid JSON: {e}"),
                )
            }
        };
        let request = match graphql_request(json) {
            Ok(request) => request,
            Err(message) => {
                return refuse_body(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message.into())
            }
        };
        let claims = match headers.get(axum::http::header::AUTHORIZATION) {
            None => None,
            Some(value) => {
                let verified = match value.to_str().ok().and_then(auth::bearer) {
                    None => Err(ApiError::unauthenticated(
                        "INVALID_TOKEN",
                        "expected `Authorization: Bearer <token>`",
                    )),
                    Some(token) => {
                        let verify = auth::authenticate(
                            &http.app.pool,
                            &http.app.config.token_secret,
                            token,
                            http.app.clock.now(),
                        );
                        unless_unreachable(&http, started, verify)
                            .await
                            .unwrap_or_else(|| Err(database_unreachable()))
                    }
                };
                match verified {
                    Ok(claims) => Some(claims),
                    Err(error) => {
                        let status = match error.code() {
                            error::UNAUTHENTICATED => StatusCode::UNAUTHORIZED,
                            error::UNAVAILABLE => StatusCode::SERVICE_UNAVAILABLE,
                            _ => StatusCode::INTERNAL_SERVER_ERROR,
                        };
                        return error_response(format, status, &request_id, error);
                    }
                }
            }
        };
        let context = RequestContext {
            claims,
            client: caller_address(connect, &headers, &http),
            request_id: request_id.clone(),
        };
        // A database refusing connections cuts the execution short (`graphql::reachable`).
        // A mutation finishes even when nobody waits for its answer (`graphql::finish`).
        let request = request.data(context);
        let within = http.app.config.request_timeout;
        match graphql::finish::execute(http.schema.clone(), request, within).await {
            Some(response) => finish(format, StatusCode::OK, &request_id, response),
            None => {
                tracing::warn!(timeout = ?http.app.config.request_timeout, "request timed out");
                let error = async_graphql::Error::new("the request took too long")
                    .extend_with(|_, e| e.set("code", error::TIMEOUT));
                let response = async_graphql::Response::from_errors(vec![
                    error.into_server_error(Default::default())
                ]);
                finish(format, StatusCode::OK, &request_id, response)
            }
        }
    }
    .instrument(span)
    .await
}

/// `work`'s output, or `None` once the database is known to refuse connections and the
/// request has run [`aula_eventlog::db::SUSPECT_AFTER`]: the pool would retry its
/// connect for its whole acquire timeout (10 s) before failing, so the request is
/// answered `UNAVAILABLE` now instead. A busy pool is not an outage: work waiting for
/// a connection of a server that accepts them goes on waiting. For the token check
/// before execution; the execution itself is covered by `graphql::reachable`.
async fn unless_unreachable<T>(
    http: &Http,
    started: tokio::time::Instant,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        biased;
        output = work => Some(output),
        () = http.app.reachability.cut(started) => None,
    }
}

pub(crate) fn database_unreachable() -> ApiError {
    ApiError::Unavailable("the database refuses connections".into())
}

/// The subprotocol a socket asked for: the first of `Sec-WebSocket-Protocol` that
/// async-graphql speaks.
fn websocket_protocol(headers: &HeaderMap) -> Option<WebSocketProtocols> {
    headers
        .get(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|value| value.to_str().ok())
        .and_then(|protocols| {
            protocols
                .split(',')
                .find_map(|p| p.trim().parse::<WebSocketProtocols>().ok())
        })
}

async fn graphql_ws(
    State(http): State<Http>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    slot: Option<Extension<crate::server::SocketSlot>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some(protocol) = websocket_protocol(&headers) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    // Its mutations run to their end when the socket closes (`graphql::finish`).
    let schema = crate::graphql::finish::Finishing(http.schema.clone());
    let app = http.app.clone();
    // Public mutations sent over the socket are rate-limited like HTTP ones.
    let client = caller_address(connect, &headers, &http);
    // One id for the connection: every log line of its operations carries it.
    let request_id = uuid::Uuid::new_v4().to_string();
    let span = tracing::info_span!("graphql_ws", request_id = %request_id);
    // A message is bounded like a request body (a 14 MB message used to be parsed).
    let limit = app.config.body_limit_bytes;
    let keepalive = KeepAlive {
        ping_interval: app.config.socket_ping_interval,
        idle_timeout: app.config.socket_idle_timeout,
        unsent_limit: app.config.socket_unsent_limit_bytes,
        init_timeout: app.config.socket_init_timeout,
    };
    let slot = slot.map(|Extension(slot)| slot);
    upgrade
        .max_message_size(limit)
        .max_frame_size(limit)
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| {
            crate::keepalive::serve(socket, protocol, keepalive, slot, move |input, rules| {
                async_graphql::http::WebSocket::new(schema, input, protocol).on_connection_init(
                    move |payload| async move {
                        let token = ["authorization", "Authorization", "token"]
                            .iter()
                            .find_map(|key| payload.get(*key).and_then(|v| v.as_str()))
                            .map(|value| auth::bearer(value).unwrap_or(value).to_owned());
                        let claims = match token {
                            None => None,
                            Some(token) => Some(
                                auth::authenticate(
                                    &app.pool,
                                    &app.config.token_secret,
                                    &token,
                                    app.clock.now(),
                                )
                                .await
                                .map_err(|error| {
                                    let error = async_graphql::Error::from(error);
                                    // async-graphql would close with 1002.
                                    rules.refuse_init(&error);
                                    error
                                })?,
                            ),
                        };
                        let mut data = Data::default();
                        if let Some(claims) = &claims {
                            let max = app.config.max_sockets_per_account;
                            let counted =
                                app.account_sockets
                                    .open(claims.user_id, max)
                                    .map_err(|error| {
                                        let error = async_graphql::Error::from(error);
                                        rules.refuse_init(&error);
                                        error
                                    })?;
                            // Counted while the connection's data lives.
                            data.insert(counted);
                            rules.signed_in();
                        }
                        data.insert(crate::graphql::session::SocketSession);
                        data.insert(RequestContext {
                            claims,
                            client,
                            request_id,
                        });
                        Ok(data)
                    },
                )
            })
            .instrument(span)
        })
}

/// Prometheus text format: counters recorded as they happen, gauges read now.
async fn metrics(State(http): State<Http>) -> Response {
    let body = crate::metrics::render(&http.app).await;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            aula_eventlog::metrics::CONTENT_TYPE,
        )],
        body,
    )
        .into_response()
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready when the process is not stopping, the database answers, every migration this
/// binary knows is applied, and the subscriptions report running. Answers within
/// [`READY_TIMEOUT`] whatever the database does (an exhausted pool or a hung server
/// is "not ready", not a hung probe).
async fn ready(State(http): State<Http>) -> Response {
    let draining = http.app.draining.load(std::sync::atomic::Ordering::SeqCst);
    let applied = tokio::time::timeout(
        READY_TIMEOUT,
        sqlx::query_as::<_, (i64,)>("SELECT count(*) FROM _sqlx_migrations WHERE success")
            .fetch_one(&http.app.pool),
    )
    .await;
    let (database, migrations) = match applied {
        Ok(Ok((n,))) => (true, n as usize >= aula_migrations::count()),
        Ok(Err(_)) | Err(_) => (false, false),
    };
    // Why the database did not answer, so that an exhausted pool (every connection busy
    // with requests) does not read like an outage (session 17's probe).
    let pool = &http.app.pool;
    let (size, idle, max) = (
        pool.size(),
        pool.num_idle(),
        pool.options().get_max_connections(),
    );
    let database_detail = match applied {
        Ok(Ok(_)) => "answered",
        Err(_) if size >= max && idle == 0 => "no free connection within 1 s: the pool is busy",
        Err(_) => "no answer within 1 s",
        Ok(Err(_)) => "unreachable",
    };
    let subscriptions = (http.app.readiness)();
    let ok = !draining && database && migrations && subscriptions;
    // Still ready (every instance shares the database: failing them all would turn
    // stale reads into an outage), but reported: see aula_eventlog::health.
    let log = http.app.log_health();
    let degraded = log.as_ref().is_some_and(|h| h.degraded);
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if draining {
                "draining"
            } else if !ok {
                "not ready"
            } else if degraded {
                "degraded"
            } else {
                "ready"
            },
            "database": database,
            "database_detail": database_detail,
            "pool": { "size": size, "idle": idle, "max": max },
            "migrations": migrations,
            "subscriptions": subscriptions,
            "log_held_back_seconds": log.and_then(|h| h.blocker).map(|b| b.age_seconds),
        })),
    )
        .into_response()
}

/// The longest `/ready` waits for the database.
const READY_TIMEOUT: Duration = Duration::from_secs(1);
