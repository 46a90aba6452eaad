//! Just enough SMTP (EHLO, MAIL, RCPT, DATA, QUIT, RSET, NOOP) to accept e-mails on a
//! loopback port; it counts the messages it received, and can be told to refuse them
//! for a while (a transient `421`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// The acceptor's counters and switch.
#[derive(Clone, Default)]
pub struct Smtp {
    pub received: Arc<AtomicUsize>,
    /// While true, every connection gets `421` (try again later).
    pub refuse: Arc<AtomicBool>,
}

/// Accepts e-mails on `127.0.0.1:port` until the runtime stops.
pub async fn accept_on(port: u16) -> Smtp {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("binding the test SMTP server on port {port}: {e}"));
    let smtp = Smtp::default();
    let (count, refuse) = (smtp.received.clone(), smtp.refuse.clone());
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let (count, refuse) = (count.clone(), refuse.clone());
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                if refuse.load(Ordering::SeqCst) {
                    let _ = write
                        .write_all(b"421 test.localhost busy, try later\r\n")
                        .await;
                    return;
                }
                let mut lines = BufReader::new(read).lines();
                if write
                    .write_all(b"220 test.localhost ESMTP ready\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
                while let Ok(Some(line)) = lines.next_line().await {
                    let verb = line
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_ascii_uppercase();
                    // A pooled connection opened earlier is refused too.
                    if verb == "MAIL" && refuse.load(Ordering::SeqCst) {
                        let _ = write
                            .write_all(b"421 test.localhost busy, try later\r\n")
                            .await;
                        return;
                    }
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" => b"250-test.localhost\r\n250 8BITMIME\r\n",
                        "HELO" | "MAIL" | "RCPT" | "RSET" | "NOOP" => b"250 OK\r\n",
                        "DATA" => {
                            if write
                                .write_all(b"354 end with <CRLF>.<CRLF>\r\n")
                                .await
                                .is_err()
                            {
                                return;
                            }
                            while let Ok(Some(line)) = lines.next_line().await {
                                if line == "." {
                                    break;
                                }
                            }
                            count.fetch_add(1, Ordering::SeqCst);
                            b"250 queued\r\n"
                        }
                        "QUIT" => {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            return;
                        }
                        _ => b"502 not implemented\r\n",
                    };
                    if write.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    smtp
}
