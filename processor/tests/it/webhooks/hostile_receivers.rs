//! Hostile receivers at the TCP level: the delivery's request ends at its deadline and
//! so does its connection (no task or socket is left behind per attempt).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aula_processor::webhooks::http::{Client, RequestError};
use aula_processor::webhooks::target::Target;
use tokio::io::AsyncReadExt as _;

/// A receiver that reads every request and never answers, counting the connections the
/// sender has not closed yet.
async fn silent_receiver() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let open = Arc::new(AtomicUsize::new(0));
    let counted = open.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                // Until the sender closes its end.
                while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
                counted.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (address, open)
}

/// The delivery target `http://{address}/hook`, a loopback receiver's.
fn hook_at(address: std::net::SocketAddr) -> Target {
    Target {
        url: url::Url::parse(&format!("http://{address}/hook")).unwrap(),
        host: "127.0.0.1".into(),
        port: address.port(),
        https: false,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_that_never_answers_gets_its_connections_closed_at_the_deadline() {
    let (address, open) = silent_receiver().await;
    let target = hook_at(address);
    let client = Client::new();
    let started = Instant::now();
    let attempts = (0..20).map(|_| {
        client.post(
            &target,
            address,
            &[],
            "{}".into(),
            Duration::from_millis(300),
        )
    });
    for result in futures::future::join_all(attempts).await {
        assert!(
            matches!(result, Err(RequestError::Timeout(_))),
            "{result:?}"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    // Every attempt's connection is closed soon after its deadline.
    let deadline = Instant::now() + Duration::from_secs(3);
    while open.load(Ordering::SeqCst) > 0 {
        assert!(
            Instant::now() < deadline,
            "{} of 20 connections still open 3 s after their deadline",
            open.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A receiver that answers with a status and then an endless body, dripped or flooded:
/// the attempt keeps its status and a bounded excerpt and ends at once (flood) or at
/// its deadline (drip), and its connection is closed either way.
#[tokio::test(flavor = "multi_thread")]
async fn endless_answers_are_cut_to_an_excerpt_or_at_the_deadline() {
    use tokio::io::AsyncWriteExt as _;
    for drip in [false, true] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let sent = Arc::new(AtomicUsize::new(0));
        let counted = sent.clone();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let head = b"HTTP/1.1 200 OK\r\ncontent-length: 10000000000\r\n\r\n";
            if socket.write_all(head).await.is_err() {
                return;
            }
            let chunk = vec![b'x'; if drip { 1 } else { 64 * 1024 }];
            while socket.write_all(&chunk).await.is_ok() {
                counted.fetch_add(chunk.len(), Ordering::SeqCst);
                if drip {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
        let target = hook_at(address);
        let started = Instant::now();
        let result = Client::new()
            .post(
                &target,
                address,
                &[],
                "{}".into(),
                Duration::from_millis(500),
            )
            .await;
        let took = started.elapsed();
        if drip {
            // 1 byte per 50 ms: the excerpt never fills, the deadline ends it.
            assert!(
                matches!(result, Err(RequestError::Timeout(_))),
                "{result:?}"
            );
        } else {
            let answer = result.unwrap();
            assert_eq!(answer.status, 200);
            assert_eq!(
                answer.excerpt.len(),
                aula_processor::webhooks::http::EXCERPT_BYTES
            );
        }
        assert!(took < Duration::from_secs(1), "took {took:?}");
        // The sender stopped reading and closed: the receiver's writes stop.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after_close = sent.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            sent.load(Ordering::SeqCst),
            after_close,
            "still reading (drip: {drip})"
        );
    }
}
