//! `callhook`: command-line entry point. Only wiring lives here: the command line is
//! resolved into a job with its settings (`config::resolve`), then run.

use std::process::ExitCode;

use callhook::cli::Cli;
use callhook::config::{ConfigError, Invocation, Job};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let env = |k: &str| std::env::var(k).ok();
    let Invocation { log_format, job } = match callhook::config::resolve(Cli::parse_or_exit(), &env)
    {
        Ok(invocation) => invocation,
        Err(e) => return config_error(&e),
    };
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
    match runtime.block_on(run(job)) {
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

async fn run(job: Job) -> anyhow::Result<()> {
    match job {
        Job::Serve(settings) => {
            callhook::app::Application::build(*settings)
                .await?
                .run_until(callhook::shutdown_signal())
                .await
        }
        Job::Migrate(db) => {
            let store = callhook::store::Store::connect(&db).await?;
            store.migrate(std::time::Duration::from_secs(3600)).await?;
            store.close().await;
            println!("callhook: migrations applied to {}", db.url.redacted());
            Ok(())
        }
        Job::Report(args, url) => callhook::report::run(&args, &url).await,
        Job::Events(args, url) => callhook::events::run(&args, &url).await,
        Job::Send(args) => callhook::send::run(args).await,
        Job::Healthcheck { url, timeout } => healthcheck(&url, timeout).await,
        Job::Reconcile(job) => callhook::reconcile::run(*job).await,
        Job::Register(job) => callhook::register::run(*job).await,
        Job::ForwardStatus(args, url, names) => {
            callhook::forward::status(&args, &url, &names).await
        }
        Job::ForwardRetry(args, url) => callhook::forward::retry(&args, &url).await,
        Job::Listen(args) => callhook::listen::run(&args).await,
    }
}

async fn healthcheck(url: &str, timeout: std::time::Duration) -> anyhow::Result<()> {
    callhook::install_tls_provider();
    let client = reqwest::Client::builder().timeout(timeout).build()?;
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
