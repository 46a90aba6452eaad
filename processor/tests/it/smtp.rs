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

/// An SMTP server that cannot be reached (nothing listens, or it stops answering) is an
/// outage, like the database's: the attempt is spared (retried without counting against
/// the task's attempts, see `faults.rs`), so a relay down for longer than the ~2 minutes
/// of an e-mail's 8 attempts no longer ends its e-mails `dead`. A reply of the server's
/// (a 4xx) still counts. Before: every one of these counted.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_smtp_server_spares_the_attempt_and_a_reply_counts() {
    use aula_processor::TaskError;
    use std::time::Duration;
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};

    let message = EmailMessage {
        to: "ada@example.org".into(),
        subject: "Welcome".into(),
        text: "Hello".into(),
        html: "<p>Hello</p>".into(),
        idempotency_key: "email.welcome:1".into(),
    };
    let attempt = |url: String| {
        let message = message.clone();
        async move {
            let mailer = SmtpMailer::from_url(&url, "Aula <no-reply@aula.test>")
                .unwrap()
                .with_send_timeout(Duration::from_millis(500));
            TaskError::retry(mailer.send(&message).await.unwrap_err())
        }
    };
    // Nothing listens.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let refused = attempt(format!("smtp://127.0.0.1:{port}")).await;
    assert!(refused.is_unavailable(), "refused: {}", refused.chain());

    // Greets, then never answers; or closes at once; or says 421 "try later".
    for behaviour in ["silent", "closes", "421"] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("smtp://127.0.0.1:{}", listener.local_addr().unwrap().port());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                let (read, mut write) = socket.into_split();
                match behaviour {
                    "silent" => {
                        let _ = write.write_all(b"220 tarpit\r\n").await;
                        held.push((read, write));
                    }
                    "closes" => drop((read, write)),
                    _ => {
                        tokio::spawn(async move {
                            let _ = write.write_all(b"220 busy\r\n").await;
                            let mut lines = tokio::io::BufReader::new(read).lines();
                            while let Ok(Some(_)) = lines.next_line().await {
                                let _ = write.write_all(b"421 try again later\r\n").await;
                            }
                        });
                    }
                }
            }
        });
        let error = attempt(url).await;
        let spared = behaviour != "421";
        assert_eq!(
            error.is_unavailable(),
            spared,
            "{behaviour}: {}",
            error.chain()
        );
        assert!(!error.is_permanent(), "{behaviour}: {}", error.chain());
    }
}

/// A relay that is down for longer than an e-mail's retries: its attempts are recorded,
/// its last error says the relay could not be reached, and it does not end `dead` when
/// its 8 attempts are used; once the relay listens again it goes out, once. Before: the
/// task ended `dead` after its 8th attempt (about 2 minutes with the default backoff).
#[tokio::test(flavor = "multi_thread")]
async fn an_e_mail_outlives_a_relay_outage_longer_than_its_retries() {
    use crate::common::mail_config;
    use aula_eventlog::testing::TestDatabase;

    let db = TestDatabase::new().await;
    // Nothing listens on the relay's port.
    let port = a_closed_port();
    let running = start_with_relay_at(&db, port, mail_config(), "relay-outage").await;
    welcome_a_student(&db).await;
    let task = "SELECT id, status, attempt, max_attempts, coalesce(last_error, '') FROM tasks
                WHERE kind = 'email.welcome'";
    // Twelve attempts, more than the kind's 8, and still not given up.
    let (id, status, attempt, max_attempts, last_error) =
        eventually("twelve attempts while the relay is down", || async {
            let row: Option<(i64, String, i32, i32, String)> =
                sqlx::query_as(task).fetch_optional(&db.pool).await.unwrap();
            row.filter(|r| r.2 >= 12 || matches!(r.1.as_str(), "dead" | "failed"))
        })
        .await;
    assert!(
        matches!(status.as_str(), "pending" | "running"),
        "{status} after {attempt} attempts (of {max_attempts}): {last_error}"
    );
    assert!(max_attempts > attempt, "{attempt} of {max_attempts}");
    assert!(
        last_error.contains("could not be reached"),
        "the last error says why: {last_error}"
    );
    let recorded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM task_attempts WHERE task_id = $1 AND outcome = 'retry'",
    )
    .bind(id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(recorded >= 11, "every attempt is recorded: {recorded}");

    // Its first unreachable attempt is remembered, for the give-up window.
    let remembered: i64 =
        sqlx::query_scalar("SELECT count(*) FROM mail_unreachable WHERE task_id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(remembered, 1);

    // The relay is back: the e-mail goes out, once.
    let sink = SmtpSink::start_on(port).await;
    let status = eventually("the e-mail to go out", || async {
        let row: (String,) = sqlx::query_as("SELECT status FROM tasks WHERE id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        (!matches!(row.0.as_str(), "pending" | "running")).then_some(row.0)
    })
    .await;
    assert_eq!(status, "succeeded");
    assert_eq!(sink.to("rui@example.org").len(), 1, "delivered once");
    assert_eq!(
        unreachable_remembered(&db).await,
        0,
        "sent: the relay's outage is forgotten"
    );
    running.stop().await;
}

/// A relay that never answers (`SMTP_URL` pointing nowhere) is not waited for for
/// ever: while it is unreachable the e-mail's last error says since when and when it
/// will be given up; past `MailConfig::unreachable_give_up` since its first
/// unreachable attempt, the e-mail ends `dead` with a last error that says why. Before:
/// it stayed pending for ever, its attempts never counted, and nobody was told.
#[tokio::test(flavor = "multi_thread")]
async fn an_e_mail_whose_relay_never_answers_is_given_up_after_the_window() {
    use aula_eventlog::testing::TestDatabase;
    use std::time::Duration;

    let db = TestDatabase::new().await;
    // Nothing listens on the relay's port, and nothing will.
    let port = a_closed_port();
    let window = Duration::from_secs(3);
    let config = giving_up_after(window);
    let running = start_with_relay_at(&db, port, config, "relay-nowhere").await;
    welcome_a_student(&db).await;
    let task =
        "SELECT id, status, coalesce(last_error, '') FROM tasks WHERE kind = 'email.welcome'";
    let row = || async {
        let row: Option<(i64, String, String)> =
            sqlx::query_as(task).fetch_optional(&db.pool).await.unwrap();
        row
    };
    // While it waits, its last error tells the operator since when and until when.
    let (id, status, waiting) = eventually("an unreachable attempt", || async {
        row().await.filter(|r| !r.2.is_empty())
    })
    .await;
    assert!(
        matches!(status.as_str(), "pending" | "running"),
        "{status}: {waiting}"
    );
    assert!(
        waiting.contains("could not be reached")
            && waiting.contains("unreachable since")
            && waiting.contains("given up at"),
        "{waiting}"
    );
    // Past the window: dead, and why.
    let (_, status, last_error) = eventually("the e-mail to be given up", || async {
        row()
            .await
            .filter(|r| !matches!(r.1.as_str(), "pending" | "running"))
    })
    .await;
    assert_eq!(status, "dead", "{last_error}");
    assert!(
        last_error.contains("given up")
            && last_error.contains("could not be reached")
            && last_error.contains("SMTP_URL"),
        "{last_error}"
    );
    // It waited the window (its attempts did not count meanwhile), not longer than a
    // few retries past it.
    let (attempts, waited): (i64, f64) = sqlx::query_as(
        "SELECT count(*), extract(epoch FROM max(finished_at) - min(started_at))::float8
         FROM task_attempts WHERE task_id = $1",
    )
    .bind(id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(attempts >= 2, "{attempts} attempts");
    assert!(
        waited >= window.as_secs_f64() && waited < window.as_secs_f64() + 10.0,
        "given up after {waited} s"
    );
    assert_eq!(
        unreachable_remembered(&db).await,
        0,
        "given up: a retried task starts afresh"
    );
    eprintln!("a relay pointing nowhere: given up after {waited:.1} s and {attempts} attempts (window {window:?})");
    running.stop().await;
}

/// The window is the relay's unbroken silence: an attempt the relay answers (here a
/// 421 "try later", which counts as an attempt as before) forgets when it was first
/// unreachable, so a later outage starts a window of its own.
#[tokio::test(flavor = "multi_thread")]
async fn an_answer_from_the_relay_forgets_when_it_was_unreachable() {
    use crate::common::mail_config;
    use aula_eventlog::testing::TestDatabase;
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};

    let db = TestDatabase::new().await;
    let port = a_closed_port();
    let running = start_with_relay_at(&db, port, mail_config(), "relay-answers").await;
    welcome_a_student(&db).await;
    let remembered = || unreachable_remembered(&db);
    eventually("an unreachable attempt remembered", || async {
        (remembered().await == 1).then_some(())
    })
    .await;
    // The relay comes up, busy: it answers 421 to everything.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let _ = write.write_all(b"220 busy\r\n").await;
                let mut lines = tokio::io::BufReader::new(read).lines();
                while let Ok(Some(_)) = lines.next_line().await {
                    let _ = write.write_all(b"421 try again later\r\n").await;
                }
            });
        }
    });
    let last_error = eventually("an answered attempt", || async {
        let error: Option<String> = sqlx::query_scalar(
            "SELECT last_error FROM tasks WHERE kind = 'email.welcome' AND last_error LIKE '%421%'",
        )
        .fetch_optional(&db.pool)
        .await
        .unwrap();
        error
    })
    .await;
    assert!(!last_error.contains("unreachable since"), "{last_error}");
    assert_eq!(remembered().await, 0, "the relay answered: {last_error}");
    running.stop().await;
}

/// Time nobody could try the e-mail (the processor stopped, the database down, a
/// backlog) says nothing about the relay: it does not count towards the give-up
/// window. Here the processor stops after the first unreachable attempt and stays
/// down longer than the window; back, the relay still refuses, and the e-mail waits
/// a window of attempts again. Before: it ended `dead` at the first attempt after the
/// restart, as if the relay had been seen unreachable all along.
#[tokio::test(flavor = "multi_thread")]
async fn time_nobody_tried_does_not_count_as_an_unreachable_relay() {
    use aula_eventlog::testing::TestDatabase;
    use std::time::{Duration, Instant};

    let db = TestDatabase::new().await;
    let port = a_closed_port();
    let window = Duration::from_secs(3);
    let config = giving_up_after(window);
    let running = start_with_relay_at(&db, port, config.clone(), "relay-paused").await;
    welcome_a_student(&db).await;
    let task = "SELECT status FROM tasks WHERE kind = 'email.welcome'";
    eventually("an unreachable attempt", || async {
        (unreachable_remembered(&db).await > 0).then_some(())
    })
    .await;
    running.stop().await;
    // Down longer than the window: nobody tries the e-mail meanwhile.
    tokio::time::sleep(window + Duration::from_secs(2)).await;
    let restarted = Instant::now();
    let running = start_with_relay_at(&db, port, config, "relay-paused").await;
    let status = eventually("the e-mail to be given up", || async {
        let status: Option<String> = sqlx::query_scalar(task)
            .fetch_optional(&db.pool)
            .await
            .unwrap();
        status.filter(|s| !matches!(s.as_str(), "pending" | "running" | "retrying"))
    })
    .await;
    let waited = restarted.elapsed();
    assert_eq!(status, "dead");
    assert!(
        waited >= window - Duration::from_millis(500),
        "given up {waited:?} after the restart: the time it was down counted"
    );
    running.stop().await;
}

/// A port nothing listens on (bound, then let go).
fn a_closed_port() -> u16 {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    closed.local_addr().unwrap().port()
}

/// Starts a processor, reactions included, whose e-mails go to a relay at `port` on
/// the loopback (2 s to send one).
async fn start_with_relay_at(
    db: &aula_eventlog::testing::TestDatabase,
    port: u16,
    config: aula_processor::MailConfig,
    worker: &str,
) -> crate::common::Running {
    let mailer = SmtpMailer::from_url(
        &format!("smtp://127.0.0.1:{port}"),
        "Aula <no-reply@aula.test>",
    )
    .unwrap()
    .with_send_timeout(std::time::Duration::from_secs(2));
    let registry =
        aula_processor::handlers::Registry::standard(std::sync::Arc::new(mailer), config);
    crate::common::start(db, registry, crate::common::fast_config(worker), true).await
}

/// Creates a student, whose welcome e-mail (`email.welcome`) the reactions issue.
async fn welcome_a_student(db: &aula_eventlog::testing::TestDatabase) {
    use crate::common::{born_on, bus, meta};
    use aula_domain::student::{Student, StudentCommand, StudentServices};
    use aula_domain::values::{Email, InstitutionId, PersonName, UserId};
    use uuid::Uuid;

    let institution = Uuid::new_v4();
    bus::<Student>(&db.pool, StudentServices)
        .execute(
            &Uuid::new_v4().to_string(),
            StudentCommand::CreateStudent {
                institution_id: InstitutionId::from_uuid(institution),
                user_id: UserId::from_uuid(Uuid::new_v4()),
                name: PersonName::parse("Rui Costa").unwrap(),
                email: Email::parse("rui@example.org").unwrap(),
                birth_date: born_on(2004, 1, 1),
            },
            &meta(Some(institution)),
        )
        .await
        .unwrap();
}

/// The tests' mail settings, giving an unreachable relay up after `window`.
fn giving_up_after(window: std::time::Duration) -> aula_processor::MailConfig {
    aula_processor::MailConfig {
        unreachable_give_up: window,
        ..crate::common::mail_config()
    }
}

/// How many e-mails remember since when their relay has been unreachable.
async fn unreachable_remembered(db: &aula_eventlog::testing::TestDatabase) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM mail_unreachable")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}
