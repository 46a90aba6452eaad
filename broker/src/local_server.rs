//! A private `nats-server` (from PATH, Debian's package) with JetStream on a temporary
//! directory and a loopback port, for the tests and `aula bench broker`. It can be
//! killed and started again on the same directory and port, as a broker outage.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct LocalNats {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
}

impl LocalNats {
    /// Starts a server on a free loopback port and waits until it accepts connections.
    pub fn start() -> std::io::Result<LocalNats> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = std::env::temp_dir().join(format!("aula-nats-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let mut server = LocalNats {
            child: None,
            port,
            dir,
        };
        server.restart()?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server with SIGKILL (nothing is flushed but what the kernel holds).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// (Re)starts the server on the same directory and port; waits until it accepts
    /// connections (at most 15 s).
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.kill();
        let spawn = |program: &str| {
            Command::new(program)
                .args(["--jetstream", "--store_dir"])
                .arg(&self.dir)
                .args(["--addr", "127.0.0.1", "--port", &self.port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        };
        // Debian installs it in /usr/sbin, which not every PATH holds.
        let child = spawn("nats-server")
            .or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => spawn("/usr/sbin/nats-server"),
                _ => Err(e),
            })
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("starting nats-server (apt-get install nats-server): {e}"),
                )
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Err(std::io::Error::other(format!(
                    "nats-server exited at start: {status}"
                )));
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other(
                    "nats-server did not listen within 15 s",
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for LocalNats {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
