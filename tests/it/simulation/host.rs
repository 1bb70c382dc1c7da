//! callhook under test, started, stopped gracefully or crashed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use callhook::app::Application;
use callhook::config::Settings;

use crate::helpers::APP;

// callhook under test: in a runtime of its own, so that a crash can drop everything it
// runs at once; or, in process schedules, the real binary, killed with SIGKILL.

pub(super) enum Stop {
    Graceful,
    Crash,
}

pub(super) enum Host {
    Thread {
        stop: Option<tokio::sync::oneshot::Sender<Stop>>,
        thread: Option<std::thread::JoinHandle<()>>,
    },
    Process(std::process::Child),
}

pub(super) struct Running {
    pub(super) addr: SocketAddr,
    pub(super) host: Host,
}

impl Running {
    /// Starts callhook; waits (a bounded while) for the spool directory of a crashed
    /// predecessor to be let go.
    pub(super) async fn start(settings: Settings, process: bool) -> Result<Self, String> {
        if process {
            return Self::start_process(&settings).await;
        }
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel::<Result<SocketAddr, String>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<Stop>();
        let thread = std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = addr_tx.send(Err(e.to_string()));
                    return;
                }
            };
            rt.block_on(serve(settings, addr_tx, stop_rx));
            rt.shutdown_background();
        });
        let addr = addr_rx
            .await
            .map_err(|_| "callhook's thread ended before it served".to_owned())??;
        Ok(Self {
            addr,
            host: Host::Thread {
                stop: Some(stop_tx),
                thread: Some(thread),
            },
        })
    }

    /// `callhook serve` as a child process with the schedule's settings (and production
    /// timings: the hidden ones cannot be set from outside), once `/healthz` answers.
    pub(super) async fn start_process(settings: &Settings) -> Result<Self, String> {
        Self::start_process_tries(settings, 5).await
    }

    async fn start_process_tries(settings: &Settings, tries: u32) -> Result<Self, String> {
        let port = crate::process::free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}")
            .parse()
            .map_err(|e| format!("{e}"))?;
        let spool = settings
            .spool
            .dir
            .as_ref()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        // The destinations, which only a configuration file can give a process.
        let config = std::path::Path::new(&spool).with_extension("toml");
        std::fs::write(&config, forward_config(&settings.forward)).map_err(|e| e.to_string())?;
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_callhook"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .args(["--database-url", settings.database.url.expose()])
            .args(["--sdkappid", &APP.to_string(), "--spool-dir", &spool])
            .args(["--max-batch", &settings.ingest.max_batch.to_string()])
            .args(["--writers", &settings.ingest.writers.to_string()])
            .args(["--listen", &addr.to_string()])
            .args(["--callback-path", &settings.callback_path])
            .args(["--trtc-path", &settings.trtc_path])
            .env_remove("CALLHOOK_CONFIG")
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(if std::env::var_os("CALLHOOK_SIM_STDERR").is_some() {
                std::process::Stdio::inherit()
            } else {
                std::process::Stdio::null()
            })
            .spawn()
            .map_err(|e| format!("spawning callhook: {e}"))?;
        let mut running = Self {
            addr,
            host: Host::Process(child),
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // It could not bind the port (another schedule's callhook took it after
            // free_port let it go): start again on another.
            if let Host::Process(child) = &mut running.host
                && let Ok(Some(status)) = child.try_wait()
            {
                if tries <= 1 {
                    return Err(format!("callhook exited at start ({status})"));
                }
                return Box::pin(Self::start_process_tries(settings, tries - 1)).await;
            }
            // Our own route answers a GET with 405; another schedule's callhook, which may
            // have taken this port first (then ours cannot bind it), with 404.
            let healthy = client
                .get(format!("{}{}", running.base(), settings.callback_path))
                .send()
                .await
                .is_ok_and(|r| r.status().as_u16() == 405);
            if healthy {
                return Ok(running);
            }
            if Instant::now() > deadline {
                return Err("callhook did not become healthy".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(super) fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops it: gracefully, or as `kill -9` does (nothing more runs).
    pub(super) async fn stop(self, how: Stop) {
        match self.host {
            Host::Thread {
                mut stop,
                mut thread,
            } => {
                if let Some(tx) = stop.take() {
                    let _ = tx.send(how);
                }
                if let Some(thread) = thread.take() {
                    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
                }
            }
            Host::Process(mut child) => {
                match how {
                    Stop::Crash => {
                        let _ = child.kill();
                    }
                    Stop::Graceful => {
                        let _ = std::process::Command::new("kill")
                            .arg("-TERM")
                            .arg(child.id().to_string())
                            .status();
                    }
                }
                let _ = tokio::task::spawn_blocking(move || child.wait()).await;
            }
        }
    }
}

pub(super) async fn serve(
    settings: Settings,
    addr_tx: tokio::sync::oneshot::Sender<Result<SocketAddr, String>>,
    stop_rx: tokio::sync::oneshot::Receiver<Stop>,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let app = loop {
        match Application::build(settings.clone()).await {
            Ok(app) => break app,
            // The crashed process's journal is still being dropped.
            Err(e) if Instant::now() < deadline && format!("{e:#}").contains("in use") => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => {
                let _ = addr_tx.send(Err(format!("{e:#}")));
                return;
            }
        }
    };
    let Ok(addr) = app.local_addr() else {
        let _ = addr_tx.send(Err("no local address".into()));
        return;
    };
    let _ = addr_tx.send(Ok(addr));
    let (grace_tx, grace_rx) = tokio::sync::oneshot::channel::<()>();
    let run = app.run_until(async {
        let _ = grace_rx.await;
    });
    tokio::pin!(run);
    tokio::select! {
        _ = &mut run => {}
        how = stop_rx => match how {
            Ok(Stop::Crash) => {}
            Ok(Stop::Graceful) | Err(_) => {
                let _ = grace_tx.send(());
                let _ = run.await;
            }
        },
    }
}

/// `[[forward]]` tables for `destinations`.
fn forward_config(destinations: &[callhook::config::Destination]) -> String {
    let mut text = String::new();
    for d in destinations {
        let schedule: Vec<String> = d
            .retry_schedule
            .iter()
            .map(|t| format!("\"{}ms\"", t.as_millis()))
            .collect();
        text.push_str(&format!(
            "[[forward]]\nname = \"{}\"\nurl = \"{}\"\nsecret = \"{}\"\ntimeout_ms = {}\nretry_schedule = [{}]\n",
            d.name(),
            d.url,
            d.key.to_secret_string(),
            d.timeout.as_millis(),
            schedule.join(", ")
        ));
        if let Some(families) = &d.route.families {
            text.push_str(&format!("families = {families:?}\n"));
        }
    }
    text
}
