//! A webhook receiver for the tests: `tests/webhooks/receiver.py`, which verifies
//! every request with the official Standard Webhooks library (Python
//! `standardwebhooks`), run as a child process; its requests as JSON values.

use std::process::Stdio;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::{eventually, within};

/// A running `receiver.py` and the requests it verified.
pub struct Receiver {
    pub port: u16,
    requests: Arc<Mutex<Vec<Value>>>,
    _child: tokio::process::Child,
}

impl Receiver {
    pub async fn start(behaviour: &str, secrets: &[String]) -> Receiver {
        Self::start_with(json!({"behaviour": behaviour, "secrets": secrets})).await
    }

    /// `config` as `receiver.py` documents it.
    pub async fn start_with(config: Value) -> Receiver {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/webhooks/receiver.py");
        let mut child = tokio::process::Command::new("python3")
            .arg(script)
            .arg(config.to_string())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs the receiver (pip install standardwebhooks)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = within(lines.next_line())
            .await
            .unwrap()
            .expect("the receiver printed its port (is standardwebhooks installed? see .ci/run)");
        let port = first.strip_prefix("PORT ").unwrap().parse().unwrap();
        let requests: Arc<Mutex<Vec<Value>>> = Arc::default();
        let sink = requests.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock()
                    .unwrap()
                    .push(serde_json::from_str(&line).unwrap());
            }
        });
        Receiver {
            port,
            requests,
            _child: child,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }

    pub async fn wait_for(&self, n: usize) -> Vec<Value> {
        eventually(&format!("{n} requests at the receiver"), || async {
            let requests = self.requests();
            (requests.len() >= n).then_some(requests)
        })
        .await
    }
}
