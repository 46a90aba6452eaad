//! The reactions of school life: institutions of confirmed sign-ups, applications
//! decided and answered, new students and teachers, grades, demo data.

use super::*;

/// The API confirms a sign-up with two commands (user, then institution). Here the
/// caller stops after the first, as a crashed API would: the institution is created
/// anyway, once, from the user's `SignUpConfirmed`.
#[tokio::test(flavor = "multi_thread")]
async fn a_confirmed_sign_up_gets_its_institution_even_if_the_caller_stopped_halfway() {
    let (db, running, _mailer) = standard_on_new_database().await;
    let user = Uuid::new_v4();
    let institution = InstitutionId::from_uuid(Uuid::new_v4());
    let users = bus::<User>(&db.pool, UserServices::default());
    let now = Utc::now();
    users
        .execute(
            &user.to_string(),
            sign_up("founder@example.org", "h", now + Duration::hours(1), now),
            &meta(None),
        )
        .await
        .unwrap();
    users
        .execute(
            &user.to_string(),
            confirm_founder("h", institution, now),
            &meta(Some(institution.as_uuid())),
        )
        .await
        .unwrap();
    let event = event_id_of(&db.pool, "SignUpConfirmed", &user.to_string()).await;
    wait_task_succeeded(&db.pool, event, "institution.create").await;

    let (institution_state, _) = bus::<Institution>(&db.pool, InstitutionServices)
        .load(&institution.to_string())
        .await
        .unwrap();
    assert_eq!(
        institution_state.name().map(|n| n.as_str()),
        Some("Escola Fénix")
    );
    assert_eq!(
        institution_state.manager_user_id(),
        Some(UserId::from_uuid(user))
    );
    // A second run (a retry, or a reprocessed copy) finds it there and succeeds.
    let again = aula_processor::reprocess_event(&db.pool, event, Actor::System)
        .await
        .unwrap();
    wait_task_succeeded(&db.pool, again.event_id, "institution.create").await;
    // Reprocessed with a priority: the copy's tasks run at it, not at their kind's.
    let urgent =
        aula_processor::reprocess_event_with_priority(&db.pool, event, Actor::System, Some(3))
            .await
            .unwrap();
    wait_task_succeeded(&db.pool, urgent.event_id, "institution.create").await;
    assert_scalar(
        &db.pool,
        &format!(
            "SELECT priority::bigint FROM tasks WHERE event_id = '{}'",
            urgent.event_id
        ),
        3,
    )
    .await;
    assert_scalar(
        &db.pool,
        "SELECT count(*) FROM events WHERE event_type = 'InstitutionCreated'",
        1,
    )
    .await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn applications_are_scheduled_decided_and_answered_without_exceeding_capacity() {
    let (db, running, mailer) = standard_on_new_database().await;
    let school = school(&db.pool, 2).await;
    let courses = bus::<Course>(&db.pool, CourseServices);
    let applicants = [
        "a@example.org",
        "b@example.org",
        "c@example.org",
        "d@example.org",
        "e@example.org",
    ];
    for email in applicants {
        school.request_enrollment(&db.pool, email).await;
    }
    eventually("two e-mails per applicant", || async {
        (applicants.iter().all(|a| mailer.to(a).len() == 2)).then_some(())
    })
    .await;
    let sent = mailer.sent();
    let count = |prefix: &str| {
        sent.iter()
            .filter(|m| m.subject.starts_with(prefix))
            .count()
    };
    assert_eq!(count("Your application to Física I was scheduled"), 5);
    assert_eq!(count("You are enrolled in Física I"), 2);
    assert_eq!(count("Your application to Física I was declined"), 3);
    assert!(sent
        .iter()
        .filter(|m| m.subject.contains("declined"))
        .all(|m| m.text.contains("the class is full")));
    let (course, _) = courses.load(&school.course.to_string()).await.unwrap();
    assert_eq!(course.enrolled_count(), 2);
    // The decisions name their cause: the EnrollmentRequested events.
    let caused: i64 = scalar_i64(&db.pool, "SELECT count(*) FROM events WHERE event_type IN ('StudentEnrolled', 'EnrollmentDeclined') AND metadata->>'causation_id' LIKE 'event:%'").await;
    assert_eq!(caused, 5);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn submitted_applications_are_decided_in_commit_order_and_a_cancellation_is_emailed() {
    let (db, running, mailer) = standard_on_new_database().await;
    let school = school(&db.pool, 2).await;
    let courses = bus::<Course>(&db.pool, CourseServices);
    let applicants = ["f@example.org", "g@example.org", "h@example.org"];
    let mut ids = Vec::new();
    for email in applicants {
        let id = submit_application(&db.pool, school.course, school.institution, email).await;
        ids.push(id);
    }
    eventually("two e-mails per applicant", || async {
        (applicants.iter().all(|a| mailer.to(a).len() == 2)).then_some(())
    })
    .await;
    // Committed one after the other: the first two got the seats.
    for (email, seated) in applicants.iter().zip([true, true, false]) {
        let subjects: Vec<String> = mailer.to(email).into_iter().map(|m| m.subject).collect();
        assert!(subjects.contains(&"Your application to Física I was scheduled".to_owned()));
        let expected = if seated {
            "You are enrolled in Física I"
        } else {
            "Your application to Física I was declined"
        };
        assert!(
            subjects.contains(&expected.to_owned()),
            "{email}: {subjects:?}"
        );
    }
    // No enrollment.decide task: the admissions decided, naming the application as cause.
    assert_scalar(
        &db.pool,
        "SELECT count(*) FROM tasks WHERE kind = 'enrollment.decide'",
        0,
    )
    .await;
    let caused: i64 = scalar_i64(&db.pool, "SELECT count(*) FROM events WHERE event_type IN ('StudentEnrolled', 'EnrollmentDeclined') AND metadata->>'causation_id' LIKE 'event:%'").await;
    assert_eq!(caused, 3);

    courses
        .execute(
            &school.course.to_string(),
            CourseCommand::CancelEnrollment {
                application_id: ids[0],
                at: Utc::now(),
            },
            &meta(Some(school.institution.as_uuid())),
        )
        .await
        .unwrap();
    eventually("the cancellation e-mail", || async {
        (mailer.to(applicants[0]).len() == 3).then_some(())
    })
    .await;
    let cancelled = mailer.to(applicants[0]).pop().unwrap();
    assert_eq!(
        cancelled.subject,
        "Your enrollment in Física I was cancelled"
    );
    running.stop().await;
}

/// A course's name is the manager's text (anyone can sign up for an institution): the
/// HTML letters about it quote it escaped everywhere, the page title and heading too.
/// Before, the subject went raw into `<title>` and `<h1>`: a course named with markup
/// sent every applicant that markup (a link, an image) from the platform's address.
#[tokio::test(flavor = "multi_thread")]
async fn a_course_name_with_markup_is_text_in_the_html_letters() {
    let (db, running, mailer) = standard_on_new_database().await;
    aula_processor::controls::pause_kind(
        &db.pool,
        aula_processor::kinds::DEMO_SEED,
        &Actor::System,
    )
    .await
    .unwrap();
    let school = School::create(&db.pool).await;
    let hostile = "<img src=x onerror=alert(1)><a href=\"https://evil.example\">Pay here</a>";
    school.open_course(&db.pool, "Centro", hostile, 1).await;
    submit_application(
        &db.pool,
        school.course,
        school.institution,
        "ana@example.org",
    )
    .await;
    eventually("the scheduled and enrolled letters", || async {
        (mailer.to("ana@example.org").len() == 2).then_some(())
    })
    .await;
    for letter in mailer.to("ana@example.org") {
        assert!(letter.subject.contains(hostile), "{}", letter.subject);
        assert!(
            !letter.html.contains("<img") && !letter.html.contains("<a href=\"https://evil"),
            "markup from the course name in the HTML: {}",
            letter.html
        );
        assert!(
            letter.html.contains("<title>Your application to &lt;img")
                || letter.html.contains("<title>You are enrolled in &lt;img"),
            "{}",
            letter.html
        );
    }
    running.stop().await;
}

/// Creates broadcasts `(key, institution, audience, title, body)` with no recipient
/// named beyond their audience; returns their ids, in order.
async fn broadcasts(pool: &PgPool, specs: &[(&str, Uuid, Audience, &str, &str)]) -> Vec<i64> {
    let mut ids = Vec::with_capacity(specs.len());
    for &(key, institution, audience, title, body) in specs {
        let id = create_broadcast(pool, key, institution, audience, title, body, &[]);
        ids.push(id.await.unwrap());
    }
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_student_gets_a_welcome_email_and_the_broadcasts_for_all_students() {
    use Audience::*;
    let (db, running, mailer) = standard_on_new_database().await;
    let institution = Uuid::new_v4();
    let ids = broadcasts(
        &db.pool,
        &[
            ("b1", institution, AllStudents, "Welcome week", "Monday 9h"),
            ("b2", Uuid::new_v4(), AllStudents, "Other school", "-"),
            ("b3", institution, AllTeachers, "Staff meeting", "-"),
        ],
    )
    .await;
    let (broadcast, other, teachers_only) = (ids[0], ids[1], ids[2]);
    let (student, event) =
        create_student(&db.pool, institution, "Bia Nunes", "bia@example.org", 2004).await;
    wait_task_succeeded(&db.pool, event, "notification.link_student").await;
    wait_task_succeeded(&db.pool, event, "email.welcome").await;
    let linked: Vec<i64> = sqlx::query_scalar(
        "SELECT notification_id FROM notification_recipients WHERE recipient_id = $1",
    )
    .bind(student)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(linked, vec![broadcast]);
    assert!(!linked.contains(&other) && !linked.contains(&teachers_only));
    let welcome = mailer.to("bia@example.org");
    assert_eq!(welcome.len(), 1);
    assert_eq!(welcome[0].subject, "Welcome to Aula, Bia Nunes");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_teacher_is_linked_to_the_broadcasts_for_all_teachers() {
    use Audience::*;
    let (db, running, _mailer) = standard_on_new_database().await;
    let institution = Uuid::new_v4();
    let ids = broadcasts(
        &db.pool,
        &[
            ("t1", institution, AllTeachers, "Staff meeting", "Friday"),
            ("s1", institution, AllStudents, "Students only", "-"),
        ],
    )
    .await;
    let broadcast = ids[0];
    let teacher = Uuid::new_v4();
    bus::<Teacher>(&db.pool, TeacherServices)
        .execute(
            &teacher.to_string(),
            TeacherCommand::CreateTeacher {
                institution_id: InstitutionId::from_uuid(institution),
                user_id: UserId::from_uuid(Uuid::new_v4()),
                name: PersonName::parse("Paulo Freire").unwrap(),
                email: Email::parse("paulo@example.org").unwrap(),
            },
            &meta(Some(institution)),
        )
        .await
        .unwrap();
    let event = event_id_of(&db.pool, "TeacherCreated", &teacher.to_string()).await;
    wait_task_succeeded(&db.pool, event, "notification.link_teacher").await;
    let linked: Vec<(i64, String)> = sqlx::query_as("SELECT notification_id, recipient_type FROM notification_recipients WHERE recipient_id = $1")
        .bind(teacher)
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(linked, vec![(broadcast, "teacher".to_owned())]);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn grades_notify_the_student_once_per_event() {
    let (db, running, _mailer) = standard_on_new_database().await;
    let school = school(&db.pool, 10).await;
    let student = StudentId::from_uuid(Uuid::new_v4());
    let grade = Uuid::new_v4().to_string();
    let grades = bus::<ExamGrade>(&db.pool, ExamGradeServices);
    let teacher = TeacherId::from_uuid(Uuid::new_v4());
    let m = meta(Some(school.institution.as_uuid()));
    grades
        .execute(
            &grade,
            ExamGradeCommand::RecordNote {
                institution_id: school.institution,
                course_id: school.course,
                student_id: student,
                teacher_id: teacher,
                exam_name: ExamName::parse("Midterm").unwrap(),
                note: GradeNote::parse("7.5").unwrap(),
                at: Utc::now(),
            },
            &m,
        )
        .await
        .unwrap();
    grades
        .execute(
            &grade,
            ExamGradeCommand::ChangeNote {
                note: GradeNote::parse("8").unwrap(),
                teacher_id: teacher,
                at: Utc::now(),
            },
            &m,
        )
        .await
        .unwrap();
    let added = event_id_of(&db.pool, "ExamGradeNoteAdded", &grade).await;
    let changed = event_id_of(&db.pool, "ExamGradeNoteChanged", &grade).await;
    wait_task_succeeded(&db.pool, added, "notification.grade").await;
    wait_task_succeeded(&db.pool, changed, "notification.grade").await;
    let notifications: Vec<(String, String, Option<Uuid>)> = sqlx::query_as(
        "SELECT n.title, n.body, r.recipient_id FROM notifications n
         LEFT JOIN notification_recipients r ON r.notification_id = n.id ORDER BY n.body",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        notifications,
        vec![
            (
                "New grade in Física I".to_owned(),
                "Midterm: 7.50".to_owned(),
                Some(student.as_uuid())
            ),
            (
                "Grade changed in Física I".to_owned(),
                "Midterm: 8.00".to_owned(),
                Some(student.as_uuid())
            ),
        ]
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_institution_is_seeded_with_demo_data_through_real_commands() {
    let (db, running, mailer) = standard_on_new_database().await;
    let institution = Uuid::new_v4();
    bus::<Institution>(&db.pool, InstitutionServices)
        .execute(
            &institution.to_string(),
            InstitutionCommand::CreateInstitution {
                name: InstitutionName::parse("Demo College").unwrap(),
                manager_user_id: UserId::from_uuid(Uuid::new_v4()),
            },
            &meta(Some(institution)),
        )
        .await
        .unwrap();
    let event = event_id_of(&db.pool, "InstitutionCreated", &institution.to_string()).await;
    wait_task_succeeded(&db.pool, event, "demo.seed").await;
    let count = |event_type: &'static str| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events WHERE event_type = $1 AND metadata->>'institution_id' = $2")
                .bind(event_type)
                .bind(institution.to_string())
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(count("CampusCreated").await, 2);
    assert_eq!(count("CourseOpened").await, 3);
    assert_eq!(count("StudentCreated").await, 4);
    assert_eq!(count("TeacherCreated").await, 2);
    assert_eq!(count("EnrollmentRequested").await, 7);
    assert_eq!(count("ExamGradeNoteAdded").await, 4);
    // The seeded applications are decided by the processor: 3 seats for 5 applicants
    // in the first course, 2 of 2 in the second.
    eventually("the seeded applications to be decided", || async {
        let enrolled = count("StudentEnrolled").await;
        let declined = count("EnrollmentDeclined").await;
        (enrolled + declined == 7).then_some(())
    })
    .await;
    assert_eq!(count("StudentEnrolled").await, 5);
    assert_eq!(count("EnrollmentDeclined").await, 2);
    eventually("the declined e-mails", || async {
        (mailer
            .sent()
            .iter()
            .filter(|m| m.subject.contains("declined"))
            .count()
            == 2)
            .then_some(())
    })
    .await;
    // Seeding again (a retry, a reprocessed copy) changes nothing.
    aula_processor::handlers::demo::seed(&db.pool, institution, meta(Some(institution)))
        .await
        .unwrap();
    assert_eq!(count("StudentCreated").await, 4);
    assert_eq!(count("EnrollmentRequested").await, 7);
    running.stop().await;
}
