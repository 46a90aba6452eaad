//! Rebuilding from history: after a random workload the rebuilt tables hold exactly the
//! live rows, also when the rebuild races live writes and the live subscriptions.

use crate::common;

use aula_domain::course::CourseCommand;
use aula_domain::values::Capacity;
use aula_eventlog::testing::TestDatabase;
use aula_eventlog::Actor;
use aula_projections::{rebuild, rebuild_progress, status, NAMES};
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

struct Campus {
    institution: Uuid,
    id: Uuid,
}

/// `operations` random commands over a few courses: applications decided at once or
/// left pending, cancellations, capacity changes, closings. Rejections are fine.
async fn workload(
    db: &TestDatabase,
    seed: u64,
    operations: usize,
    courses: &mut Vec<(Uuid, Vec<Uuid>)>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let institutions = [Uuid::from_u128(1), Uuid::from_u128(2)];
    let campuses: Vec<Campus> = (0..4)
        .map(|i| Campus {
            institution: institutions[i % 2],
            id: Uuid::from_u128(100 + i as u128),
        })
        .collect();
    let users: Vec<World> = (0..3)
        .map(|i| {
            World::new(
                &db.pool,
                Actor::User(Uuid::from_u128(1000 + i)),
                institutions[i as usize % 2],
            )
        })
        .collect();
    for _ in 0..operations {
        let world = &users[rng.gen_range(0..users.len())];
        let roll = rng.gen_range(0..100);
        if courses.is_empty() || roll < 5 {
            let campus = &campuses[rng.gen_range(0..campuses.len())];
            let course = Uuid::new_v4();
            world
                .open(
                    course,
                    campus.institution,
                    campus.id,
                    &format!("Course {}", courses.len()),
                    rng.gen_range(1..6),
                )
                .await;
            courses.push((course, Vec::new()));
            continue;
        }
        let index = rng.gen_range(0..courses.len());
        let course = courses[index].0;
        match roll {
            5..=36 => {
                // The API's shape: a stream of its own, decided in a batch.
                let application = world.submit(course, rng.gen_range(16..70)).await;
                let id = application.application_id.into();
                if rng.gen_bool(0.9) {
                    let _ = world.decide_batch(course, vec![application]).await;
                }
                courses[index].1.push(id);
            }
            37..=69 => {
                // The older shape, in the course's stream.
                let application = world.request(course, rng.gen_range(16..70)).await;
                if rng.gen_bool(0.9) {
                    let _ = world
                        .run(
                            course,
                            CourseCommand::DecideEnrollment {
                                application_id: application.into(),
                                today: today(),
                            },
                        )
                        .await;
                }
                courses[index].1.push(application);
            }
            70..=87 => {
                let applications = &courses[index].1;
                if !applications.is_empty() {
                    let application = applications[rng.gen_range(0..applications.len())];
                    let _ = world.cancel(course, application).await;
                }
            }
            88..=97 => {
                let capacity = Capacity::new(rng.gen_range(1..8)).unwrap();
                let _ = world
                    .run(course, CourseCommand::ChangeCapacity { capacity })
                    .await;
            }
            _ => {
                let _ = world.run(course, CourseCommand::CloseCourse).await;
            }
        }
    }
    people(db, seed, operations / 5, &institutions, courses).await;
}

/// Students, teachers, their accounts' changes and exam grades, for the `directory`
/// read model: created through their aggregates; account changes are appended as the
/// user stream's events (the `user` aggregate needs a whole sign-up to exist).
async fn people(
    db: &TestDatabase,
    seed: u64,
    operations: usize,
    institutions: &[Uuid],
    courses: &[(Uuid, Vec<Uuid>)],
) {
    use aula_domain::exam_grade::{ExamGrade, ExamGradeCommand, ExamGradeServices};
    use aula_domain::student::{Student, StudentCommand, StudentServices};
    use aula_domain::teacher::{Teacher, TeacherCommand, TeacherServices};
    use aula_domain::values::*;
    use aula_eventlog::{CommandBus, EventMetadata};

    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let students: CommandBus<Student> =
        CommandBus::with_upcasters(db.pool.clone(), StudentServices, aula_domain::upcasters());
    let teachers: CommandBus<Teacher> =
        CommandBus::with_upcasters(db.pool.clone(), TeacherServices, aula_domain::upcasters());
    let grades: CommandBus<ExamGrade> =
        CommandBus::with_upcasters(db.pool.clone(), ExamGradeServices, aula_domain::upcasters());
    let meta = EventMetadata::new(Actor::System, None);
    // (person id, user id, user stream's next sequence, institution)
    let mut people: Vec<(Uuid, Uuid, i64, Uuid, bool)> = Vec::new();
    let mut recorded: Vec<Uuid> = Vec::new();
    for n in 0..operations {
        let roll = rng.gen_range(0..100);
        let institution = institutions[rng.gen_range(0..institutions.len())];
        if people.len() < 2 || roll < 30 {
            let (person, user) = (Uuid::new_v4(), Uuid::new_v4());
            let student = rng.gen_bool(0.7);
            let name = PersonName::parse(&format!("Person {n}")).unwrap();
            let email = Email::parse(&format!("person{n}-{seed}@example.org")).unwrap();
            if student {
                students
                    .execute(
                        &person.to_string(),
                        StudentCommand::CreateStudent {
                            institution_id: InstitutionId::from_uuid(institution),
                            user_id: UserId::from_uuid(user),
                            name,
                            email,
                            birth_date: BirthDate::parse(born_aged(20), today()).unwrap(),
                        },
                        &meta,
                    )
                    .await
                    .unwrap();
            } else {
                teachers
                    .execute(
                        &person.to_string(),
                        TeacherCommand::CreateTeacher {
                            institution_id: InstitutionId::from_uuid(institution),
                            user_id: UserId::from_uuid(user),
                            name,
                            email,
                        },
                        &meta,
                    )
                    .await
                    .unwrap();
            }
            people.push((person, user, 1, institution, student));
            continue;
        }
        let index = rng.gen_range(0..people.len());
        match roll {
            30..=59 => {
                // An account change (name and/or e-mail), or a deactivation.
                let (_, user, sequence, _, _) = people[index];
                let payload = if roll < 55 {
                    serde_json::json!({ "type": "UserUpdated", "name": format!("Renamed {n}"),
                        "email": if roll % 2 == 0 { serde_json::json!(format!("moved{n}@example.org")) } else { serde_json::Value::Null } })
                } else {
                    serde_json::json!({ "type": "UserDeactivated", "reason": "left" })
                };
                let event_type = payload["type"].as_str().unwrap().to_owned();
                sqlx::query(
                    "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type,
                         event_version, payload, metadata)
                     VALUES ('user', $1, $2, $3, '1.0', $4, '{}')",
                )
                .bind(user.to_string())
                .bind(sequence)
                .bind(event_type)
                .bind(payload)
                .execute(&db.pool)
                .await
                .unwrap();
                people[index].2 += 1;
            }
            60..=84 if !courses.is_empty() => {
                let student = people.iter().find(|p| p.4).map(|p| p.0);
                let teacher = people.iter().find(|p| !p.4).map(|p| p.0);
                if let (Some(student), Some(teacher)) = (student, teacher) {
                    let grade = Uuid::new_v4();
                    grades
                        .execute(
                            &grade.to_string(),
                            ExamGradeCommand::RecordNote {
                                institution_id: InstitutionId::from_uuid(people[index].3),
                                course_id: CourseId::from_uuid(
                                    courses[rng.gen_range(0..courses.len())].0,
                                ),
                                student_id: StudentId::from_uuid(student),
                                teacher_id: TeacherId::from_uuid(teacher),
                                exam_name: ExamName::parse(&format!("Exam {n}")).unwrap(),
                                note: GradeNote::parse(&format!("{}.5", rng.gen_range(0..10)))
                                    .unwrap(),
                                at: chrono::Utc::now(),
                            },
                            &meta,
                        )
                        .await
                        .unwrap();
                    recorded.push(grade);
                }
            }
            _ if !recorded.is_empty() => {
                let grade = recorded[rng.gen_range(0..recorded.len())];
                let teacher = people.iter().find(|p| !p.4).map(|p| p.0).unwrap();
                let _ = grades
                    .execute(
                        &grade.to_string(),
                        ExamGradeCommand::ChangeNote {
                            note: GradeNote::parse(&format!("{}.25", rng.gen_range(0..10)))
                                .unwrap(),
                            teacher_id: TeacherId::from_uuid(teacher),
                            at: chrono::Utc::now(),
                        },
                        &meta,
                    )
                    .await;
            }
            _ => {}
        }
    }
}

async fn rebuild_all(db: &TestDatabase) {
    for name in NAMES {
        let report = rebuild(&db.pool, db.connect.clone(), name).await.unwrap();
        assert!(report.events > 0);
    }
}

async fn leftover_schemas(db: &TestDatabase) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'rebuild\\_%' OR nspname LIKE 'retired\\_%'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rebuilt_tables_equal_the_live_ones_after_a_random_workload() {
    let db = TestDatabase::new().await;
    let mut courses = Vec::new();
    workload(&db, 7, 250, &mut courses).await;
    let live = start(&db, NAMES);
    wait_caught_up(&db.pool, NAMES).await;
    let before = snapshot(&db.pool).await;
    assert!(
        before.iter().all(|(_, rows)| !rows.is_empty()),
        "the workload touches every table"
    );

    // 1. Rebuild while the live subscriptions run, without new writes.
    rebuild_all(&db).await;
    assert_eq!(
        snapshot(&db.pool).await,
        before,
        "rebuilt rows differ from the live ones"
    );
    let progress = rebuild_progress(&db.pool).await.unwrap();
    assert_eq!(progress.len(), NAMES.len());
    let head: i64 = sqlx::query_scalar("SELECT max(global_position) FROM events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    for p in &progress {
        assert_eq!(
            (p.state.as_str(), p.position, p.remaining),
            ("done", head, 0),
            "{p:?}"
        );
        assert!(p.events_per_second > 0.0);
    }
    assert!(leftover_schemas(&db).await.is_empty());

    // 2. Rebuild while commands keep appending; the live subscriptions catch up on the
    //    swapped-in tables.
    let mut more = courses.clone();
    let writes = workload(&db, 8, 200, &mut more);
    let rebuilds = async {
        let reports = aula_projections::rebuild_many(&db.pool, db.connect.clone(), NAMES)
            .await
            .unwrap();
        assert_eq!(reports.len(), NAMES.len());
    };
    tokio::join!(writes, rebuilds);
    wait_caught_up(&db.pool, NAMES).await;
    let live_rows = snapshot(&db.pool).await;
    live.stop().await;
    assert_ne!(live_rows, before, "the second workload changed something");

    // 3. A rebuild from scratch with nothing running reproduces them exactly.
    rebuild_all(&db).await;
    assert_eq!(
        snapshot(&db.pool).await,
        live_rows,
        "live rows after a racing rebuild are wrong"
    );
    for s in status(&db.pool).await.unwrap() {
        assert_eq!(
            (s.lag_events, s.position, s.last_error.as_deref()),
            (0, s.position, None),
            "{s:?}"
        );
    }
    assert!(leftover_schemas(&db).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuilding_keeps_the_processors_columns_and_refuses_unknown_names() {
    let db = TestDatabase::new().await;
    let mut courses = Vec::new();
    workload(&db, 11, 30, &mut courses).await;
    // Two copies of one event: the original's `latest_copy_id` (the second) comes from
    // the events alone, so the rebuild must give it back.
    for _ in 0..2 {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             SELECT 'reprocessed', gen_random_uuid()::text, 1, event_type, event_version, payload,
                    jsonb_build_object('reprocessed_from', event_id::text)::json
             FROM events WHERE aggregate_type <> 'reprocessed' ORDER BY global_position LIMIT 1",
        )
        .execute(&db.pool)
        .await
        .unwrap();
    }
    catch_up(&db, &["admin_events"]).await;
    let latest: Option<uuid::Uuid> = sqlx::query_scalar(
        "SELECT latest_copy_id FROM admin_events WHERE latest_copy_id IS NOT NULL",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let last_copy: uuid::Uuid = sqlx::query_scalar(
        "SELECT event_id FROM events WHERE aggregate_type = 'reprocessed' ORDER BY global_position DESC LIMIT 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(latest, Some(last_copy));
    sqlx::query(
        "UPDATE admin_events SET status = 'processed', processed_at = recorded_at + interval '12 milliseconds',
             duration_ms = 12, tasks_succeeded = 2",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let before = snapshot(&db.pool).await;
    let options = || async {
        sqlx::query_scalar::<_, Option<Vec<String>>>(
            "SELECT reloptions::text[] FROM pg_class WHERE oid = 'admin_events'::regclass",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap()
    };
    let live_options = options().await;
    assert_eq!(live_options, Some(vec!["fillfactor=50".to_owned()]));
    rebuild(&db.pool, db.connect.clone(), "admin_events")
        .await
        .unwrap();
    assert_eq!(snapshot(&db.pool).await, before);
    // `LIKE ... INCLUDING ALL` does not copy storage parameters: the rebuild sets them.
    assert_eq!(options().await, live_options);
    assert!(matches!(
        rebuild(&db.pool, db.connect.clone(), "nope").await,
        Err(aula_projections::RebuildError::UnknownProjection(_))
    ));
}

/// Appends a reprocessed copy of the event `original` (as `aula_processor::reprocess`
/// does: a stream of its own, the original named in the metadata); returns its id.
async fn copy_of(db: &TestDatabase, original: Uuid) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'reprocessed', gen_random_uuid()::text, 1, event_type, event_version, payload,
                (metadata::jsonb || jsonb_build_object('reprocessed_from', event_id::text))::json
         FROM events WHERE event_id = $1
         RETURNING event_id",
    )
    .bind(original)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

async fn event_ids(db: &TestDatabase) -> Vec<Uuid> {
    sqlx::query_scalar("SELECT event_id FROM events ORDER BY global_position")
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

/// Rebuilds `names` one at a time, then all together, and asserts that each time the
/// read models equal `before` (what the live handlers wrote): the closing check of the
/// bulk-load tests below, which must compare both paths the same way.
async fn assert_rebuilds_reproduce(
    db: &TestDatabase,
    names: &[&str],
    before: &[(String, Vec<String>)],
) {
    for name in names {
        rebuild(&db.pool, db.connect.clone(), name).await.unwrap();
        assert_eq!(snapshot(&db.pool).await, before, "{name} rebuilt alone");
    }
    aula_projections::rebuild_many(&db.pool, db.connect.clone(), names)
        .await
        .unwrap();
    assert_eq!(snapshot(&db.pool).await, before, "rebuilt together");
}

/// A rebuild loads `audit_log` and `admin_events` by `COPY` (not by their live handlers):
/// over a history of every kind of event the workload makes, longer than one rebuild
/// batch, with reprocessed copies whose originals are in the same batch, in an earlier
/// one, copied twice in one batch, in two batches, and copies of copies, the rebuilt
/// rows equal those the live handlers wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_loaded_views_equal_the_live_ones_across_batches_and_copies() {
    const VIEWS: &[&str] = &["audit_log", "admin_events"];
    let db = TestDatabase::new().await;
    let mut courses = Vec::new();
    workload(&db, 21, 120, &mut courses).await;
    let first = event_ids(&db).await;
    // In the first batch: a copy of the first event, a copy of that copy, a second copy.
    let copy = copy_of(&db, first[0]).await;
    copy_of(&db, copy).await;
    copy_of(&db, first[0]).await;
    // More events than one rebuild batch, so what follows is in later batches.
    let filler = aula_projections::rebuild::REBUILD_BATCH + 500;
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'course', 'filler-' || (g / 100), g % 100 + 1, 'EnrollmentRequested', '1.0',
                json_build_object('type', 'EnrollmentRequested', 'application_id', gen_random_uuid(),
                                  'name', 'Applicant ' || g, 'birth_date', '2001-04-12',
                                  'email', 'applicant' || g || '@example.edu', 'requested_at', now()),
                json_build_object('actor', 'public', 'correlation_id', gen_random_uuid(),
                                  'causation_id', 'request')
         FROM generate_series(0, $1 - 1) AS g",
    )
    .bind(filler)
    .execute(&db.pool)
    .await
    .unwrap();
    // Later: two copies of an original of the first batch, another copy of its copy, and
    // an event of this batch copied within it (and that copy copied).
    copy_of(&db, first[0]).await;
    copy_of(&db, first[0]).await;
    copy_of(&db, copy).await;
    let last: Uuid =
        sqlx::query_scalar("SELECT event_id FROM events ORDER BY global_position DESC LIMIT 1")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let late = copy_of(&db, last).await;
    copy_of(&db, late).await;
    catch_up(&db, VIEWS).await;
    let before = snapshot(&db.pool).await;
    let rows = |table: &str| {
        before
            .iter()
            .find(|(name, _)| name == table)
            .map(|(_, rows)| rows.len())
    };
    let total = event_ids(&db).await.len();
    assert_eq!(
        (rows("audit_log"), rows("admin_events")),
        (Some(total), Some(total))
    );
    let copies: Vec<(i32, Option<Uuid>)> = sqlx::query_as(
        "SELECT copies, latest_copy_id FROM admin_events WHERE copies > 0 ORDER BY global_position",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        copies.iter().map(|c| c.0).collect::<Vec<_>>(),
        [4, 2, 1, 1],
        "the first event, its first copy, the last filler event and its copy"
    );

    assert_rebuilds_reproduce(&db, VIEWS, &before).await;
}

/// A rebuild loads the enrollments and the directory's applications by `COPY` (the keys
/// loaded so far standing in for the live upserts' `ON CONFLICT DO NOTHING`) and keeps
/// the age counts in memory until the end: over a history longer than one rebuild batch,
/// whose later batches decide and cancel what the first one made (and so empty ages), the
/// rebuilt rows equal those the live handlers wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_loaded_domain_models_equal_the_live_ones_across_batches() {
    const MODELS: &[&str] = &["age_metrics", "course_enrollments", "directory"];
    let db = TestDatabase::new().await;
    let mut courses = Vec::new();
    workload(&db, 31, 150, &mut courses).await;
    // More events than one rebuild batch, of a kind no domain read model reads, so what
    // follows is in later batches.
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'filler', 'filler-' || (g / 100), g % 100 + 1, 'Filled', '1.0',
                json_build_object('type', 'Filled', 'n', g), json_build_object('actor', 'system')
         FROM generate_series(0, $1 - 1) AS g",
    )
    .bind(aula_projections::rebuild::REBUILD_BATCH + 500)
    .execute(&db.pool)
    .await
    .unwrap();
    // Cancellations of the first batch's enrollments, new applications and decisions.
    workload(&db, 32, 150, &mut courses).await;
    catch_up(&db, MODELS).await;
    let before = snapshot(&db.pool).await;
    let cancelled_later: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events c
         JOIN events e ON e.event_type = 'StudentEnrolled'
                      AND e.payload->>'application_id' = c.payload->>'application_id'
         WHERE c.event_type = 'EnrollmentCancelled'
           AND e.global_position < (SELECT min(global_position) FROM events WHERE aggregate_type = 'filler')
           AND c.global_position > (SELECT max(global_position) FROM events WHERE aggregate_type = 'filler')",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(
        cancelled_later > 0,
        "later batches cancel enrollments of the first"
    );

    assert_rebuilds_reproduce(&db, MODELS, &before).await;
}

/// The swap carries over the processor's columns that changed after the bulk
/// carry-over (the rebuild is held at the swap by the subscription's checkpoint lock
/// while they change), and those of an event appended meanwhile whose row the
/// processor wrote before the event reached the rebuild.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_swap_carries_over_what_the_processor_changed_during_the_rebuild() {
    swap_carries_over(false).await;
}

/// The same, while a transaction older than the late event's still runs: the swap's
/// catch-up cannot read that event (the log's commit-order guard), so the processor's
/// row is carried over whole and the live subscription reads the event after the swap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_swap_keeps_the_row_of_an_event_it_cannot_read_yet() {
    swap_carries_over(true).await;
}

async fn swap_carries_over(held_back: bool) {
    let db = TestDatabase::new().await;
    let mut courses = Vec::new();
    workload(&db, 13, 40, &mut courses).await;
    catch_up(&db, &["admin_events"]).await;
    sqlx::query(
        "UPDATE admin_events SET status = 'succeeded', processed_at = recorded_at + interval '3 milliseconds',
             duration_ms = 3, tasks_succeeded = 1
         WHERE global_position % 3 = 0",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    // An event the processor records before the projection sees it: its row exists
    // (and is processed) before the rebuild starts, its event comes after the load.
    let early = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO admin_events (event_id, global_position, event_type, aggregate_type, aggregate_id,
             sequence, recorded_at, tx_id, status, processed_at, duration_ms, tasks_succeeded)
         VALUES ($1, 0, 'Pending', 'note', 'n', 1, now(), 0, 'succeeded', now(), 7, 1)",
    )
    .bind(early)
    .execute(&db.pool)
    .await
    .unwrap();

    // An older transaction with an id, open until the rebuild is done.
    let mut older = db.pool.begin().await.unwrap();
    if held_back {
        sqlx::query("SELECT pg_current_xact_id()")
            .execute(&mut *older)
            .await
            .unwrap();
    }
    let mut hold = db.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM subscription_checkpoints WHERE name = 'admin_events' FOR UPDATE")
        .execute(&mut *hold)
        .await
        .unwrap();
    let rebuilding = tokio::spawn({
        let (pool, connect) = (db.pool.clone(), db.connect.clone());
        async move { rebuild(&pool, connect, "admin_events").await }
    });
    // The bulk carry-over and the index builds are done when the swap waits here.
    wait_for_a_lock_wait(&db.pool, "aula rebuild admin_events", "the swap").await;
    sqlx::query(
        "UPDATE admin_events SET status = 'failed', processed_at = recorded_at + interval '5 milliseconds',
             duration_ms = 5, error = 'boom', tasks_failed = 1, tasks_succeeded = 0
         WHERE global_position % 4 = 0 AND global_position > 0",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let processing = "SELECT event_id, status, processed_at, duration_ms, error, tasks_pending,
                             tasks_running, tasks_succeeded, tasks_failed
                      FROM admin_events ORDER BY event_id";
    type Processing = (
        Uuid,
        String,
        Option<chrono::DateTime<chrono::Utc>>,
        Option<i64>,
        Option<String>,
        i32,
        i32,
        i32,
        i32,
    );
    let expected: Vec<Processing> = sqlx::query_as(processing)
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert!(expected.iter().any(|row| row.1 == "failed"));
    // The event comes in the transaction that holds the swap, so the swap's catch-up
    // reads it (a transaction that began after the swap's would be read by the live
    // subscription after it).
    sqlx::query(
        "INSERT INTO events (event_id, aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ($1, 'note', 'n', 1, 'Noted', '1.0', '{\"text\": \"late\"}', '{}')",
    )
    .bind(early)
    .execute(&mut *hold)
    .await
    .unwrap();
    hold.commit().await.unwrap();
    rebuilding.await.unwrap().unwrap();
    if held_back {
        let position = position_of(&db.pool, early).await;
        assert_eq!(position, 0, "the swap could not read the late event");
    }
    older.commit().await.unwrap();

    let rebuilt: Vec<Processing> = sqlx::query_as(processing)
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(rebuilt, expected);
    // The swap's catch-up reads the late event unless a transaction of another test that
    // began before it still runs (the log's commit-order guard): then the processor's row
    // was carried over whole, and the live subscription reads the event after the swap.
    catch_up(&db, &["admin_events"]).await;
    let position = position_of(&db.pool, early).await;
    assert!(position > 0, "the late event's row comes from the event");
    let after: Vec<Processing> = sqlx::query_as(processing)
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        after, expected,
        "the processor's columns outlive the event's arrival"
    );
}

/// The log position of `event`'s row in `admin_events` (0 before its event is read).
async fn position_of(pool: &sqlx::PgPool, event: Uuid) -> i64 {
    sqlx::query_scalar("SELECT global_position FROM admin_events WHERE event_id = $1")
        .bind(event)
        .fetch_one(pool)
        .await
        .unwrap()
}
