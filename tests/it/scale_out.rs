//! Scale-out (issue 22), with real processes, a real PostgreSQL and a real nats-server:
//!
//! 1. Events to NATS JetStream: a workload, then the broker killed and restarted
//!    mid-stream, then the publisher SIGKILLed mid-stream and started again; a consumer
//!    reads the stream and finds every event of the log exactly once, in commit order,
//!    in its public form; `/ready` stays green during the outage while the lag shows.
//!    A stream whose duplicate window is shorter than the retry horizon is refused.
//! 2. Several processes on one PostgreSQL: 2 API, 3 processor and 1 projections
//!    processes; thousands of applications through both APIs; one processor and one API
//!    SIGKILLed in the middle. Nothing is lost, nothing is done twice, nothing is stuck,
//!    and the standby's takeover time is measured.

use crate::support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, consumer::DeliverPolicy};
use aula_broker::local_server::LocalNats;
use aula_domain::course::{Course, CourseCommand, CourseServices};
use aula_domain::values::{CampusId, Capacity, CourseName, InstitutionId};
use aula_eventlog::testing::TestDatabase;
use aula_eventlog::{Actor, CommandBus, EventMetadata};
use futures::StreamExt;
use serde_json::{json, Value};
use sqlx::PgPool;
use support::{database_url, free_port};
use uuid::Uuid;

mod broker;
mod processes;

const TOKEN_SECRET: &str = "scale-out test secret, at least 32 bytes long";

/// An `aula` process; SIGKILLed and reaped if the test ends early. Its output goes to
/// `log`, named in failures.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(name: &str, dir: &Path, args: &[&str], env: &[(&str, String)]) -> Process {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let data_dir = dir.join(name);
        let mut command = Command::new(env!("CARGO_BIN_EXE_aula"));
        command
            .args(args)
            .env("AULA_DATA_DIR", &data_dir)
            .env("AULA_TOKEN_SECRET", TOKEN_SECRET)
            .env("AULA_DRAIN_SECONDS", "0")
            .env("RUST_LOG", "warn")
            .env_remove("SMTP_URL")
            .env_remove("AULA_NATS_URL")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("starting the aula binary");
        Process { child, log }
    }

    fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.sigkill();
    }
}

fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("aula-{name}-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn wait_ready(base: &str, process: &mut Process) {
    let client = &reqwest::Client::new();
    support::eventually(support::PATIENCE, support::POLL_EVERY, || {
        assert!(
            process.alive(),
            "the process ended; see {}",
            process.log.display()
        );
        async move {
            match client.get(format!("{base}/ready")).send().await {
                Ok(response) if response.status().is_success() => Ok(()),
                _ => Err(format!("{base} not ready")),
            }
        }
    })
    .await
}

/// Opens `n` courses (one event each) from 8 concurrent writers, so transactions
/// interleave and commit order differs from position order here and there.
async fn open_courses(pool: PgPool, n: usize) {
    let bus = std::sync::Arc::new(CommandBus::<Course>::with_upcasters(
        pool,
        CourseServices,
        aula_domain::upcasters(),
    ));
    let institution = InstitutionId::from_uuid(Uuid::new_v4());
    futures::stream::iter(0..n)
        .map(|i| {
            let bus = bus.clone();
            async move {
                let id = Uuid::new_v4().to_string();
                let metadata = EventMetadata::new(Actor::System, Some(institution.as_uuid()));
                bus.execute(
                    &id,
                    CourseCommand::OpenCourse {
                        institution_id: institution,
                        campus_id: CampusId::from_uuid(Uuid::new_v4()),
                        name: CourseName::parse(&format!("Course {i}")).unwrap(),
                        capacity: Capacity::new(30).unwrap(),
                    },
                    &metadata,
                )
                .await
                .unwrap();
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;
}
