//! Command-line interface. Every flag can also be set by an environment variable and by
//! the configuration file; precedence is flag > environment > file > built-in default.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "callhook",
    version,
    about = "Receive Tencent TRTC / TUICallKit call callbacks and store them durably.",
    long_about = "callhook is the service behind the call callback URL you register in the \
Tencent console (it speaks HTTP; put a TLS-terminating proxy in front of it). It checks each delivery, stores it in SQLite (the default, \
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
    /// Default: pretty. The level comes from RUST_LOG (default: info,sqlx=warn).
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

impl Cli {
    /// The command line, or the process exits with clap's message; a value that came
    /// from a `CALLHOOK_*` variable rather than its flag is named by the variable (clap
    /// names the flag, which the user never typed), with exit code 2 as for any
    /// configuration error.
    pub fn parse_or_exit() -> Self {
        use clap::error::{ContextKind, ContextValue, ErrorKind};
        let e = match Self::try_parse() {
            Ok(cli) => return cli,
            Err(e) => e,
        };
        let text = |kind| match e.get(kind) {
            Some(ContextValue::String(s)) => Some(s.clone()),
            _ => None,
        };
        if matches!(
            e.kind(),
            ErrorKind::ValueValidation | ErrorKind::InvalidValue
        ) && let (Some(arg), Some(value)) = (
            text(ContextKind::InvalidArg),
            text(ContextKind::InvalidValue),
        ) && let Some(var) = env_origin(&arg, &value)
        {
            let why = e.to_string();
            let why = why
                .lines()
                .next()
                .and_then(|l| l.rsplit_once("': "))
                .map_or("not a valid value", |(_, why)| why);
            eprintln!(
                "callhook: configuration error: {var}={value:?}: {why} (the variable of {arg})"
            );
            std::process::exit(2);
        }
        e.exit()
    }
}

/// The `CALLHOOK_*` variable `value` of the flag `arg` (`--body-limit <BYTES>`) came from:
/// the flag's variable holds it and the command line does not name the flag.
fn env_origin(arg: &str, value: &str) -> Option<String> {
    use clap::CommandFactory;
    let long = arg.split_whitespace().next()?.strip_prefix("--")?;
    let typed =
        std::env::args().any(|a| a == format!("--{long}") || a.starts_with(&format!("--{long}=")));
    if typed {
        return None;
    }
    let mut commands = vec![Cli::command()];
    while let Some(c) = commands.pop() {
        for a in c.get_arguments() {
            if a.get_long() == Some(long)
                && let Some(var) = a.get_env()
                && std::env::var_os(var).is_some_and(|v| v == value)
            {
                return Some(var.to_string_lossy().into_owned());
            }
        }
        commands.extend(c.get_subcommands().cloned());
    }
    None
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the callback receiver (applies pending database migrations first), and forward
    /// stored events to the config file's [[forward]] destinations, if any.
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    Migrate(DatabaseArgs),
    /// Print call analytics for a period: answer rates, outcomes, talk time.
    Report(ReportArgs),
    /// Print the latest stored events, oldest first (reads the database, never writes it).
    Events(EventsArgs),
    /// Act as Tencent's sender: post example or generated callbacks to a URL, with the
    /// real retry schedule (0, 1, 1, 2, 3, 5 s). Use it to verify a deployment.
    Send(SendArgs),
    /// Exit 0 when a running callhook answers its health check (for container HEALTHCHECK
    /// instructions, where no curl is installed).
    Healthcheck(HealthcheckArgs),
    /// Fetch Tencent's own record of every call in a window (at most 7 days old), store it
    /// in call_records, and say which calls never arrived as callbacks (needs the app's
    /// secret key).
    Reconcile(ReconcileArgs),
    /// Set the callback URL and callbacks Tencent posts for an app, through Tencent's
    /// callback configuration API; or, with --check, compare what Tencent has with this
    /// deployment (needs the app's secret key).
    Register(RegisterArgs),
    /// The forwarding outbox ([[forward]] destinations): its state per destination, and
    /// replaying delivered or dead entries.
    Forward(ForwardArgs),
    /// A local receiver of forwarded messages: verifies each one's Standard Webhooks
    /// signature and prints it (to watch forwarding work on one machine).
    Listen(ListenArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReconcileFormat {
    /// One line per app and what it found.
    Table,
    /// A JSON array, one object per app.
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ForwardArgs {
    #[command(subcommand)]
    pub command: ForwardCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ForwardCommand {
    /// Per destination: pending (and due) entries, delivered, dead, the oldest pending
    /// entry's age and the last error. Reads the database, never writes it.
    Status(ForwardStatusArgs),
    /// Make a destination's delivered and dead entries due again (with --dead, only the
    /// dead): the same webhook-id, the retry schedule from its start.
    Retry(ForwardRetryArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ForwardStatusArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,

    /// Output format.
    #[arg(long, value_enum, default_value_t = StatusFormat::Table)]
    pub format: StatusFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    /// An aligned table, a row per destination.
    Table,
    /// A JSON array, an object per destination with the table's columns and when the last
    /// error happened.
    Json,
}

#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:
  The last 24 hours of every app that has a secret key:
    CALLHOOK_SECRET_KEY_1400000001=… callhook reconcile --sdkappid 1400000001
  A fixed window (an interrupted run of the same window resumes where it stopped):
    callhook reconcile --config callhook.toml --from 2026-12-01T00:00:00Z --to 2026-12-02T00:00:00Z

Times: RFC 3339 (2026-12-01T08:00:00Z), a UTC day (2026-12-01), or Unix seconds. Tencent keeps
records for 7 days: an older window is refused. Exit code 0 when every app was reconciled,
1 when Tencent or the database refused (the message names Tencent's code and what to fix),
2 for a configuration problem.")]
pub struct ReconcileArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,

    /// Only this app (it needs a secret key: [[apps]] secret_key_env, or
    /// CALLHOOK_SECRET_KEY_<ID>). Default: every configured app with a secret key.
    #[arg(long, value_name = "ID", value_parser = clap::value_parser!(i64).range(1..))]
    pub sdkappid: Option<i64>,

    /// The window: from this long ago until now (90m, 24h, 7d). Default: 24h
    #[arg(long, value_name = "DURATION", conflicts_with_all = ["from", "to"])]
    pub since: Option<String>,

    /// The window's start (calls that started at or after it).
    #[arg(long, value_name = "TIME", requires = "to")]
    pub from: Option<String>,

    /// The window's end (calls that started before it).
    #[arg(long, value_name = "TIME", requires = "from")]
    pub to: Option<String>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = ReconcileFormat::Table)]
    pub format: ReconcileFormat,

    /// Requests a second to Tencent, at most (file: reconcile.rate). Default: 20
    #[arg(long, value_name = "R")]
    pub rate: Option<f64>,

    /// Records asked for per page (file: reconcile.page_size). Default: 100
    #[arg(long, value_name = "N")]
    pub page_size: Option<u32>,
}

#[derive(Debug, Clone, Args)]
#[command(after_help = "Examples:
  Point Tencent at this deployment (step one of the deployment guide):
    CALLHOOK_SECRET_KEY_1400000001=… callhook register --sdkappid 1400000001 --url https://hooks.example.com/
  See what Tencent has, and whether it differs from this deployment:
    callhook register --sdkappid 1400000001 --check --url https://hooks.example.com/

The callbacks registered are the v4 call callbacks this app accepts (its [[apps]] commands
list, or all four). An app with a token gets ?token=… added to the URL. Exit code 0 when
Tencent has (or now has) what this deployment expects; 1 otherwise (or when Tencent refused);
2 for a configuration problem.")]
pub struct RegisterArgs {
    /// The app (it needs a secret key). Default: the one configured app with a secret key.
    #[arg(long, value_name = "ID", value_parser = clap::value_parser!(i64).range(1..))]
    pub sdkappid: Option<i64>,

    /// The callback URL Tencent should post to: https://<your host><callback_path>.
    #[arg(long, value_name = "URL", required_unless_present = "check")]
    pub url: Option<String>,

    /// Only show what Tencent has configured, and how it differs from this deployment
    /// (and from --url, when given); change nothing.
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ForwardRetryArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,

    /// The destination (its [[forward]] name).
    #[arg(value_name = "NAME")]
    pub name: String,

    /// Only the dead entries (else delivered ones too).
    #[arg(long)]
    pub dead: bool,

    /// Only entries stored since then: a duration back from now (24h, 30m) or an RFC 3339
    /// time (2026-12-07T10:00:00Z).
    #[arg(long, value_name = "T")]
    pub since: Option<String>,

    /// Only the entries of this call's events.
    #[arg(long, value_name = "ID")]
    pub call_id: Option<String>,
}

#[derive(Clone, Args)]
#[command(
    after_help = "Example, beside a callhook whose [[forward]] url is http://127.0.0.1:9000/:
  callhook listen 127.0.0.1:9000 --secret \"$CALLHOOK_FORWARD_SECRET_PUSH\"

Each message is answered 204 when its signature is valid and its timestamp within 5 minutes,
else 401 (so callhook retries it), and printed."
)]
pub struct ListenArgs {
    /// Address to listen on (HOST:PORT).
    #[arg(value_name = "ADDR")]
    pub addr: String,

    /// The destination's signing secret (whsec_…).
    #[arg(
        long,
        env = "CALLHOOK_LISTEN_SECRET",
        value_name = "WHSEC",
        hide_env_values = true
    )]
    pub secret: String,

    /// `text`: a line per message (time, webhook-id, type, verified or why not), then its
    /// body as received; `json`: one JSON object per line (the time, the headers, whether it
    /// verified, the body).
    #[arg(long, value_enum, default_value_t = ListenFormat::Text)]
    pub format: ListenFormat,
}

/// The secret never shows.
impl std::fmt::Debug for ListenArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenArgs")
            .field("addr", &self.addr)
            .field("secret", &"REDACTED")
            .field("format", &self.format)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListenFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// The URL to probe: /healthz (the process serves) or /readyz (the database answers).
    /// Default: /healthz on the address `serve` listens on (--listen, CALLHOOK_LISTEN or
    /// the config file's `listen`; 0.0.0.0 and :: are probed on loopback).
    #[arg(long, env = "CALLHOOK_HEALTHCHECK_URL", value_name = "URL")]
    pub url: Option<String>,

    /// The address `serve` listens on, when --url is not given. Default: 127.0.0.1:8080
    #[arg(long, env = "CALLHOOK_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,

    /// Give up after this many milliseconds.
    #[arg(long, default_value_t = 2000, value_name = "MS")]
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Clone, Default, Args)]
pub struct DatabaseArgs {
    /// Where events are stored: `sqlite://PATH` or `postgres://USER:PASSWORD@HOST/DB`.
    /// `serve` and `migrate` create a missing SQLite file; the commands that only read
    /// need it to exist. Default: sqlite://callhook.db
    #[arg(long, env = "CALLHOOK_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
}

/// The URL's password never shows.
impl std::fmt::Debug for DatabaseArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = self
            .database_url
            .as_ref()
            .map(|u| crate::store::DatabaseUrl::new(u.as_str()));
        f.debug_struct("DatabaseArgs")
            .field("database_url", &url)
            .finish()
    }
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

    /// The URL path TRTC posts its room, media and recording callbacks to (the TRTC
    /// console's callback URL). Default: /trtc
    #[arg(long, env = "CALLHOOK_TRTC_PATH", value_name = "PATH")]
    pub trtc_path: Option<String>,

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

    /// Directory of the outage journal (PostgreSQL only): while the database is
    /// unavailable, events are committed to journal.db here before they are acknowledged,
    /// and replayed into the database when it returns. Default: callhook-spool
    #[arg(long, env = "CALLHOOK_SPOOL_DIR", value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,

    /// Turn the outage journal off: while the database is down, answer 503 instead.
    #[arg(long, env = "CALLHOOK_NO_SPOOL")]
    pub no_spool: bool,

    /// How long a graceful shutdown may take before in-flight work is abandoned, in
    /// milliseconds. Default: 10000
    #[arg(long, env = "CALLHOOK_SHUTDOWN_TIMEOUT_MS", value_name = "MS")]
    pub shutdown_timeout_ms: Option<u64>,

    /// Days of raw history to keep (file: retention.days): older events, rejected
    /// deliveries, forwarding history and call records are removed every hour, and the
    /// daily statistics stay. 0 keeps everything. Default: 0
    #[arg(long, env = "CALLHOOK_RETENTION_DAYS", value_name = "DAYS")]
    pub retention_days: Option<u32>,
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
pub enum EventsFormat {
    /// An aligned table of the main columns.
    Table,
    /// A JSON array of objects, every column but the payload.
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct EventsArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,

    /// How many of the most recently stored events to print.
    #[arg(long, default_value_t = 10, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub last: u32,

    /// Only this SDKAppID. Default: all.
    #[arg(long, value_name = "ID")]
    pub sdkappid: Option<i64>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = EventsFormat::Table)]
    pub format: EventsFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SendFamily {
    /// Call status callbacks: one per participant, after the call (`command=call_end`).
    Status,
    /// Call event callbacks: one per user action (`command=caller_start_call`, …).
    Event,
    /// The v4 callbacks (`CallbackCommand=Call.CallbackAfterStartCall`, …).
    V4,
    /// All three families for every call; with --trtc-key or --trtc-url, TRTC's own
    /// callbacks of every call too (as --family trtc).
    All,
    /// TRTC's own callbacks of every call's room: room and media events, cloud recording
    /// (signed with --trtc-key, to --trtc-url), and Call.CallbackAfterRecordChanged (to --url).
    Trtc,
}

/// How `--token` is presented to the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SendAuth {
    /// `token=…` in the query (unless the URL has it already) and `RequestTime`/`Sign`.
    Both,
    /// Only `token=…` in the query, as a URL registered with `?token=…` carries it.
    Token,
    /// Only Chat-style signing: `RequestTime` and `Sign` = hex SHA-256(token + RequestTime).
    Sign,
}

#[derive(Clone, Args)]
#[command(after_help = "Examples:
  Check a deployment end to end, through its proxy, with the app's token:
    callhook send --url https://hooks.example.com/ --sdkappid 1400000001 --token \"$TOKEN\" --example
  Store 50 realistic calls (all three callback families) in a local callhook:
    callhook send --sdkappid 1400000001 --calls 50 --family all
  Load test:
    callhook send --url http://10.0.0.5:8080/ --sdkappid 1400000001 --calls 100000 --concurrency 64

Output: a progress bar on a terminal, then a summary on stdout (see docs/src/verify.md,
\"The summary\"). Exit code 0 when every delivery was acknowledged, 1 when any was dropped.")]
pub struct SendArgs {
    /// The callback URL to post to, as registered with Tencent (it may carry ?token=…;
    /// Tencent's parameters are appended to it).
    #[arg(
        long,
        env = "CALLHOOK_SEND_URL",
        value_name = "URL",
        default_value = "http://127.0.0.1:8080/"
    )]
    pub url: String,

    /// The SDKAppID to send as (the receiver must be configured for it).
    #[arg(long, value_name = "ID", value_parser = clap::value_parser!(i64).range(1..))]
    pub sdkappid: i64,

    /// The app's token: added as token=… (unless the URL has one) and used to sign each
    /// attempt with RequestTime and Sign; see --auth.
    #[arg(
        long,
        env = "CALLHOOK_SEND_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// How the token is sent: both (token=… and Sign/RequestTime), token, or sign.
    #[arg(long, value_enum, default_value_t = SendAuth::Both, requires = "token")]
    pub auth: SendAuth,

    /// Number of calls to generate; each makes several deliveries (one per participant
    /// in the status family, one per action in the event family, …).
    #[arg(long, default_value_t = 10, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub calls: u64,

    /// Which callback family to send.
    #[arg(long, value_enum, default_value_t = SendFamily::Status)]
    pub family: SendFamily,

    /// --family trtc (and all): the TRTC callback URL (as registered in the TRTC console). Default:
    /// `trtc` resolved against --url (http://127.0.0.1:8080/ → http://127.0.0.1:8080/trtc).
    #[arg(long, env = "CALLHOOK_SEND_TRTC_URL", value_name = "URL")]
    pub trtc_url: Option<String>,

    /// --family trtc (and all): the TRTC console's callback key; each TRTC callback carries
    /// Sign = base64(HMAC-SHA256(key, body)). Without it, none is signed.
    #[arg(
        long,
        env = "CALLHOOK_SEND_TRTC_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub trtc_key: Option<String>,

    /// Requests in flight at once (a delivery waiting for its retry does not count).
    #[arg(long, default_value_t = 8, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub concurrency: u64,

    /// Deliveries started per second at most (0 = as fast as possible).
    #[arg(long, default_value_t = 0.0, value_name = "R", value_parser = parse_rate)]
    pub rate: f64,

    /// Send Tencent's documented example request (a status callback of a 1-to-1 call by
    /// "Alice"), with your SDKAppID, and nothing else.
    #[arg(long, conflicts_with_all = ["calls", "family", "seed", "end_time"])]
    pub example: bool,

    /// Seed of the call generator: the same seed gives the same calls (participants,
    /// outcomes, durations). Default: random (the summary prints it).
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,

    /// The generated calls take place in the 24 hours before this Unix time (seconds).
    /// Call ids and times depend on it and the seed, so with both fixed a run sends
    /// byte-identical callbacks (a repeat is all duplicates). Default: now.
    #[arg(long, value_name = "UNIX_SECONDS")]
    pub end_time: Option<i64>,

    /// Per-attempt timeout in milliseconds: no complete answer by then is a failed
    /// attempt (retried).
    #[arg(long, default_value_t = 5000, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: u64,

    /// Delays before each retry, in seconds, comma-separated (Tencent's: 0,1,1,2,3,5,
    /// then the delivery is dropped). Shorter schedules are for tests.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0,1,1,2,3,5",
        value_name = "S,S,…",
        value_parser = parse_delay
    )]
    pub retry_schedule: Vec<std::time::Duration>,

    /// Also write the summary as JSON to this file (`-`: to stdout, instead of the text).
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,

    /// Print no progress bar and no summary; the exit code still tells.
    #[arg(long, short)]
    pub quiet: bool,

    /// Also play Tencent's call record API on this address (e.g. 127.0.0.1:9090): serve
    /// the records of the calls sent, those whose callbacks were withheld too
    /// (--drop-percent), until Ctrl-C. Point an app's api_url at http://ADDR, give it
    /// --record-api-key as its secret key, and run callhook reconcile.
    #[arg(
        long,
        value_name = "ADDR",
        requires = "record_api_key",
        conflicts_with = "example"
    )]
    pub record_api: Option<String>,

    /// The secret key the record API checks each request's UserSig against (the app's
    /// secret key in callhook's configuration).
    #[arg(
        long,
        env = "CALLHOOK_SEND_RECORD_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub record_api_key: Option<String>,

    /// Send none of the callbacks of this share of the calls, in percent (as a long outage
    /// or a client too old to send them would): reconcile finds them in the record API.
    /// Default: 10 with --record-api, else 0
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(0..=100))]
    pub drop_percent: Option<u8>,
}

/// The token, the TRTC key and a token in the URLs never show.
impl std::fmt::Debug for SendArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::protocol::query::redact_url;
        let hidden = |s: &Option<String>| s.as_ref().map(|_| "REDACTED");
        f.debug_struct("SendArgs")
            .field("url", &redact_url(&self.url))
            .field("sdkappid", &self.sdkappid)
            .field("token", &hidden(&self.token))
            .field("auth", &self.auth)
            .field("calls", &self.calls)
            .field("family", &self.family)
            .field("trtc_url", &self.trtc_url.as_deref().map(redact_url))
            .field("trtc_key", &hidden(&self.trtc_key))
            .field("concurrency", &self.concurrency)
            .field("rate", &self.rate)
            .field("example", &self.example)
            .field("seed", &self.seed)
            .field("end_time", &self.end_time)
            .field("timeout_ms", &self.timeout_ms)
            .field("retry_schedule", &self.retry_schedule)
            .field("summary_json", &self.summary_json)
            .field("quiet", &self.quiet)
            .field("record_api", &self.record_api)
            .field("record_api_key", &hidden(&self.record_api_key))
            .field("drop_percent", &self.drop_percent)
            .finish()
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(format!(
            "{s:?} is not a rate (deliveries per second, 0 or more)"
        )),
    }
}

fn parse_delay(s: &str) -> Result<std::time::Duration, String> {
    match s.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && (0.0..=3600.0).contains(&secs) => {
            Ok(std::time::Duration::from_secs_f64(secs))
        }
        _ => Err(format!("{s:?} is not a delay in seconds (0 to 3600)")),
    }
}
