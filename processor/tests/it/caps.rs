//! The per-class concurrency caps of a worker process (`kinds::KindClass`): e-mails,
//! however many and however slow their relay, never take every slot, so the work
//! behind them (enrollment decisions) still runs.

use crate::common::*;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use aula_eventlog::testing::TestDatabase;
use aula_processor::handlers::Registry;
use aula_processor::kinds::{EMAIL_APPLICATION_SCHEDULED, ENROLLMENT_DECIDE};
use aula_processor::mail::SmtpMailer;

/// A rush of enrollment requests against a slow relay (each message takes 1.5 s): every
/// request issues an e-mail (priority 15) and a decision (priority 20). With 4 slots,
/// e-mails hold at most 2 (the default cap, half the slots), so the decisions are all
/// made while the first e-mails are still in flight. Before: the 4 slots went to e-mails,
/// which sort first, and the decisions waited for all 10 of them (at least 3 s).
#[tokio::test(flavor = "multi_thread")]
async fn slow_e_mails_leave_slots_for_the_decisions_behind_them() {
    const REQUESTS: usize = 10;
    let db = TestDatabase::new().await;
    let sink = SmtpSink::start_slow(Duration::from_millis(1500)).await;
    let school = school(&db.pool, REQUESTS as u32).await;
    for i in 0..REQUESTS {
        school
            .request_enrollment(&db.pool, &format!("applicant{i}@example.org"))
            .await;
    }
    let mailer = SmtpMailer::from_url(&sink.url(), "Aula <no-reply@aula.test>").unwrap();
    let registry = Registry::standard(Arc::new(mailer), mail_config());
    let config = aula_processor::ProcessorConfig {
        concurrency: 4,
        ..fast_config("capped-worker")
    };
    let started = std::time::Instant::now();
    let running = start(&db, registry, config, true).await;

    let count = |kind: &str, status: &str| {
        format!("SELECT count(*) FROM tasks WHERE kind = '{kind}' AND status = '{status}'")
    };
    let decided = count(ENROLLMENT_DECIDE, "succeeded");
    let sent = count(EMAIL_APPLICATION_SCHEDULED, "succeeded");
    until_count(&db.pool, &decided, "every decision", |n| {
        n == REQUESTS as i64
    })
    .await;
    let decided_after = started.elapsed();
    let delivered = sink.delivered.lock().unwrap().len();
    let e_mails_done = scalar_i64(&db.pool, &sent).await;
    eprintln!(
        "slow relay: {REQUESTS} decisions made {decided_after:?} after the start, \
         {delivered} e-mails delivered by then"
    );
    assert!(
        e_mails_done < 4 && delivered < 4,
        "the decisions waited for the e-mails: {e_mails_done} e-mail tasks done, \
         {delivered} messages delivered when the last decision was made"
    );
    // The e-mails still go out, never more than 2 at once.
    until_count(&db.pool, &sent, "the e-mails", |n| n >= 4).await;
    let most = sink.most_in_flight.load(Ordering::SeqCst);
    assert!(most <= 2, "{most} e-mails at once in 4 slots");
    assert!(most >= 1);
    running.stop().await;
}
