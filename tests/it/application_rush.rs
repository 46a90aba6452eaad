//! The application rush (issue 17), through the whole service as `aula serve` runs it:
//! thousands of applicants apply at once to one course of 30 seats, each from its own
//! loopback address (so the per-address rate limit is not what is measured).
//!
//! Every application is accepted on the first try (each is its own stream: nothing to
//! race for), exactly 30 are enrolled and they are the first 30 in the log's commit
//! order (the admissions subscription decides in that order, in batches), every
//! applicant gets exactly one "scheduled" and one result e-mail through a real SMTP
//! conversation on loopback, and the idempotency key returns the same application.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aula_domain::course::{Course, CourseServices};
use aula_eventlog::testing::TestDatabase;
use aula_eventlog::CommandBus;
use serde_json::{json, Value};
use support::free_port;
use support::service::Service;
use uuid::Uuid;

const APPLICANTS: usize = 2_000;
const SEATS: u32 = 30;

fn email(i: usize) -> String {
    format!("applicant{i}@rush.test")
}

fn application(course: Uuid, i: usize, name: &str, key: Option<&str>) -> Value {
    json!({ "input": {
        "courseId": course, "name": name, "birthDate": "2004-05-06",
        "email": email(i), "idempotencyKey": key,
    }})
}

async fn post(client: &reqwest::Client, base: &str, variables: Value) -> Value {
    client
        .post(format!("{base}/graphql"))
        .json(&json!({ "query": support::APPLY_TO_COURSE, "variables": variables }))
        .send()
        .await
        .expect("the request reached the server")
        .json()
        .await
        .expect("a JSON answer")
}

fn code(response: &Value) -> Option<(String, String)> {
    let extensions = &response["errors"][0]["extensions"];
    extensions["code"].as_str().map(|code| {
        (
            code.to_owned(),
            extensions["reason"].as_str().unwrap_or("").to_owned(),
        )
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rush_of_applicants_is_accepted_at_once_and_seated_in_commit_order() {
    support::alone_in_own_process!(
        a_rush_of_applicants_is_accepted_at_once_and_seated_in_commit_order
    );
    let db = TestDatabase::new().await;
    let smtp_port = free_port();
    let smtp = support::smtp::accept_on(smtp_port).await;
    support::mail_to_port_with_quick_retries(smtp_port, 200);
    let service = Service::start(&db, |args| args.token_ttl_minutes = 60).await;
    let base = service.base.clone();

    // The course, opened as the API opens it after an offer.
    let bus = CommandBus::<Course>::with_upcasters(
        db.pool.clone(),
        CourseServices,
        aula_domain::upcasters(),
    );
    let course = aula_bench::seed::open_course(&bus, "Rush 101", SEATS)
        .await
        .unwrap();

    // Everyone at once: each applicant its own client and address, released together.
    let start = Arc::new(tokio::sync::Barrier::new(APPLICANTS));
    let mut applicants = Vec::with_capacity(APPLICANTS);
    for i in 0..APPLICANTS {
        let (start, base) = (start.clone(), base.clone());
        applicants.push(tokio::spawn(async move {
            let client = support::applicant_client(1, i, Duration::from_secs(60));
            start.wait().await;
            let key = format!("key-{i}");
            let answer = post(
                &client,
                &base,
                application(course, i, &format!("Applicant {i}"), Some(&key)),
            )
            .await;
            (i, client, answer)
        }));
    }
    let rush_started = Instant::now();
    let mut accepted: BTreeMap<usize, Uuid> = BTreeMap::new();
    let mut refused = Vec::new();
    let mut clients = BTreeMap::new();
    for applicant in applicants {
        let (i, client, answer) = applicant.await.unwrap();
        match answer["data"]["applyToCourse"]["id"].as_str() {
            Some(id) => {
                accepted.insert(i, id.parse().unwrap());
            }
            None => refused.push(format!("{i}: {answer}")),
        }
        clients.insert(i, client);
    }
    let accepting = rush_started.elapsed();
    println!(
        "{APPLICANTS} applications accepted in {accepting:?} ({:.0}/s)",
        APPLICANTS as f64 / accepting.as_secs_f64()
    );
    assert!(
        refused.is_empty(),
        "every application is accepted on the first try; refused: {} e.g. {:?}",
        refused.len(),
        refused.iter().take(3).collect::<Vec<_>>()
    );
    let distinct: BTreeSet<&Uuid> = accepted.values().collect();
    assert_eq!(distinct.len(), APPLICANTS, "one application per applicant");

    // The idempotency key: the same key and input return the same application and
    // record nothing; the same key with other input is refused; the same e-mail
    // without a key is the same application.
    let submitted_sql = "SELECT count(*) FROM events WHERE event_type = 'ApplicationSubmitted' AND payload->>'course_id' = $1";
    assert_eq!(
        db.scalar_with(submitted_sql, &course.to_string()).await,
        APPLICANTS as i64
    );
    // (applicant whose client posts, e-mail's number, name, key)
    for (i, email, name, key) in [
        (7, 7, "Applicant 7", Some("key-7")),
        (8, 8, "Applicant Eight", None),
    ] {
        let same = post(&clients[&i], &base, application(course, email, name, key)).await;
        assert_eq!(
            same["data"]["applyToCourse"]["id"],
            accepted[&i].to_string(),
            "{same}"
        );
    }
    for (i, email, name, key) in [
        (9, 9, "Someone Else", Some("key-9")),
        (10, 100_000, "Applicant 10", Some("key-10")),
    ] {
        let other = post(&clients[&i], &base, application(course, email, name, key)).await;
        assert_eq!(
            code(&other),
            Some(("CONFLICT".into(), "IDEMPOTENCY_KEY_REUSED".into())),
            "{other}"
        );
    }
    assert_eq!(
        db.scalar_with(submitted_sql, &course.to_string()).await,
        APPLICANTS as i64
    );

    // Every application decided, in batches.
    let decided_sql = "SELECT count(*) FROM events WHERE aggregate_type = 'course' AND aggregate_id = $1 AND event_type IN ('StudentEnrolled', 'EnrollmentDeclined')";
    support::eventually(support::PATIENCE, support::POLL_EVERY, || async {
        let decided = db.scalar_with(decided_sql, &course.to_string()).await;
        (decided >= APPLICANTS as i64)
            .then_some(())
            .ok_or(format!("{decided} of {APPLICANTS} applications decided"))
    })
    .await;
    println!(
        "last decision {:?} after the first application",
        rush_started.elapsed()
    );
    assert_eq!(
        db.scalar_with(decided_sql, &course.to_string()).await,
        APPLICANTS as i64,
        "decided once each"
    );

    // The seats went to the first 30 applications in the log's commit order.
    let order: Vec<(String,)> = sqlx::query_as(
        "SELECT aggregate_id FROM events WHERE event_type = 'ApplicationSubmitted' AND payload->>'course_id' = $1
         ORDER BY tx_id, global_position",
    )
    .bind(course.to_string())
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let first: BTreeSet<String> = order
        .iter()
        .take(SEATS as usize)
        .map(|(id,)| id.clone())
        .collect();
    let enrolled: Vec<(String,)> = sqlx::query_as(
        "SELECT payload->>'application_id' FROM events
         WHERE aggregate_type = 'course' AND aggregate_id = $1 AND event_type = 'StudentEnrolled'",
    )
    .bind(course.to_string())
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let enrolled: BTreeSet<String> = enrolled.into_iter().map(|(id,)| id).collect();
    assert_eq!(enrolled.len(), SEATS as usize, "exactly {SEATS} enrolled");
    assert_eq!(
        enrolled, first,
        "the first {SEATS} in commit order got the seats"
    );
    let batches: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT tx_id) FROM events WHERE aggregate_type = 'course' AND aggregate_id = $1
           AND event_type IN ('StudentEnrolled', 'EnrollmentDeclined')",
    )
    .bind(course.to_string())
    .fetch_one(&db.pool)
    .await
    .unwrap();
    println!("{APPLICANTS} decisions in {batches} appends");
    assert!(
        batches < APPLICANTS as i64 / 2,
        "decided in batches, not one by one ({batches})"
    );

    // E-mails: one "scheduled" and one result per applicant, through SMTP.
    support::eventually(support::PATIENCE, support::POLL_EVERY, || async {
        let sent = smtp.messages().len();
        (sent >= 2 * APPLICANTS)
            .then_some(())
            .ok_or(format!("only {sent} of {} e-mails", 2 * APPLICANTS))
    })
    .await;
    // Anything extra (a repeat's e-mail) would have been queued with the rest.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let messages = smtp.messages();
    assert_eq!(
        messages.len(),
        2 * APPLICANTS,
        "no e-mail twice, none for a repeat"
    );
    let mut by_recipient: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for message in &messages {
        assert_eq!(message.to.len(), 1, "{message:?}");
        by_recipient
            .entry(message.to[0].clone())
            .or_default()
            .push(message.subject.clone());
    }
    let enrolled_emails: BTreeSet<String> = sqlx::query_scalar(
        "SELECT payload->>'email' FROM events
         WHERE aggregate_type = 'course' AND aggregate_id = $1 AND event_type = 'StudentEnrolled'",
    )
    .bind(course.to_string())
    .fetch_all(&db.pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    for i in 0..APPLICANTS {
        let subjects = by_recipient.get(&email(i)).cloned().unwrap_or_default();
        let scheduled = subjects
            .iter()
            .filter(|s| s.contains("was scheduled"))
            .count();
        let enrolled = subjects
            .iter()
            .filter(|s| s.contains("You are enrolled"))
            .count();
        let declined = subjects
            .iter()
            .filter(|s| s.contains("was declined"))
            .count();
        assert_eq!(scheduled, 1, "{}: {subjects:?}", email(i));
        assert_eq!(enrolled + declined, 1, "{}: {subjects:?}", email(i));
        assert_eq!(
            enrolled == 1,
            enrolled_emails.contains(&email(i)),
            "{}",
            email(i)
        );
    }
    println!(
        "all {} e-mails {:?} after the first application",
        messages.len(),
        rush_started.elapsed()
    );

    service.stop(Duration::from_secs(60)).await;
}
