//! A real SMTP conversation: `SmtpMailer` (lettre) talks to a minimal SMTP server on
//! loopback, started by the test, which records what it received.

use std::sync::{Arc, Mutex};

use aula_processor::mail::{EmailMessage, Mailer, SmtpMailer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Debug, Default, Clone)]
struct Received {
    commands: Vec<String>,
    data: String,
}

/// Speaks just enough SMTP (EHLO, MAIL, RCPT, DATA, QUIT, RSET, NOOP) for one client.
async fn smtp_server() -> (u16, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let received: Arc<Mutex<Vec<Received>>> = Arc::default();
    let store = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let store = store.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                write
                    .write_all(b"220 test.localhost ESMTP ready\r\n")
                    .await
                    .unwrap();
                let mut current = Received::default();
                while let Ok(Some(line)) = lines.next_line().await {
                    let verb = line
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_ascii_uppercase();
                    current.commands.push(line.clone());
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" => b"250-test.localhost\r\n250 8BITMIME\r\n",
                        "HELO" | "MAIL" | "RCPT" | "RSET" | "NOOP" => b"250 OK\r\n",
                        "DATA" => {
                            write
                                .write_all(b"354 end with <CRLF>.<CRLF>\r\n")
                                .await
                                .unwrap();
                            let mut data = String::new();
                            while let Ok(Some(line)) = lines.next_line().await {
                                if line == "." {
                                    break;
                                }
                                data.push_str(&line);
                                data.push('\n');
                            }
                            current.data = data;
                            store.lock().unwrap().push(current.clone());
                            b"250 queued\r\n"
                        }
                        "QUIT" => {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            return;
                        }
                        _ => b"502 not implemented\r\n",
                    };
                    write.write_all(reply).await.unwrap();
                }
            });
        }
    });
    (port, received)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_smtp_mailer_delivers_a_multipart_message_to_a_real_smtp_server() {
    let (port, received) = smtp_server().await;
    let mailer = SmtpMailer::from_url(
        &format!("smtp://127.0.0.1:{port}"),
        "Aula <no-reply@aula.test>",
    )
    .unwrap();
    let message = EmailMessage {
        to: "ada@example.org".into(),
        subject: "Your application to Física I was scheduled".into(),
        text: "Hello Ada, we received your application.".into(),
        html: "<p>Hello Ada, we received your <b>application</b>.</p>".into(),
        idempotency_key: "email.application_scheduled:42".into(),
    };
    mailer.send(&message).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let conversation = loop {
        if let Some(first) = received.lock().unwrap().first().cloned() {
            break first;
        }
        assert!(std::time::Instant::now() < deadline, "no message received");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let commands = conversation.commands.join("\n");
    assert!(
        commands.contains("MAIL FROM:<no-reply@aula.test>"),
        "{commands}"
    );
    assert!(commands.contains("RCPT TO:<ada@example.org>"), "{commands}");
    let data = conversation.data;
    assert!(data.contains("To: ada@example.org"), "{data}");
    assert!(data.contains("From: Aula <no-reply@aula.test>"), "{data}");
    assert!(data.contains("Subject: "), "{data}");
    assert!(data.contains("multipart/alternative"), "{data}");
    assert!(data.contains("text/plain"), "{data}");
    assert!(data.contains("text/html"), "{data}");
    assert!(
        data.contains("Hello Ada, we received your application."),
        "{data}"
    );
    assert!(data.contains("Message-ID: <"), "{data}");
}
