//! A real SMTP conversation: `SmtpMailer` (lettre) talks to a minimal SMTP server on
//! loopback, started by the test, which records what it received.

use crate::common::{eventually, SmtpSink};

use aula_processor::mail::{EmailMessage, Mailer, SmtpMailer};

#[tokio::test(flavor = "multi_thread")]
async fn the_smtp_mailer_delivers_a_multipart_message_to_a_real_smtp_server() {
    let sink = SmtpSink::start().await;
    let mailer = SmtpMailer::from_url(&sink.url(), "Aula <no-reply@aula.test>").unwrap();
    let message = EmailMessage {
        to: "ada@example.org".into(),
        subject: "Your application to Física I was scheduled".into(),
        text: "Hello Ada, we received your application.".into(),
        html: "<p>Hello Ada, we received your <b>application</b>.</p>".into(),
        idempotency_key: "email.application_scheduled:42".into(),
    };
    mailer.send(&message).await.unwrap();
    let conversation = eventually("a message received", || async {
        sink.delivered.lock().unwrap().first().cloned()
    })
    .await;
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

/// A server that accepts, greets and then never answers (a hung relay, a tarpit): the
/// send is given up at its deadline as a transient error (the task is retried), and the
/// next send does not reuse the connection left mid-conversation. Before: lettre bounds
/// only the connect, so the send, and the worker running it, waited for ever.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_stops_answering_fails_the_send_at_its_deadline_and_is_left() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    use tokio::io::AsyncWriteExt as _;

    let sink = SmtpSink::start().await;
    // The first connection is greeted and then left hanging; later ones reach the sink.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("smtp://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    let sink_port = sink.port;
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut socket, _)) = listener.accept().await {
            if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                let _ = socket.write_all(b"220 tarpit ESMTP\r\n").await;
                held.push(socket);
                continue;
            }
            tokio::spawn(async move {
                let mut upstream = tokio::net::TcpStream::connect(("127.0.0.1", sink_port))
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut socket, &mut upstream).await;
            });
        }
    });
    let mailer = SmtpMailer::from_url(&url, "Aula <no-reply@aula.test>")
        .unwrap()
        .with_send_timeout(Duration::from_secs(1));
    let message = |key: &str| EmailMessage {
        to: "ada@example.org".into(),
        subject: "Welcome".into(),
        text: "Hello".into(),
        html: "<p>Hello</p>".into(),
        idempotency_key: key.into(),
    };

    let started = Instant::now();
    let first = tokio::time::timeout(Duration::from_secs(10), mailer.send(&message("a")))
        .await
        .expect("the send to a server that stopped answering never ended");
    let took = started.elapsed();
    let error = first.expect_err("nothing was sent");
    assert!(
        !error.is_permanent(),
        "retried, not failed for good: {error}"
    );
    assert!(took < Duration::from_secs(3), "given up after {took:?}");

    let second = tokio::time::timeout(Duration::from_secs(10), mailer.send(&message("b")))
        .await
        .expect("the next send hung on the connection left mid-conversation");
    second.unwrap();
    assert_eq!(sink.delivered.lock().unwrap().len(), 1);
    assert_eq!(connections.load(Ordering::SeqCst), 2, "a new connection");
    eprintln!("a hung SMTP server: send given up after {took:?}; the next send went through");
}
