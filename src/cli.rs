//! The command line. Every flag is also an environment variable; docs/configuration.md and
//! `.env.example` document each one.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "aula",
    version,
    about = "Aula: the back office of an academic management system"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// PostgreSQL to use. When unset, a private server is started from the installed
    /// PostgreSQL binaries, with its data under AULA_DATA_DIR.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,

    /// Where the private PostgreSQL (and the e-mail outbox) keep their files.
    #[arg(long, env = "AULA_DATA_DIR", default_value = ".aula", global = true)]
    pub data_dir: PathBuf,

    /// Log format: `text` for people, `json` for log collectors. Levels come from RUST_LOG.
    #[arg(long, env = "AULA_LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (the default): API, projections and processor in one process.
    Serve(ServeArgs),
    /// Apply the database migrations and exit.
    Migrate,
    /// The event catalog.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Read models: status and rebuilds from history.
    Projections {
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
    /// Platform administration.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Benchmarks (run them in release mode: `cargo run --release -- bench ...`).
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address of the HTTP server (GraphQL API, health, readiness).
    #[arg(long, env = "AULA_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// Run only these parts (repeat the flag, or separate with commas), to scale out:
    /// e.g. several `--only processor` processes beside one `--only api`.
    #[arg(long, env = "AULA_ONLY", value_delimiter = ',')]
    pub only: Vec<Part>,

    /// Secret that signs access tokens (at least 32 bytes). Unset: a random one is
    /// generated once and kept in AULA_DATA_DIR/token-secret. Set the same value on
    /// every API process of a deployment.
    #[arg(long, env = "AULA_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<String>,

    /// Lifetime of access tokens, in minutes.
    #[arg(long, env = "AULA_TOKEN_TTL_MINUTES", default_value_t = 15)]
    pub token_ttl_minutes: u64,

    /// On SIGTERM or Ctrl-C: seconds during which `/ready` answers 503 while requests
    /// are still served, so a load balancer stops sending work before the listener
    /// closes. A second signal ends the wait. At most an hour.
    #[arg(long, env = "AULA_DRAIN_SECONDS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub drain_seconds: u64,

    /// Seconds a client has to send a request's headers; also how long an idle
    /// keep-alive connection is kept.
    #[arg(long, env = "AULA_HTTP_HEADER_TIMEOUT_SECONDS", default_value_t = 10)]
    pub http_header_timeout_seconds: u64,

    /// Seconds a client has to send a request's body.
    #[arg(long, env = "AULA_HTTP_BODY_TIMEOUT_SECONDS", default_value_t = 10)]
    pub http_body_timeout_seconds: u64,

    /// Open HTTP connections in all (lowered to what the open-file limit allows).
    #[arg(long, env = "AULA_HTTP_MAX_CONNECTIONS", default_value_t = 4096)]
    pub http_max_connections: usize,

    /// Open HTTP connections per client address (IPv6: per /64).
    #[arg(
        long,
        env = "AULA_HTTP_MAX_CONNECTIONS_PER_CLIENT",
        default_value_t = 256
    )]
    pub http_max_connections_per_client: usize,

    /// Queries and subscriptions one signed-in account may start at once, over HTTP
    /// and WebSockets together, from any address (then `RATE_LIMITED`).
    #[arg(long, env = "AULA_ACCOUNT_READS_BURST", default_value_t = 300,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub account_reads_burst: u32,

    /// Queries and subscriptions per minute given back to a signed-in account's budget.
    #[arg(long, env = "AULA_ACCOUNT_READS_PER_MINUTE", default_value_t = 3000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub account_reads_per_minute: u32,

    /// Reverse proxies (CIDR networks or addresses, comma-separated) whose
    /// `X-Forwarded-For`/`Forwarded` headers name the client. Unset: the TCP peer is
    /// the client and those headers are ignored.
    #[arg(long, env = "AULA_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_network)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// `aula` alone: `serve`'s arguments, none on the command line.
#[derive(Debug, Parser)]
#[command(name = "aula")]
struct ServeFromEnv {
    #[command(flatten)]
    serve: ServeArgs,
}

impl ServeArgs {
    /// `serve`'s settings from the environment (`AULA_HTTP_ADDR`...) and the defaults,
    /// for `aula` run without a subcommand. A bad value exits with clap's message, as
    /// `aula serve` does.
    pub fn from_env() -> ServeArgs {
        ServeFromEnv::parse_from(["aula"]).serve
    }
}

/// `10.0.0.0/8`, `2001:db8::/32`, or a single address (`127.0.0.1`).
fn parse_network(text: &str) -> Result<ipnet::IpNet, String> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("`{text}` is neither a CIDR network nor an address"))
}

impl Default for ServeArgs {
    fn default() -> Self {
        ServeArgs {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            only: Vec::new(),
            token_secret: None,
            token_ttl_minutes: 15,
            drain_seconds: 5,
            http_header_timeout_seconds: 10,
            http_body_timeout_seconds: 10,
            http_max_connections: 4096,
            http_max_connections_per_client: 256,
            account_reads_burst: 300,
            account_reads_per_minute: 3000,
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Part {
    Api,
    Projections,
    Processor,
    /// Events to NATS JetStream (needs AULA_NATS_URL; part of a plain `serve` when set).
    Broker,
}

#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Each projection's position, lag (events and seconds) and last error.
    Status,
    /// Rebuild read models from position zero into new tables while the live ones keep
    /// serving, then swap them in one transaction. Running services catch up by themselves.
    Rebuild {
        /// The projection to rebuild (see `status` for the names).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        name: Option<String>,
        /// Rebuild every projection, reading the log once.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a platform administrator (the only way to create the first one). The
    /// password comes from AULA_ADMIN_PASSWORD or is asked for on the terminal.
    Create {
        #[arg(long)]
        email: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Print the event catalog as Markdown (the source of docs/events.md).
    Catalog,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Events appended per second through the full command path (load, decide,
    /// append) at concurrency 1, 8 and 32, beside a bare one-row INSERT.
    Append {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// Events per second delivered to a no-op subscription from a log of N events.
    Log {
        #[arg(long, default_value_t = 1_000_000)]
        events: i64,
        /// Interleaved rounds (the subscription, then the COPY); the median ratio is
        /// the figure, since one round of a second or two swings with the machine.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
        rounds: u32,
    },
    /// Rebuild every read model from a log of N synthetic course events; events/s.
    Rebuild {
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
    },
    /// The admin event list over N events and ~2N tasks: p50/p95/max of every filter ×
    /// sort × direction, first page and deep pages (the query of `adminEvents`).
    ListQuery {
        #[arg(long, default_value_t = 1_000_000)]
        events: i64,
        /// Timed runs of each first page and of each deepest page.
        #[arg(long, default_value_t = 5)]
        samples: usize,
        /// How many pages deep to follow the cursors.
        #[arg(long, default_value_t = 50)]
        pages: usize,
        /// Only measure: use this already generated database on DATABASE_URL's server
        /// (keep one with `--keep`), and leave it there.
        #[arg(long)]
        reuse_database: Option<String>,
        /// Keep the generated database (with DATABASE_URL) and print its name.
        #[arg(long)]
        keep: bool,
    },
    /// Insert N no-op tasks in one call, then drain them with separate worker processes
    /// (this binary, started beside itself), history kept; tasks/s over the drain only.
    Tasks {
        #[arg(long, default_value_t = 200_000)]
        tasks: i64,
        /// Worker processes.
        #[arg(long, alias = "worker-sets", default_value_t = 4)]
        processes: usize,
        /// Tasks run at once by each process.
        #[arg(long, default_value_t = 24)]
        concurrency: usize,
        /// Most tasks one claim statement takes (default: the concurrency).
        #[arg(long)]
        claim_batch: Option<i64>,
        /// Give each task an event of its own (written first, not counted), as
        /// reactions do: finishing a task then also updates its event's admin row.
        #[arg(long)]
        issued_by_events: bool,
    },
    /// Webhook messages per second to a fast local receiver (events inserted at once),
    /// then event commit → request received p50/p99 (events one at a time).
    Webhooks {
        #[arg(long, default_value_t = 5_000)]
        messages: usize,
        /// Events appended one at a time for the latency.
        #[arg(long, default_value_t = 500)]
        samples: usize,
        /// Deliveries run at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    /// One worker process of `bench tasks`, which starts it (prints `ready` once it
    /// claims; stops when its stdin closes).
    #[command(hide = true)]
    TaskWorker {
        /// The benchmark's database on DATABASE_URL's server.
        #[arg(long)]
        database: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        concurrency: usize,
        #[arg(long)]
        claim_batch: i64,
    },
    /// The application rush: N applicants apply at once over HTTP (each from its own
    /// loopback address, 300 in flight) to courses of 30 seats, with every part of the
    /// service running in this process: applications accepted per second, first-try
    /// refusals, first application to last decision, "scheduled" e-mail p50/p95.
    Rush {
        #[arg(long, default_value_t = 5000)]
        applicants: usize,
        #[arg(long, default_value_t = 1)]
        courses: usize,
    },
    /// Events to NATS JetStream: events/s published from a log of N events, then commit →
    /// consumer latency p50/p99 of single commands. Uses AULA_NATS_URL, or starts a
    /// private `nats-server` (from PATH) with JetStream on a temporary directory.
    Broker {
        #[arg(long, default_value_t = 1_000_000)]
        events: i64,
        /// Single events, one at a time, for the latency percentiles.
        #[arg(long, default_value_t = 2000)]
        latency_events: usize,
    },
    /// N sequential events, each awaited until its task starts: latency percentiles.
    Latency {
        #[arg(long, default_value_t = 1000)]
        events: usize,
    },
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use clap::CommandFactory as _;

    use super::*;

    /// Every environment variable clap reads, with its flag.
    fn flags_by_variable() -> BTreeMap<String, String> {
        let root = Cli::command();
        let serve = root
            .get_subcommands()
            .find(|c| c.get_name() == "serve")
            .expect("a serve subcommand")
            .clone();
        root.get_arguments()
            .chain(serve.get_arguments())
            .filter_map(|arg| {
                let env = arg.get_env()?.to_str()?.to_owned();
                Some((env, format!("--{}", arg.get_long()?)))
            })
            .collect()
    }

    fn file(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// `.env.example` names a variable's flag beside it ("(flag: --name)") exactly when
    /// it has one, and lists every variable that has one.
    #[test]
    fn env_example_names_the_flags_there_are_and_no_others() {
        let flags = flags_by_variable();
        let example = file(".env.example");
        let mut listed = BTreeSet::new();
        for block in example.split("\n\n") {
            let variables: Vec<String> = block
                .lines()
                .filter_map(|line| {
                    let line = line.trim_start_matches('#').trim();
                    let (name, _) = line.split_once('=')?;
                    (!name.is_empty()
                        && name
                            .chars()
                            .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit()))
                    .then(|| name.to_owned())
                })
                .collect();
            if variables.is_empty() {
                continue;
            }
            let named: BTreeSet<String> = block
                .split(|c: char| c.is_whitespace() || c == ',' || c == ')' || c == '(')
                .filter(|word| word.starts_with("--"))
                .map(str::to_owned)
                .collect();
            let expected: BTreeSet<String> = variables
                .iter()
                .filter_map(|v| flags.get(v).cloned())
                .collect();
            assert_eq!(named, expected, "flags named in the block of {variables:?}");
            listed.extend(variables);
        }
        for variable in flags.keys() {
            assert!(
                listed.contains(variable),
                "{variable} is not in .env.example"
            );
        }
    }

    /// docs/configuration.md gives a flag exactly to the variables that have one.
    #[test]
    fn the_configuration_page_names_the_flags_there_are_and_no_others() {
        let flags = flags_by_variable();
        let page = file("docs/configuration.md");
        let mut seen = BTreeSet::new();
        for row in page.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let (variables, flag) = (cells[1], cells[2]);
            let documented = flag
                .trim_matches('`')
                .split_whitespace()
                .last()
                .map(str::to_owned);
            for variable in variables.split('/').map(|v| v.trim().trim_matches('`')) {
                assert_eq!(
                    documented.as_deref(),
                    flags.get(variable).map(String::as_str),
                    "the flag of {variable} in docs/configuration.md"
                );
                seen.insert(variable.to_owned());
            }
        }
        for variable in flags.keys() {
            assert!(
                seen.contains(variable),
                "{variable} is not in docs/configuration.md"
            );
        }
    }
}
