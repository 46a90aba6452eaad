//! `aula serve`: the service's parts (API, projections, processor, and the broker
//! publisher when `AULA_NATS_URL` is set) in one process, started in order and stopped in
//! reverse: first stop taking work (HTTP, subscriptions, workers), let in-flight work
//! finish, then close the pool and stop the private database.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use aula_eventlog::shutdown::{self, Shutdown};
use aula_eventlog::subscription::{SubscriptionHandle, SubscriptionState};
use aula_eventlog::Wakeups;
use tokio::sync::watch;

use crate::cli::{GlobalArgs, Part, ServeArgs};
use crate::database::Database;

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
///
/// The handlers are installed when this is called, not when the future is first polled:
/// `serve` polls it only once every part has started, and a SIGTERM before that (the
/// private PostgreSQL starting, a slow machine) used to meet the default action, which
/// killed the process without a clean stop and left its private PostgreSQL running.
/// Now such a signal is kept and honoured as soon as the service is up.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let interrupt = signal(SignalKind::interrupt());
    let terminate = signal(SignalKind::terminate());
    async move {
        async fn received(handler: std::io::Result<tokio::signal::unix::Signal>) {
            match handler {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                // No handler (cannot happen on Linux): only the other signal stops us.
                Err(_) => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            _ = received(interrupt) => {}
            _ = received(terminate) => {}
        }
        tracing::info!("shutdown requested: draining");
    }
}

/// Runs until `stop` resolves, then shuts down cleanly.
pub async fn serve(
    global: &GlobalArgs,
    args: &ServeArgs,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let runs = |part: Part| args.only.is_empty() || args.only.contains(&part);
    // Everything that can be wrong with the configuration (the token secret, the API's
    // limits, a busy port, the e-mail settings) is reported before the database and
    // the subscriptions start.
    // Webhook settings: the API checks registrations with them, the workers deliveries.
    let webhooks = aula_processor::webhooks::WebhookConfig::from_env()
        .map_err(|e| anyhow::anyhow!("invalid webhook settings: {e}"))?;
    let api = if runs(Part::Api) {
        Some(api_setup(args, &global.data_dir).await?)
    } else {
        None
    };
    let mail_setup = if runs(Part::Processor) {
        let mut mail = aula_processor::MailConfig::from_env()
            .map_err(|e| anyhow::anyhow!("invalid e-mail settings: {e}"))?;
        if std::env::var_os("AULA_MAIL_OUTBOX").is_none() {
            mail.outbox_dir = global.data_dir.join("outbox");
        }
        let mailer: Arc<dyn aula_processor::Mailer> = Arc::from(
            aula_processor::mail::from_config(&mail)
                .map_err(|e| anyhow::anyhow!("e-mail set-up: {e}"))?,
        );
        let workers = aula_processor::ProcessorConfig::from_env()
            .map_err(|e| anyhow::anyhow!("invalid worker settings: {e}"))?;
        let archive = aula_processor::archive::ArchiveConfig::from_env()
            .map_err(|e| anyhow::anyhow!("invalid archive settings: {e}"))?;
        Some((mail, mailer, workers, archive))
    } else {
        None
    };
    let database = Database::open(global.database_url.as_deref(), &global.data_dir).await?;
    let pool = aula_eventlog::db::pool(database.connect.clone(), 32)
        .await
        .context("connecting to PostgreSQL")?;
    aula_eventlog::db::migrate(&pool)
        .await
        .context("applying migrations")?;

    let (trigger, shutdown): (_, Shutdown) = shutdown::channel();
    let wakeups = Wakeups::listen(&pool, shutdown.clone()).await?;
    let mut tasks: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    // Every subscription this process runs, for /ready.
    let mut subscriptions: Vec<watch::Receiver<SubscriptionState>> = Vec::new();

    if runs(Part::Projections) {
        for (name, handle) in
            aula_projections::spawn_all(database.connect.clone(), wakeups.clone(), shutdown.clone())
        {
            tracing::debug!(projection = %name, "projection started");
            keep(handle, &mut subscriptions, &mut tasks);
        }
        tracing::info!(projections = ?aula_projections::NAMES, "projections part enabled");
    }
    if let Some((mail, mailer, config, archive_config)) = mail_setup {
        let reactions = aula_processor::spawn_reactions(
            database.connect.clone(),
            wakeups.clone(),
            shutdown.clone(),
        );
        keep(reactions, &mut subscriptions, &mut tasks);
        // Decides the applications in commit order, one batch command per course.
        let admissions = aula_processor::spawn_admissions(
            pool.clone(),
            database.connect.clone(),
            wakeups.clone(),
            shutdown.clone(),
        );
        keep(admissions, &mut subscriptions, &mut tasks);
        let registry = aula_processor::Registry::standard(mailer, mail);
        // The workers get a pool of their own: an e-mail task holds the connection it
        // records the send with through the SMTP conversation, and a slow mail server
        // must starve neither the API nor the workers' own heartbeats and completions.
        let workers_pool = aula_eventlog::db::pool(
            database.connect.clone(),
            // One per task running at once, plus claims, heartbeats and completions.
            u32::try_from(config.concurrency)
                .unwrap_or(u32::MAX)
                .saturating_add(8),
        )
        .await
        .context("connecting the task workers to PostgreSQL")?;
        let workers_shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(error) =
                aula_processor::run_workers(workers_pool, config, registry, workers_shutdown).await
            {
                tracing::error!(%error, "task workers stopped with an error");
            }
        }));
        let (archive_pool, archive_shutdown) = (pool.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move {
            aula_processor::run_archive_scheduler(
                archive_pool,
                Arc::new(aula_processor::SystemClock),
                archive_config,
                archive_shutdown,
            )
            .await;
        }));
        // Bulk reprocessing jobs whose process died are taken over here.
        let (bulk_pool, bulk_shutdown) = (pool.clone(), shutdown.clone());
        tasks.push(tokio::spawn(aula_processor::bulk::run_resumer(
            bulk_pool,
            aula_processor::bulk::BulkOptions::default(),
            bulk_shutdown,
        )));
        tracing::info!(
            "processor part enabled: reactions, admissions, task workers, nightly archive, bulk job resumer"
        );
    }

    // Events to NATS JetStream, when AULA_NATS_URL is set (or asked for with `--only
    // broker`, which then needs it). Not part of /ready: a broker outage must not take
    // the API out of rotation; its lag shows in /metrics and the projections' status.
    let broker = aula_broker::BrokerConfig::from_env().map_err(|e| anyhow::anyhow!(e))?;
    if args.only.contains(&Part::Broker) && broker.url.is_none() {
        anyhow::bail!("`--only broker` needs AULA_NATS_URL");
    }
    if runs(Part::Broker) && broker.url.is_some() {
        let handle = aula_broker::start(
            broker,
            database.connect.clone(),
            wakeups.clone(),
            shutdown.clone(),
        )
        .await
        .context("starting the NATS JetStream publisher")?;
        // Not kept for /ready (see above): only joined at shutdown.
        tasks.push(handle.task);
        tracing::info!(
            subscription = aula_broker::SUBSCRIPTION,
            "broker part enabled: events to NATS JetStream"
        );
    }

    // Whether a transaction anywhere holds back the log (warns, /ready, /metrics).
    let log_health = aula_eventlog::health::spawn_monitor(
        pool.clone(),
        aula_eventlog::health::MonitorOptions::from_env(),
        shutdown.clone(),
    );

    let mut http = None;
    let mut draining = None;
    if let Some((mut config, listener)) = api {
        config.webhooks = webhooks.clone();
        let states = std::mem::take(&mut subscriptions);
        let readiness: aula_api::ReadinessProbe = Arc::new(move || {
            states.iter().all(|state| {
                matches!(
                    *state.borrow(),
                    SubscriptionState::Active { .. } | SubscriptionState::Standby
                )
            })
        });
        let state = aula_api::AppState::new(pool.clone(), config)
            .with_readiness(readiness)
            .with_log_health(log_health)
            .with_token_sink(Arc::new(StashTokens { pool: pool.clone() }));
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "serving GraphQL on /graphql, health on /health and /ready");
        tracing::info!(
            "API and GraphiQL: http://{addr}/graphql · dashboard: http://{addr}/admin · metrics: http://{addr}/metrics"
        );
        tracing::info!(
            "first run? create an administrator with `aula admin create --email you@example.org` (or `cargo run --release -- admin create --email you@example.org`)"
        );
        let mut http_shutdown = shutdown.clone();
        let server_limits = state.config().server.clone();
        draining = Some(state.draining_flag());
        http = Some(tokio::spawn(aula_api::serve_with(
            listener,
            aula_api::router(state),
            server_limits,
            async move { http_shutdown.wait().await },
        )));
    }

    // Stop on request, or when the private PostgreSQL died for good: then stop all the
    // same and exit non-zero, so that whoever runs us sees it (and restarts us).
    let database_failed = database.failed();
    let failure = tokio::select! {
        _ = stop => None,
        reason = database_failed => Some(reason),
    };
    // Graceful stop, in order: readiness off, the drain period (still serving), then
    // the listener closes and in-flight work finishes. Without a database there is
    // nothing to drain.
    if let (Some(draining), None) = (draining, &failure) {
        draining.store(true, std::sync::atomic::Ordering::SeqCst);
        if args.drain_seconds > 0 {
            tracing::info!(
                seconds = args.drain_seconds,
                "readiness off: draining before the listener closes"
            );
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(args.drain_seconds)) => {}
                _ = shutdown_signal() => tracing::info!("second stop signal: ending the drain"),
            }
        }
    }
    trigger.trigger();
    if let Some(http) = http {
        match http.await {
            Ok(Err(error)) => tracing::error!(%error, "the HTTP server failed"),
            Err(error) => tracing::error!(%error, "the HTTP server panicked"),
            Ok(Ok(())) => {}
        }
    }
    for task in tasks.drain(..) {
        let _ = task.await;
    }
    pool.close().await;
    database.close().await;
    tracing::info!("stopped");
    match failure {
        Some(reason) => Err(anyhow::anyhow!(reason)),
        None => Ok(()),
    }
}

/// The API's configuration, checked, and its listener, bound: what can fail before
/// anything else starts.
async fn api_setup(
    args: &ServeArgs,
    data_dir: &Path,
) -> anyhow::Result<(aula_api::ApiConfig, tokio::net::TcpListener)> {
    if let Some(secret) = args.token_secret.as_deref().filter(|s| s.len() < 32) {
        anyhow::bail!(
            "the token secret (AULA_TOKEN_SECRET / --token-secret) is {} bytes long; it \
             needs at least 32 (or unset it: one is generated into the data directory)",
            secret.len()
        );
    }
    let secret = token_secret(args, data_dir)?;
    let mut config = aula_api::ApiConfig::new(aula_api::Secret::new(secret));
    config.token_ttl = Duration::from_secs(args.token_ttl_minutes * 60);
    config.server = aula_api::ServerLimits {
        header_timeout: Duration::from_secs(args.http_header_timeout_seconds.max(1)),
        body_timeout: Duration::from_secs(args.http_body_timeout_seconds.max(1)),
        max_connections: args.http_max_connections.max(1),
        max_connections_per_client: args.http_max_connections_per_client.max(1),
        trusted_proxies: args.trusted_proxies.clone(),
        ..aula_api::ServerLimits::default()
    };
    config.account_read_limit = aula_api::RateLimitConfig {
        burst: args.account_reads_burst,
        per_minute: args.account_reads_per_minute,
    };
    // Login thresholds, lockout and trust window (`AULA_LOGIN_*`).
    config.user_services = aula_api::login_policy_from_env()
        .map_err(|e| anyhow::anyhow!("invalid login settings: {}", e.0))?;
    // Read-your-writes waits for every projection, wherever it runs.
    config.projections = aula_projections::NAMES
        .iter()
        .map(|n| n.to_string())
        .collect();
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid API configuration: {}", e.0))?;
    let listener = match tokio::net::TcpListener::bind(args.http_addr).await {
        Ok(listener) => listener,
        Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => {
            anyhow::bail!(
                "the HTTP address {} is already in use by another process: stop it, or \
                 choose another address with --http-addr / AULA_HTTP_ADDR",
                args.http_addr
            )
        }
        Err(error) => {
            return Err(error).with_context(|| format!("binding {}", args.http_addr));
        }
    };
    Ok((config, listener))
}

/// Hands the raw one-time tokens the API issues to the processor's e-mail tasks: stored
/// before the command that records the token's hash (see `aula_api::TokenSink`).
struct StashTokens {
    pool: sqlx::PgPool,
}

#[async_trait::async_trait]
impl aula_api::TokenSink for StashTokens {
    async fn issued(&self, token: &aula_api::IssuedToken) -> Result<(), aula_api::BoxError> {
        // Only governs when an unused token is purged; validity is the aggregate's.
        let keep_until = chrono::Utc::now() + chrono::Duration::days(2);
        let hash = aula_api::token_hash(&token.token);
        aula_processor::stash_token(&self.pool, &hash, &token.token, keep_until).await?;
        Ok(())
    }
}

/// The configured secret, or one generated once and kept beside the data.
fn token_secret(args: &ServeArgs, data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = &args.token_secret {
        return Ok(secret.as_bytes().to_vec());
    }
    let path = data_dir.join("token-secret");
    if let Ok(existing) = std::fs::read(&path) {
        if existing.len() >= 32 {
            // Written 0600; a copy or an older file may be wider.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("restricting {}", path.display()))?;
            return Ok(existing);
        }
    }
    use rand::RngCore;
    let mut secret = vec![0u8; 48];
    rand::thread_rng().fill_bytes(&mut secret);
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    // Written aside, then linked in place only if no file is there yet: processes
    // starting at once on a new data directory then all end up with the one secret
    // that was linked first, not each with its own (tokens of one would fail on the
    // others).
    let mut suffix = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut suffix);
    let temporary = data_dir.join(format!(
        ".token-secret.{}.{}",
        std::process::id(),
        suffix
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    ));
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)
            .with_context(|| format!("writing {}", temporary.display()))?;
        std::io::Write::write_all(&mut file, &secret)?;
    }
    if std::fs::metadata(&path).is_ok_and(|m| m.len() < 32) {
        // Too short to be a secret: replaced (whoever links next wins).
        let _ = std::fs::remove_file(&path);
    }
    let linked = std::fs::hard_link(&temporary, &path);
    let _ = std::fs::remove_file(&temporary);
    match linked {
        Ok(()) => {
            tracing::info!(path = %path.display(), "generated a token-signing secret");
            Ok(secret)
        }
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
        }
        Err(error) => Err(error).with_context(|| format!("writing {}", path.display())),
    }
}

/// Keeps a subscription this process runs: watched for `/ready`, joined at shutdown.
fn keep(
    handle: SubscriptionHandle,
    subscriptions: &mut Vec<watch::Receiver<SubscriptionState>>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) {
    subscriptions.push(handle.state);
    tasks.push(handle.task);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_starting_at_once_on_a_new_data_directory_share_one_secret() {
        let dir = std::env::temp_dir().join(format!("aula-secret-{}", uuid::Uuid::new_v4()));
        let args = ServeArgs::default();
        let secrets: Vec<Vec<u8>> = std::thread::scope(|scope| {
            let starts: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| token_secret(&args, &dir).unwrap()))
                .collect();
            starts.into_iter().map(|s| s.join().unwrap()).collect()
        });
        assert!(secrets[0].len() >= 32);
        assert!(secrets.iter().all(|s| s == &secrets[0]));
        assert_eq!(std::fs::read(dir.join("token-secret")).unwrap(), secrets[0]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("token-secret"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Nothing else is left beside it.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
