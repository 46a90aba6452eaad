//! The HTTP server loop: accepts connections under a cap (overall and per client
//! address), serves HTTP/1.1 with a header timeout that also bounds idle keep-alive
//! connections, and stops gracefully: the listener closes, in-flight requests finish.
//!
//! axum's own `serve` has no header timeout and no connection cap: 300 slow clients
//! stayed connected for minutes, and one client holding 560 half-sent requests used up
//! the process's open files so every other request timed out. Here a connection over
//! a cap is answered `503` with `Retry-After` and closed at once, and the cap is kept
//! below the open-file limit so accepting never fails for lack of descriptors.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt as _;
use tower_service::Service as _;

use crate::config::ServerLimits;

/// Descriptors kept free of connections for the database pool, files and the like.
const RESERVED_DESCRIPTORS: usize = 256;

/// Serves `router` with default [`ServerLimits`] until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, router, ServerLimits::default(), shutdown).await
}

/// Serves `router` until `shutdown` completes: then the listener closes and the
/// connections finish their in-flight requests (idle ones close at once).
/// The request line and headers of one request, at most (then `431`).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

pub async fn serve_with(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let max_connections = effective_connection_cap(limits.max_connections);
    if max_connections < limits.max_connections {
        tracing::warn!(
            configured = limits.max_connections,
            effective = max_connections,
            "the open-file limit lowers the connection cap"
        );
    }
    let open = Arc::new(OpenConnections::default());
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // hyper's own limit is its ~400 KB read buffer; no client of this API needs more
        // than a bearer token's worth of headers, and each connection may hold that
        // much memory while it sends them.
        .max_header_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    let builder = Arc::new(builder);
    // Each connection task holds a clone of `alive`; when the last is dropped, every
    // connection has finished. `stopping` tells them to finish gracefully.
    let (alive, mut all_done) = tokio::sync::mpsc::channel::<()>(1);
    let (stopping, stop_watch) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and friends: wait a little instead of spinning; the
                    // connections being served are not affected.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let client = crate::ratelimit::bucket_key(peer.ip());
        let per_client = if limits
            .trusted_proxies
            .iter()
            .any(|net| net.contains(&peer.ip().to_canonical()))
        {
            usize::MAX
        } else {
            limits.max_connections_per_client
        };
        let Some(guard) = open.try_open(client, max_connections, per_client) else {
            crate::metrics::record_refused("CONNECTION_LIMIT");
            tokio::spawn(refuse(stream));
            continue;
        };
        let state = guard.state.clone();
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let serving = state.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(SocketSlot(serving.clone()));
            let mut router = router.clone();
            // Not quiet while a request of its own runs (see `OpenConnections::evict`).
            let in_request = InRequest::new(serving.clone());
            async move {
                let response = router.call(request).await;
                if response
                    .as_ref()
                    .is_ok_and(|r| r.status() == axum::http::StatusCode::SWITCHING_PROTOCOLS)
                {
                    in_request
                        .0
                        .upgraded
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
                drop(in_request);
                response
            }
        });
        // The guard travels with the stream, so an upgraded WebSocket keeps its slot
        // until it closes.
        let stream = CountedStream {
            inner: stream,
            _guard: guard,
            write_stall_limit: limits.write_timeout,
            stalled: None,
        };
        let builder = builder.clone();
        let (alive, mut stop_watch) = (alive.clone(), stop_watch.clone());
        tokio::spawn(async move {
            let connection = builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = async { drop(stop_watch.wait_for(|stop| *stop).await) } => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
                // Evicted to make room on a full house: dropped at once.
                () = state.evicted.notified() => Ok(()),
            };
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
            drop(alive);
        });
    }
    drop(listener);
    // In-flight requests finish, idle connections close; a connection that still has
    // not finished after the stop deadline is dropped with the process (a client
    // that stopped reading must not keep the service from stopping).
    let _ = stopping.send(true);
    drop(alive);
    if tokio::time::timeout(limits.stop_deadline, all_done.recv())
        .await
        .is_err()
    {
        tracing::warn!(
            deadline = ?limits.stop_deadline,
            "connections still open at the stop deadline; closing them"
        );
    }
    Ok(())
}

/// A TCP stream that holds its connection slot until it is dropped, and fails a write
/// that makes no progress for `write_stall_limit`: hyper has no write timeout, so a
/// client that never reads its answer would otherwise hold the slot (and a graceful
/// stop) forever.
struct CountedStream {
    inner: tokio::net::TcpStream,
    _guard: ConnectionGuard,
    write_stall_limit: Duration,
    /// Since when writes have been pending without progress.
    stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl CountedStream {
    /// `Pending` from a write: start (or check) the stall clock. `Ready`: reset it.
    fn watch<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        poll: std::task::Poll<std::io::Result<T>>,
    ) -> std::task::Poll<std::io::Result<T>> {
        use std::future::Future as _;
        match poll {
            std::task::Poll::Pending => {
                let limit = self.write_stall_limit;
                let timer = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                if timer.as_mut().poll(cx).is_ready() {
                    self.stalled = None;
                    return std::task::Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the client stopped reading",
                    )));
                }
                std::task::Poll::Pending
            }
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl tokio::io::AsyncRead for CountedStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self._guard.state.heard();
        }
        poll
    }
}

impl tokio::io::AsyncWrite for CountedStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let poll = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let poll = std::pin::Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let poll = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A connection over a cap: a plain 503 and close, without reading the request.
async fn refuse(mut stream: tokio::net::TcpStream) {
    const RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
        content-type: application/json\r\n\
        retry-after: 1\r\n\
        connection: close\r\n\
        content-length: 106\r\n\r\n\
        {\"errors\":[{\"message\":\"too many open connections; retry shortly\",\"extensions\":{\"code\":\"UNAVAILABLE\"}}]}\n";
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(RESPONSE).await;
        let _ = stream.shutdown().await;
        // Read what the client already sent before closing: closing with unread input
        // sends a reset, which can destroy the 503 before the client reads it.
        let mut sink = [0u8; 4096];
        let mut drained = 0usize;
        while drained < 64 * 1024 {
            match tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}

/// The cap actually used: the configured one, lowered to what the open-file limit
/// leaves after [`RESERVED_DESCRIPTORS`].
fn effective_connection_cap(configured: usize) -> usize {
    match open_file_limit() {
        Some(limit) => configured.min(limit.saturating_sub(RESERVED_DESCRIPTORS).max(16)),
        None => configured,
    }
}

fn open_file_limit() -> Option<usize> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own and reads nothing else.
    #[allow(unsafe_code)]
    let status = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (status == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur as usize)
}

/// Open connections, in all and per client, and each one's state for eviction.
#[derive(Default)]
struct OpenConnections {
    counts: Mutex<Counts>,
    /// When the server started: connection times are kept as milliseconds since.
    epoch: std::sync::OnceLock<std::time::Instant>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
    /// Every open connection, by id.
    connections: HashMap<u64, Arc<ConnectionState>>,
    next_id: u64,
}

/// What the accept loop knows of one open connection.
struct ConnectionState {
    id: u64,
    /// When it last sent a byte (or opened), in milliseconds since the epoch.
    last_heard_ms: std::sync::atomic::AtomicU64,
    /// Requests of its own being answered now.
    in_request: std::sync::atomic::AtomicUsize,
    /// Whether it ever sent a whole request (a WebSocket's upgrade included).
    served: std::sync::atomic::AtomicBool,
    /// Upgraded (a WebSocket): not evicted. Its stream is served by another task than
    /// the one that hears [`ConnectionState::evicted`] here: the socket's loop clears
    /// this while nobody is signed in on it and hears the eviction (see [`SocketSlot`]).
    upgraded: std::sync::atomic::AtomicBool,
    /// Told to close to make room (see [`OpenConnections::evict`]).
    evicted: tokio::sync::Notify,
    epoch: std::time::Instant,
}

impl ConnectionState {
    fn heard(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.last_heard_ms
            .store(now, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A WebSocket's hold on its connection slot (in the upgrade request's extensions). An
/// upgraded connection is never evicted, except while its socket says it may be
/// (nobody signed in on it, no operation running): then a full house may pick it, and
/// [`SocketSlot::evicted`] tells the socket's loop, which closes it.
#[derive(Clone)]
pub(crate) struct SocketSlot(Arc<ConnectionState>);

impl SocketSlot {
    /// Whether a full house may close this socket to make room.
    pub(crate) fn evictable(&self, evictable: bool) {
        self.0
            .upgraded
            .store(!evictable, std::sync::atomic::Ordering::Relaxed);
    }

    /// Resolves once the socket was picked to make room (its slot is handed on).
    pub(crate) async fn evicted(&self) {
        self.0.evicted.notified().await
    }
}

/// Marks a connection busy while one of its requests is answered.
struct InRequest(Arc<ConnectionState>);

impl InRequest {
    fn new(state: Arc<ConnectionState>) -> Self {
        state
            .in_request
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        state
            .served
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Self(state)
    }
}

impl Drop for InRequest {
    fn drop(&mut self) {
        self.0.heard();
        self.0
            .in_request
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A connection quiet for less than this is never evicted: it may be sending its
/// request right now.
const EVICTABLE_AFTER: Duration = Duration::from_secs(1);

impl OpenConnections {
    /// A slot for a connection of `client`. On a full house (not the client's own cap)
    /// the connection quiet the longest, with no request being answered, is told to
    /// close and its slot goes to the newcomer: otherwise a crowd of silent or
    /// trickling sockets from many addresses (each under its own cap) held every slot
    /// and everyone else, `/health` included, was refused for as long as the flood
    /// renewed itself (4,096 idle sockets: 503 for everyone for each 10 s header
    /// timeout).
    fn try_open(
        self: &Arc<Self>,
        client: IpAddr,
        max_total: usize,
        max_per_client: usize,
    ) -> Option<ConnectionGuard> {
        let epoch = *self.epoch.get_or_init(std::time::Instant::now);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let mine = counts.per_client.get(&client).copied().unwrap_or(0);
        if mine >= max_per_client {
            return None;
        }
        if counts.total >= max_total && !Self::evict(&mut counts, epoch) {
            return None;
        }
        counts.total += 1;
        counts.per_client.insert(client, mine + 1);
        counts.next_id += 1;
        let state = Arc::new(ConnectionState {
            id: counts.next_id,
            last_heard_ms: std::sync::atomic::AtomicU64::new(epoch.elapsed().as_millis() as u64),
            in_request: Default::default(),
            served: Default::default(),
            upgraded: Default::default(),
            evicted: tokio::sync::Notify::new(),
            epoch,
        });
        counts.connections.insert(state.id, state.clone());
        Some(ConnectionGuard {
            open: self.clone(),
            client,
            state,
        })
    }

    /// Tells the connection quiet the longest (at least [`EVICTABLE_AFTER`], no request
    /// being answered; one that never sent a whole request before any other) to close, and gives its slot up now (its guard then frees
    /// nothing twice): false when there is none.
    fn evict(counts: &mut Counts, epoch: std::time::Instant) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let now = epoch.elapsed().as_millis() as u64;
        let Some(quiet_enough) = now.checked_sub(EVICTABLE_AFTER.as_millis() as u64) else {
            return false;
        };
        let Some(victim) = counts
            .connections
            .values()
            .filter(|c| c.in_request.load(Relaxed) == 0 && !c.upgraded.load(Relaxed))
            .filter(|c| c.last_heard_ms.load(Relaxed) <= quiet_enough)
            // Sockets that never sent a whole request go first (a flood's), then the
            // idle keep-alive ones and sockets, each quietest first.
            .min_by_key(|c| (c.served.load(Relaxed), c.last_heard_ms.load(Relaxed)))
            .cloned()
        else {
            return false;
        };
        counts.connections.remove(&victim.id);
        // `notify_one` keeps the wake-up for a task that is not waiting yet.
        victim.evicted.notify_one();
        tracing::debug!(
            quiet_ms = now - victim.last_heard_ms.load(Relaxed),
            "full house: the quietest connection is closed to make room"
        );
        counts.total -= 1;
        true
    }
}

struct ConnectionGuard {
    open: Arc<OpenConnections>,
    client: IpAddr,
    state: Arc<ConnectionState>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let mut counts = self.open.counts.lock().unwrap_or_else(|e| e.into_inner());
        // An evicted connection's slot was handed on already.
        if counts.connections.remove(&self.state.id).is_some() {
            counts.total -= 1;
        }
        if let Some(mine) = counts.per_client.get_mut(&self.client) {
            *mine -= 1;
            if *mine == 0 {
                counts.per_client.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_house_evicts_a_socket_that_never_sent_a_request_first() {
        let open = Arc::new(OpenConnections::default());
        let (a, b, c): (IpAddr, IpAddr, IpAddr) = (
            [127, 0, 0, 2].into(),
            [127, 0, 0, 3].into(),
            [127, 0, 0, 4].into(),
        );
        let served = open.try_open(a, 2, 8).unwrap();
        drop(InRequest::new(served.state.clone()));
        std::thread::sleep(Duration::from_millis(50));
        let silent = open.try_open(b, 2, 8).unwrap();
        assert!(open.try_open(c, 2, 8).is_none(), "nobody quiet for 1 s yet");
        std::thread::sleep(EVICTABLE_AFTER + Duration::from_millis(100));
        // The served one is quieter for longer, but the silent one goes first.
        let _newcomer = open.try_open(c, 2, 8).expect("room made");
        let counts = open.counts.lock().unwrap();
        assert!(counts.connections.contains_key(&served.state.id));
        assert!(!counts.connections.contains_key(&silent.state.id));
        assert_eq!(counts.total, 2);
    }

    #[test]
    fn an_upgraded_connection_keeps_its_slot_on_a_full_house() {
        let open = Arc::new(OpenConnections::default());
        let (a, b): (IpAddr, IpAddr) = ([127, 0, 0, 2].into(), [127, 0, 0, 3].into());
        let socket = open.try_open(a, 1, 8).unwrap();
        socket
            .state
            .upgraded
            .store(true, std::sync::atomic::Ordering::Relaxed);
        std::thread::sleep(EVICTABLE_AFTER + Duration::from_millis(100));
        assert!(
            open.try_open(b, 1, 8).is_none(),
            "a WebSocket quiet for 1 s is not evicted"
        );
        let counts = open.counts.lock().unwrap();
        assert!(counts.connections.contains_key(&socket.state.id));
        assert_eq!(counts.total, 1);
    }

    #[test]
    fn connections_are_capped_overall_and_per_client() {
        let open = Arc::new(OpenConnections::default());
        let a: IpAddr = [127, 0, 0, 2].into();
        let b: IpAddr = [127, 0, 0, 3].into();
        let first = open.try_open(a, 3, 2).unwrap();
        let _second = open.try_open(a, 3, 2).unwrap();
        assert!(open.try_open(a, 3, 2).is_none(), "per-client cap");
        let _third = open.try_open(b, 3, 2).unwrap();
        assert!(open.try_open(b, 3, 2).is_none(), "overall cap");
        drop(first);
        assert!(
            open.try_open(a, 3, 2).is_some(),
            "a closed connection frees its slot"
        );
    }
}
