//! `callhook`: command-line entry point. Only wiring lives here.

use std::process::ExitCode;

use clap::Parser;

use callhook::cli::{Cli, Command, LogFormat};
use callhook::config::{ConfigError, FileConfig, Settings, database_url, validate_database_url};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let file = match cli.config.as_deref().map(FileConfig::load).transpose() {
        Ok(f) => f.unwrap_or_default(),
        Err(e) => return config_error(&e),
    };
    let log_format = cli
        .log_format
        .or(file.log_format)
        .unwrap_or(LogFormat::Pretty);
    let _log_guard = callhook::logging::init(log_format);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("callhook: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => {
                let env = |k: &str| std::env::var(k).ok();
                let settings = Settings::resolve(&args, file, cli.log_format, &env)?;
                validate_database_url(settings.database.url.expose())?;
                callhook::app::Application::build(settings)
                    .await?
                    .run_until(callhook::shutdown_signal())
                    .await
            }
            Command::Migrate(args) => {
                let url = database_url(&args, &file);
                validate_database_url(&url)?;
                let mut db = callhook::config::DatabaseSettings::new(url);
                db.acquire_timeout = std::time::Duration::from_secs(10);
                let store = callhook::store::Store::connect(&db).await?;
                store.migrate(std::time::Duration::from_secs(3600)).await?;
                store.close().await;
                println!("callhook: migrations applied to {}", db.url.redacted());
                Ok(())
            }
            Command::Report(args) => callhook::report::run(&args, &file).await,
            Command::Events(args) => callhook::events::run(&args, &file).await,
            Command::Send(args) => callhook::send::run(args).await,
            Command::Healthcheck(args) => {
                let url = callhook::config::healthcheck_url(&args, &file)?;
                healthcheck(&url, args.timeout_ms).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<ConfigError>() {
            Some(ce) => config_error(ce),
            None => match e.downcast_ref::<callhook::send::Dropped>() {
                Some(d) => {
                    eprintln!("callhook: {d}");
                    ExitCode::FAILURE
                }
                None => {
                    eprintln!("callhook: error: {e:#}");
                    ExitCode::FAILURE
                }
            },
        },
    }
}

async fn healthcheck(url: &str, timeout_ms: u64) -> anyhow::Result<()> {
    callhook::install_tls_provider();
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(timeout_ms))
        .build()?;
    let resp = client.get(url).send().await?;
    let status = resp.status();
    anyhow::ensure!(status.is_success(), "{url} answered {status}");
    Ok(())
}

/// Configuration problems: one line, exit code 2.
fn config_error(e: &ConfigError) -> ExitCode {
    eprintln!("callhook: configuration error: {e}");
    ExitCode::from(2)
}
