//! Just enough SMTP (EHLO, MAIL, RCPT, DATA, QUIT, RSET, NOOP) to accept e-mails on a
//! loopback port; it counts the messages it received, keeps each one's recipients and
//! subject, and can be told to refuse them for a while (a transient `421`) or to reject
//! every recipient (a permanent `550`: the honest way for a test to fail an e-mail, now
//! that a relay nobody listens on is an outage whose e-mails wait for it).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// The acceptor's counters and switch.
#[derive(Clone, Default)]
pub struct Smtp {
    pub received: Arc<AtomicUsize>,
    /// While true, every connection gets `421` (try again later).
    pub refuse: Arc<AtomicBool>,
    /// While true, every `RCPT` and `DATA` gets `550` (permanent: the e-mail fails at
    /// once, `failed`, as for an address the relay will never take).
    pub reject: Arc<AtomicBool>,
    /// Every message accepted, in order.
    pub messages: Arc<Mutex<Vec<Received>>>,
}

/// One accepted message.
#[derive(Debug, Clone)]
pub struct Received {
    /// The `RCPT TO` addresses.
    pub to: Vec<String>,
    /// The `Subject` header (unfolded), empty if none.
    pub subject: String,
    /// When it was accepted.
    pub at: std::time::Instant,
}

impl Smtp {
    pub fn messages(&self) -> Vec<Received> {
        self.messages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Rejects every e-mail on `127.0.0.1:port` (a permanent `550`) until told otherwise
/// (`reject` set to false), then accepts them like [`accept_on`].
pub async fn rejecting_on(port: u16) -> Smtp {
    let smtp = accept_on(port).await;
    smtp.reject.store(true, Ordering::SeqCst);
    smtp
}

/// Accepts e-mails on `127.0.0.1:port` until the runtime stops.
pub async fn accept_on(port: u16) -> Smtp {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("binding the test SMTP server on port {port}: {e}"));
    let smtp = Smtp::default();
    let (count, refuse) = (smtp.received.clone(), smtp.refuse.clone());
    let (messages, reject) = (smtp.messages.clone(), smtp.reject.clone());
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let (count, refuse) = (count.clone(), refuse.clone());
            let (messages, reject) = (messages.clone(), reject.clone());
            tokio::spawn(async move {
                let mut recipients: Vec<String> = Vec::new();
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
                    if matches!(verb.as_str(), "RCPT" | "DATA") && reject.load(Ordering::SeqCst) {
                        let _ = write
                            .write_all(b"550 5.1.1 test.localhost rejects this message\r\n")
                            .await;
                        continue;
                    }
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" => b"250-test.localhost\r\n250 8BITMIME\r\n",
                        "RCPT" => {
                            let address = line
                                .split_once('<')
                                .and_then(|(_, rest)| rest.split_once('>'))
                                .map(|(address, _)| address.to_owned())
                                .unwrap_or_default();
                            recipients.push(address);
                            b"250 OK\r\n"
                        }
                        "MAIL" | "RSET" => {
                            recipients.clear();
                            b"250 OK\r\n"
                        }
                        "HELO" | "NOOP" => b"250 OK\r\n",
                        "DATA" => {
                            if write
                                .write_all(b"354 end with <CRLF>.<CRLF>\r\n")
                                .await
                                .is_err()
                            {
                                return;
                            }
                            let mut subject = String::new();
                            let (mut in_headers, mut in_subject) = (true, false);
                            while let Ok(Some(line)) = lines.next_line().await {
                                if line == "." {
                                    break;
                                }
                                if !in_headers {
                                    continue;
                                }
                                if line.is_empty() {
                                    in_headers = false;
                                } else if in_subject && line.starts_with([' ', '\t']) {
                                    subject.push(' ');
                                    subject.push_str(line.trim());
                                } else if let Some(value) = line.strip_prefix("Subject:") {
                                    subject = value.trim().to_owned();
                                    in_subject = true;
                                } else {
                                    in_subject = false;
                                }
                            }
                            messages
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(Received {
                                    to: std::mem::take(&mut recipients),
                                    subject,
                                    at: std::time::Instant::now(),
                                });
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
