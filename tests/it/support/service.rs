//! The whole service (`aula::serve::serve`, as `aula serve` runs it) on a free port and
//! a test database (or on the database a test names, or its private PostgreSQL), ready
//! before the test goes on, stopped when the test says so.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use aula::cli::{GlobalArgs, LogFormat, ServeArgs};
use aula_eventlog::testing::TestDatabase;

use super::{database_url, free_port};

pub struct Service {
    /// `http://127.0.0.1:<port>`
    pub base: String,
    pub data_dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// What `serve` returns: it ends on [`Service::request_stop`], or by itself when it
    /// gives up.
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Service {
    /// Starts the service on `db` with `args` adjusted by `configure` (the address,
    /// a token secret and a data directory of its own are set first), and waits until
    /// `/ready` answers 200.
    pub async fn start(db: &TestDatabase, configure: impl FnOnce(&mut ServeArgs)) -> Service {
        let global = GlobalArgs {
            database_url: Some(database_url(db)),
            data_dir: std::env::temp_dir()
                .join(format!("aula-service-{}", uuid::Uuid::new_v4().simple())),
            log_format: LogFormat::Text,
        };
        let mut args = ServeArgs {
            http_addr: ([127, 0, 0, 1], free_port()).into(),
            token_secret: Some("service test secret, at least 32 bytes long".into()),
            drain_seconds: 0,
            ..ServeArgs::default()
        };
        configure(&mut args);
        Service::serve(global, args, Duration::from_secs(60)).await
    }

    /// Starts the service with `global` and `args` as they are, and waits (at most
    /// `ready_within`) until `/ready` answers 200.
    pub async fn serve(global: GlobalArgs, args: ServeArgs, ready_within: Duration) -> Service {
        let base = format!("http://{}", args.http_addr);
        let data_dir = global.data_dir.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            aula::serve::serve(&global, &args, async {
                let _ = stopped.await;
            })
            .await
        });
        let mut service = Service {
            base,
            data_dir,
            stop: Some(stop),
            task,
        };
        service.wait_ready(ready_within).await;
        service
    }

    /// Waits (at most `within`) until `/ready` answers 200; panics if the service stops
    /// meanwhile.
    pub async fn wait_ready(&mut self, within: Duration) {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let deadline = Instant::now() + within;
        loop {
            let ready = client.get(format!("{}/ready", self.base)).send().await;
            if matches!(&ready, Ok(r) if r.status().is_success()) {
                return;
            }
            self.assert_running().await;
            assert!(
                Instant::now() < deadline,
                "not ready within {within:?}: {ready:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Panics, with what `serve` returned, if the service has stopped.
    pub async fn assert_running(&mut self) {
        assert!(
            !self.task.is_finished(),
            "the service stopped: {:?}",
            (&mut self.task).await
        );
    }

    /// Asks the service to stop (as SIGTERM does), without waiting.
    pub fn request_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Stops the service and waits (at most `within`) for it to end cleanly.
    pub async fn stop(mut self, within: Duration) {
        self.request_stop();
        tokio::time::timeout(within, self.task)
            .await
            .expect("the service stops in time")
            .expect("the service task did not panic")
            .expect("the service ended without an error");
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}
