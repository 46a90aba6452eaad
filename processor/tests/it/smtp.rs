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
