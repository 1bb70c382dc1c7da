//! Command-line interface. Every flag can also be set by an environment variable and by
//! the configuration file; precedence is flag > environment > file > built-in default.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "callhook",
    version,
    about = "Receive Tencent TRTC / TUICallKit call callbacks and store them durably.",
    long_about = "callhook is the HTTPS endpoint you register as the call callback URL in the \
Tencent console. It checks each delivery, stores it in SQLite (the default, \
`callhook.db` in the working directory) or PostgreSQL, and answers \
{\"ErrorCode\":0,...} only after the event is committed, so retries are never lost \
or stored twice.\n\nStart with:  callhook serve --sdkappid <YOUR SDKAPPID>",
    after_help = "Configuration: flags > CALLHOOK_* environment variables > --config FILE > defaults.\n\
See config.example.toml for every setting."
)]
pub struct Cli {
    /// Configuration file (TOML). See config.example.toml.
    #[arg(long, global = true, env = "CALLHOOK_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log format: `pretty` for a terminal, `json` for log collectors.
    /// Default: pretty. The level comes from RUST_LOG (default: info).
    #[arg(
        long,
        global = true,
        env = "CALLHOOK_LOG_FORMAT",
        value_name = "FORMAT"
    )]
    pub log_format: Option<LogFormat>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the callback receiver (applies pending database migrations first).
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    Migrate(DatabaseArgs),
    /// Print call analytics for a period: answer rates, outcomes, talk time.
    Report(ReportArgs),
    /// Act as Tencent's sender: post example or generated callbacks to a URL, with the
    /// real retry schedule (0, 1, 1, 2, 3, 5 s). Use it to verify a deployment.
    Send(SendArgs),
    /// Exit 0 when a running callhook answers its health check (for container HEALTHCHECK
    /// instructions, where no curl is installed).
    Healthcheck(HealthcheckArgs),
}

#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// The URL to probe: /healthz (the process serves) or /readyz (the database answers).
    #[arg(
        long,
        env = "CALLHOOK_HEALTHCHECK_URL",
        default_value = "http://127.0.0.1:8080/healthz"
    )]
    pub url: String,

    /// Give up after this many milliseconds.
    #[arg(long, default_value_t = 2000, value_name = "MS")]
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Default, Args)]
pub struct DatabaseArgs {
    /// Where events are stored: `sqlite://PATH` (created if missing) or
    /// `postgres://USER:PASSWORD@HOST/DB`. Default: sqlite://callhook.db
    #[arg(long, env = "CALLHOOK_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
}

#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,

    /// Address to listen on. Default: 127.0.0.1:8080 (the container uses 0.0.0.0:8080).
    #[arg(long, env = "CALLHOOK_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,

    /// An SDKAppID to accept callbacks for (repeatable; the environment variable takes a
    /// comma-separated list). Apps with tokens or command lists go in the config file.
    #[arg(
        long = "sdkappid",
        env = "CALLHOOK_SDKAPPIDS",
        value_name = "ID",
        value_delimiter = ','
    )]
    pub sdkappids: Vec<String>,

    /// Do not apply pending migrations at start-up (run `callhook migrate` yourself).
    #[arg(long, env = "CALLHOOK_NO_MIGRATE")]
    pub no_migrate: bool,

    /// The URL path Tencent posts to. Default: /
    #[arg(long, env = "CALLHOOK_CALLBACK_PATH", value_name = "PATH")]
    pub callback_path: Option<String>,

    /// Largest accepted request body in bytes. Default: 65536
    #[arg(long, env = "CALLHOOK_BODY_LIMIT", value_name = "BYTES")]
    pub body_limit: Option<usize>,

    /// Longest time a callback may take, from its headers to the answer, in milliseconds.
    /// Default: 3000
    #[arg(long, env = "CALLHOOK_REQUEST_TIMEOUT_MS", value_name = "MS")]
    pub request_timeout_ms: Option<u64>,

    /// Events waiting to be written before callhook answers 503 (70005, "slow down").
    /// Default: 4096
    #[arg(long, env = "CALLHOOK_QUEUE_DEPTH", value_name = "N")]
    pub queue_depth: Option<usize>,

    /// Most events written in one transaction. 1 = one INSERT per request. Default: 512
    #[arg(long, env = "CALLHOOK_MAX_BATCH", value_name = "N")]
    pub max_batch: Option<usize>,

    /// Concurrent batch writers (PostgreSQL; SQLite always uses one). Default: 2
    #[arg(long, env = "CALLHOOK_WRITERS", value_name = "N")]
    pub writers: Option<usize>,

    /// Database connections. Default: writers + 2
    #[arg(long, env = "CALLHOOK_POOL_SIZE", value_name = "N")]
    pub pool_size: Option<u32>,

    /// A reverse proxy whose X-Forwarded-For / Forwarded headers are believed: an IP
    /// address or CIDR range (repeatable, or comma-separated in the environment).
    #[arg(
        long = "trusted-proxy",
        env = "CALLHOOK_TRUSTED_PROXIES",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<String>,

    /// Directory of the outage spool (PostgreSQL only): events are kept here, durably,
    /// while the database is unreachable. Default: callhook-spool
    #[arg(long, env = "CALLHOOK_SPOOL_DIR", value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,

    /// Turn the outage spool off: while the database is down, answer 503 instead.
    #[arg(long, env = "CALLHOOK_NO_SPOOL")]
    pub no_spool: bool,

    /// How long a graceful shutdown may take before in-flight work is abandoned, in
    /// milliseconds. Default: 10000
    #[arg(long, env = "CALLHOOK_SHUTDOWN_TIMEOUT_MS", value_name = "MS")]
    pub shutdown_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Table,
    Json,
    Csv,
    Html,
}

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,

    /// First UTC day included (YYYY-MM-DD). Default: 7 days before --until.
    #[arg(long, value_name = "DATE")]
    pub since: Option<String>,

    /// First UTC day excluded (YYYY-MM-DD). Default: tomorrow (so today is included).
    #[arg(long, value_name = "DATE")]
    pub until: Option<String>,

    /// Only this SDKAppID. Default: all.
    #[arg(long, value_name = "ID")]
    pub sdkappid: Option<i64>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SendFamily {
    Status,
    Event,
    V4,
    All,
}

#[derive(Debug, Clone, Args)]
pub struct SendArgs {
    /// The callback URL to post to, as registered with Tencent (e.g. https://hooks.example.com/).
    #[arg(long, env = "CALLHOOK_SEND_URL", value_name = "URL")]
    pub url: String,

    /// The SDKAppID to send as.
    #[arg(long, value_name = "ID")]
    pub sdkappid: i64,

    /// The app's token: sent as ?token=… and used to sign (Sign/RequestTime).
    #[arg(
        long,
        env = "CALLHOOK_SEND_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// Number of calls to generate.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub calls: u64,

    /// Which callback family to send.
    #[arg(long, value_enum, default_value_t = SendFamily::Status)]
    pub family: SendFamily,

    /// Deliveries in flight at once.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub concurrency: usize,

    /// Deliveries started per second at most (0 = as fast as possible).
    #[arg(long, default_value_t = 0.0, value_name = "R")]
    pub rate: f64,

    /// Send Tencent's documented example request once, byte for byte, and exit.
    #[arg(long)]
    pub example: bool,

    /// Seed of the call generator, for repeatable runs. Default: random.
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,

    /// Per-attempt timeout in milliseconds.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    pub timeout_ms: u64,

    /// Retry schedule in seconds, comma-separated (Tencent's: 0,1,1,2,3,5).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0,1,1,2,3,5",
        value_name = "S,S,…"
    )]
    pub retry_schedule: Vec<f64>,

    /// Print no progress bar and no summary, only errors.
    #[arg(long, short)]
    pub quiet: bool,
}
