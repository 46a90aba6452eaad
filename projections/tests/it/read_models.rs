//! Each read model fed by real domain events (appended through the command bus) and
//! run by its subscription until caught up, checked against hand-computed numbers.

use crate::common;

use std::time::Duration;

use aula_eventlog::testing::TestDatabase;
use aula_eventlog::Actor;
use aula_projections::admin_events::{self, DurationOp, EventListQuery, EventSort};
use aula_projections::age_metrics::{age_metrics, age_metrics_of, AgeScope};
use aula_projections::audit_log::{audit_log, AuditQuery};
use aula_projections::course_capacity::{course_capacity, list_course_capacity};
use aula_projections::enrollments::course_enrollments;
use aula_projections::{status, NAMES};
use common::*;
use uuid::Uuid;

mod copies;
mod courses;
mod event_list;

struct Scenario {
    institution: Uuid,
    campus_a: Uuid,
    campus_b: Uuid,
    c1: Uuid,
    c2: Uuid,
    c3: Uuid,
    c1_youngest: Uuid,
}

/// C1 (campus A, 3 seats): ages 18, 20, 30 enrolled, a fourth applicant declined
/// (class full), then the 18-year-old (the youngest of everything) cancels.
/// C2 (campus A, 5 seats, raised to 10): 25 and 40 enrolled, the 40-year-old (the oldest of
/// everything) cancels. C3 (campus B, 5 seats): 19 enrolled, one application pending.
async fn scenario(world: &World) -> Scenario {
    let institution = world.metadata.institution_id.unwrap();
    let (campus_a, campus_b) = (Uuid::new_v4(), Uuid::new_v4());
    let (c1, c2, c3) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    world.open(c1, institution, campus_a, "Física I", 3).await;
    world.open(c2, institution, campus_a, "Química", 5).await;
    world.open(c3, institution, campus_b, "Cálculo", 5).await;
    let c1_youngest = world.apply(c1, 18).await;
    world.apply(c1, 20).await;
    world.apply(c1, 30).await;
    world.apply(c1, 22).await; // declined: class full
    world.apply(c2, 25).await;
    let c2_oldest = world.apply(c2, 40).await;
    world.apply(c3, 19).await;
    world.request(c3, 50).await; // pending
    world.cancel(c1, c1_youngest).await.unwrap();
    world.cancel(c2, c2_oldest).await.unwrap();
    world
        .run(
            c2,
            aula_domain::course::CourseCommand::ChangeCapacity {
                capacity: aula_domain::values::Capacity::new(10).unwrap(),
            },
        )
        .await
        .unwrap();
    Scenario {
        institution,
        campus_a,
        campus_b,
        c1,
        c2,
        c3,
        c1_youngest,
    }
}

/// A fresh database holding the [`scenario`] (in an institution of its own), with the
/// projections `names` caught up on it.
async fn scenario_projected(names: &[&str]) -> (TestDatabase, Scenario) {
    let db = TestDatabase::new().await;
    let world = World::new(&db.pool, Actor::System, Uuid::new_v4());
    let s = scenario(&world).await;
    catch_up(&db, names).await;
    (db, s)
}

fn metrics(row: Option<aula_projections::age_metrics::AgeMetricsRow>) -> (i64, i32, i32, f64) {
    let row = row.expect("metrics exist");
    (row.students, row.min_age, row.max_age, row.average_age)
}
