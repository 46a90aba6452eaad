//! Hostile connections: slow, idle and never-reading clients, connection caps per
//! client, and rate limits per account, address and proxied user.

use super::*;

/// A raw TCP client bound to its own loopback address.
pub(super) async fn tcp_from(client: [u8; 4], server: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(IpAddr::from(client), 0))
        .unwrap();
    socket.connect(server).await.unwrap()
}

/// The server with its connection limits adjusted by `limits`, and its address.
async fn server_with(limits: impl FnOnce(&mut ServerLimits)) -> (TestServer, SocketAddr) {
    let server = TestServer::start_with(|c| limits(&mut c.server)).await;
    let target = addr(&server);
    (server, target)
}

/// An HTTP client bound to its own loopback address.
pub(super) fn http_client_from(client: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(client))
        .build()
        .unwrap()
}

pub(super) fn addr(server: &TestServer) -> SocketAddr {
    server
        .url("")
        .trim_start_matches("http://")
        .parse()
        .unwrap()
}

/// Polls `/health` from the loopback address `client` (every `every`) until it answers
/// 200; fails with `why` once `within` has passed.
async fn assert_health_answers_from(
    client: [u8; 4],
    server: &TestServer,
    (within, every): (Duration, Duration),
    why: &str,
) {
    let client = http_client_from(client);
    let started = Instant::now();
    loop {
        let status = client
            .get(server.url("/health"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .ok();
        if status == Some(200) {
            return;
        }
        assert!(started.elapsed() < within, "{why}: {status:?}");
        tokio::time::sleep(every).await;
    }
}

/// Everything the server sends until it closes (or `within` passes).
async fn read_until_closed(stream: &mut tokio::net::TcpStream, within: Duration) -> Option<String> {
    let mut received = Vec::new();
    let result = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    result
        .ok()
        .map(|_| String::from_utf8_lossy(&received).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_and_idle_clients_are_cut_off() {
    let (server, target) = server_with(|limits| {
        limits.header_timeout = Duration::from_secs(1);
        limits.body_timeout = Duration::from_secs(1);
    })
    .await;
    // Headers that never finish.
    let mut slow = tcp_from([127, 0, 1, 1], target).await;
    slow.write_all(b"POST /graphql HTTP/1.1\r\nhost: aula\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let answer = read_until_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(answer.is_some(), "a slow header must be cut off");
    assert!(started.elapsed() < Duration::from_secs(4));
    // A body that never finishes: 408.
    let mut slow_body = tcp_from([127, 0, 1, 2], target).await;
    slow_body
        .write_all(
            b"POST /graphql HTTP/1.1\r\nhost: aula\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{\"query\":",
        )
        .await
        .unwrap();
    let answer = read_until_closed(&mut slow_body, Duration::from_secs(5))
        .await
        .expect("a slow body must be answered and closed");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("BODY_TIMEOUT"), "{answer}");
    // An idle keep-alive connection is closed after the header timeout.
    let mut idle = tcp_from([127, 0, 1, 3], target).await;
    idle.write_all(b"GET /health HTTP/1.1\r\nhost: aula\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let answer = read_until_closed(&mut idle, Duration::from_secs(5))
        .await
        .expect("an idle connection must be closed");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_are_capped_per_client_with_a_clear_refusal() {
    let (server, target) = server_with(|limits| {
        limits.max_connections_per_client = 5;
        limits.header_timeout = Duration::from_secs(30);
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut stream = tcp_from([127, 0, 2, 1], target).await;
        // Half a request: the slot stays taken.
        stream.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
        held.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A real client has sent its request when the refusal comes: it must still read it.
    let mut refused = tcp_from([127, 0, 2, 1], target).await;
    refused
        .write_all(b"GET /health HTTP/1.1\r\nhost: aula\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut refused, Duration::from_secs(5))
        .await
        .expect("refused at once");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.to_lowercase().contains("retry-after: 1"), "{answer}");
    assert!(answer.contains("UNAVAILABLE"), "{answer}");
    // Another client is served meanwhile.
    let other = http_client_from([127, 0, 2, 2]);
    let response = other.get(server.url("/health")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    // Closing the held connections frees the slots.
    drop(held);
    assert_health_answers_from(
        [127, 0, 2, 1],
        &server,
        (Duration::from_secs(10), Duration::from_millis(100)),
        "the freed slots were not reused",
    )
    .await;
    server.stop().await;
}

async fn login_from(server: &TestServer, forwarded_for: Option<&str>) -> Value {
    let mut request = server.client.post(server.url("/graphql")).json(&json!({
        "query": "mutation { login(input: { email: \"nobody@aula.test\", password: \"wrong password\" }) { accessToken } }"
    }));
    if let Some(hop) = forwarded_for {
        request = request.header("x-forwarded-for", hop);
    }
    request.send().await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_a_trusted_proxy_each_user_has_its_own_bucket() {
    let server = TestServer::start_with(|c| {
        c.rate_limit.burst = 3;
        c.rate_limit.per_minute = 1;
        c.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    // Six users behind the proxy (127.0.0.1), three logins each: nobody is limited.
    for user in 1..=6 {
        for _ in 0..3 {
            let r = login_from(&server, Some(&format!("203.0.113.{user}"))).await;
            assert_eq!(code(&r).as_deref(), Some("UNAUTHENTICATED"), "{r}");
        }
    }
    // The fourth of one user is; a fake address prepended by the client changes
    // nothing (the proxy's own hop is the rightmost).
    let r = login_from(&server, Some("198.51.100.1, 203.0.113.1")).await;
    assert_code(&r, "RATE_LIMITED");
    server.stop().await;

    // Without the setting, the header is the client's own claim: ignored.
    let server = TestServer::start_with(|c| {
        c.rate_limit.burst = 3;
        c.rate_limit.per_minute = 1;
    })
    .await;
    for user in 1..=3 {
        let r = login_from(&server, Some(&format!("203.0.113.{user}"))).await;
        assert_code(&r, "UNAUTHENTICATED");
    }
    let r = login_from(&server, Some("203.0.113.99")).await;
    assert_code(&r, "RATE_LIMITED");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_in_writes_are_limited_per_account_and_anonymous_reads_per_address() {
    let server = TestServer::start_with(|c| {
        c.account_write_limit.burst = 3;
        c.account_write_limit.per_minute = 1;
        c.anonymous_read_limit.burst = 5;
        c.anonymous_read_limit.per_minute = 1;
    })
    .await;
    let a = server.institution("Escola Limite").await;
    let b = server.institution("Escola Outra").await;
    let create = |token: String, n: u32| {
        let server = &server;
        async move {
            server
                .command(
                    Some(&token),
                    "createCampus",
                    json!({ "name": format!("Campus {n}"), "city": "Braga" }),
                )
                .await
        }
    };
    let mut codes = Vec::new();
    for n in 0..4 {
        codes.push(code(&create(a.manager.token.clone(), n).await));
    }
    assert!(codes[..3].iter().all(Option::is_none), "{codes:?}");
    assert_eq!(codes[3].as_deref(), Some("RATE_LIMITED"));
    // Another account is not affected; signed-in reads have a budget of their own.
    assert_ok(&create(b.manager.token.clone(), 9).await);
    for _ in 0..10 {
        assert_ok(&server.query(&a.manager.token, "{ me { id } }").await);
    }
    // Anonymous reads, per address.
    let reader = http_client_from([127, 0, 3, 1]);
    let mut limited = 0;
    for _ in 0..8 {
        let r = server
            .gql_from(&reader, None, "{ health { status } }", json!({}))
            .await;
        if code(&r).as_deref() == Some("RATE_LIMITED") {
            limited += 1;
        }
    }
    assert_eq!(limited, 3);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_reads_loses_its_connection_and_its_slot() {
    let (server, target) = server_with(|limits| {
        limits.max_connections_per_client = 1;
        limits.write_timeout = Duration::from_secs(1);
    })
    .await;
    // A tiny receive window and many pipelined requests for a 46 KB asset: the
    // server's writes stall once the buffers are full.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket
        .bind(SocketAddr::new(IpAddr::from([127, 0, 4, 1]), 0))
        .unwrap();
    let mut greedy = socket.connect(target).await.unwrap();
    let requests = "GET /admin/app.js HTTP/1.1\r\nhost: aula\r\n\r\n".repeat(200);
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        greedy.write_all(requests.as_bytes()),
    )
    .await;
    // The only slot of that address frees once the stalled write gives up.
    assert_health_answers_from(
        [127, 0, 4, 1],
        &server,
        (Duration::from_secs(15), Duration::from_millis(200)),
        "the stalled connection kept its slot",
    )
    .await;
    drop(greedy);
    server.stop().await;
}

/// Headers larger than 64 KB are refused with `431` (hyper alone took up to ~400 KB per
/// connection), and the server goes on answering.
#[tokio::test(flavor = "multi_thread")]
async fn oversized_headers_are_refused_with_431() {
    let server = TestServer::start().await;
    let client = http_client_from([127, 9, 0, 1]);
    // The status of `/health` asked with a filler header of `bytes` bytes.
    let status_with_header_of = |bytes: usize| {
        let request = client
            .get(server.url("/health"))
            .header("x-filler", "x".repeat(bytes));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(
        status_with_header_of(aula_api::MAX_HEADER_BYTES + 1).await,
        431
    );
    assert_eq!(status_with_header_of(8 * 1024).await, 200);
    server.stop().await;
}

/// A full house of silent sockets, each from an address of its own (so under every
/// per-client cap): a newcomer is still answered, the quietest socket making room, and a
/// socket that just opened is not the one closed. Before: every newcomer, `/health`
/// included, was refused 503 until the silent sockets' header timeout, which a flood
/// renews at will (4,096 idle sockets against the release binary: 503 for all).
#[tokio::test(flavor = "multi_thread")]
async fn a_full_house_of_silent_sockets_makes_room_for_newcomers() {
    let (server, target) = server_with(|limits| {
        limits.max_connections = 30;
        limits.header_timeout = Duration::from_secs(60);
    })
    .await;
    let mut silent = Vec::new();
    for i in 0..40u8 {
        silent.push(tcp_from([127, 61, 0, i + 1], target).await);
    }
    // Quiet for longer than a socket still sending its request might be.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let started = Instant::now();
    for i in 0..5u8 {
        let status = http_client_from([127, 62, 0, i + 1])
            .get(server.url("/health"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), 200, "newcomer {i} refused on a full house");
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    // Silent sockets were closed to make room, without an answer (the ones over the
    // cap at the start got the 503 refusal instead); a fresh one is left alone.
    let (mut evicted, mut refused) = (0, 0);
    for socket in &mut silent {
        match read_until_closed(socket, Duration::from_millis(100)).await {
            Some(answer) if answer.is_empty() => evicted += 1,
            Some(_) => refused += 1,
            None => {}
        }
    }
    assert!(
        evicted >= 1,
        "no silent socket made room ({refused} refused)"
    );
    let mut fresh = tcp_from([127, 63, 0, 1], target).await;
    let status = http_client_from([127, 62, 0, 9])
        .get(server.url("/health"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 200);
    assert!(
        read_until_closed(&mut fresh, Duration::from_millis(300))
            .await
            .is_none(),
        "a socket that just opened was closed"
    );
}

/// A graphql-transport-ws socket from the loopback address `client` (`None`: refused).
pub(super) async fn socket_from(
    client: [u8; 4],
    server: &TestServer,
    target: SocketAddr,
) -> Option<Socket> {
    let request = server.socket_request();
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(tcp_from(client, target).await);
    let (socket, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .ok()?;
    Some(socket)
}

/// The next text message of `socket` as JSON.
pub(super) async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("no message within 10 s")
            .expect("the socket is open")
            .unwrap();
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// WebSockets on which nobody signs in hold no slot a newcomer needs: on a full house
/// of them (upgraded, then no `connection_init`, or an anonymous one, and no operation
/// running) the quietest is closed to make room, while a signed-in socket streaming a
/// subscription keeps its slot. Before: an upgraded socket was never evicted, so a
/// full house of sockets that never said a word after the upgrade (answering the
/// server's pings, as every WebSocket library does by itself) refused everyone else
/// with 503 for as long as they stayed (probe, session 19).
#[tokio::test(flavor = "multi_thread")]
async fn a_full_house_of_sockets_nobody_signed_in_on_makes_room_for_newcomers() {
    let (server, target) = server_with(|limits| limits.max_connections = 12).await;
    let admin = server.admin().await;
    let mut watcher = socket_from([127, 64, 0, 1], &server, target)
        .await
        .expect("a slot");
    let init = json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {}", admin.token) } });
    ws::send(&mut watcher, init).await;
    assert_eq!(next_json(&mut watcher).await["type"], "connection_ack");
    let subscribe = json!({ "id": "1", "type": "subscribe", "payload": { "query": "subscription { logPosition }" } });
    ws::send(&mut watcher, subscribe).await;
    assert_eq!(next_json(&mut watcher).await["type"], "next");
    // Until the house is full (the test's own HTTP connections hold a slot or two).
    let mut idle = Vec::new();
    for i in 0..12u8 {
        let Some(mut socket) = socket_from([127, 64, 1, i + 1], &server, target).await else {
            break;
        };
        if i % 2 == 0 {
            // Anonymous: acknowledged, no operation.
            ws::send(&mut socket, json!({ "type": "connection_init" })).await;
            assert_eq!(next_json(&mut socket).await["type"], "connection_ack");
        }
        idle.push(socket);
    }
    assert!(idle.len() >= 8, "{} sockets opened", idle.len());
    // Quiet for longer than a socket still sending its request might be.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for i in 0..5u8 {
        let status = http_client_from([127, 65, 0, i + 1])
            .get(server.url("/health"))
            .send()
            .await
            .map(|r| r.status().as_u16());
        // A refusal is a 503 written before the request is read.
        assert_eq!(
            status.ok(),
            Some(200),
            "newcomer {i} refused on a full house"
        );
    }
    // The signed-in socket was left alone: its subscription follows the log.
    let signed_up = server.sign_up("after-the-crowd@aula.test").await;
    let position = signed_up["data"]["signUp"]["logPosition"].as_i64().unwrap();
    loop {
        let message = next_json(&mut watcher).await;
        if message["payload"]["data"]["logPosition"].as_i64() >= Some(position) {
            break;
        }
    }
    drop(idle);
    server.stop().await;
}
