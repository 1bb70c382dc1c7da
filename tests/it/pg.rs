//! A throwaway PostgreSQL cluster for the tests, started from the installed server
//! binaries (initdb + pg_ctl into a temporary directory, listening on a Unix socket only).
//!
//! `CALLHOOK_TEST_DATABASE_URL=postgres://…/postgres` uses an existing server instead (its
//! user must be allowed to create databases). `CALLHOOK_PG_BIN` names the binaries'
//! directory when they are not under /usr/lib/postgresql/*/bin or on PATH.
//!
//! initdb refuses to run as root; as root, the cluster runs as the `postgres` user (or
//! `nobody`). A small reaper process stops the cluster and removes its directory when
//! the test process exits, however it exits.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::PgConnection;

pub struct PgCluster {
    dir: PathBuf,
    bin: PathBuf,
    run_as: Option<String>,
    /// URL of the `postgres` database, as superuser.
    admin_url: String,
    /// Whether this process started (and owns) the server.
    owned: bool,
}

static SHARED: OnceLock<Result<PgCluster, String>> = OnceLock::new();

/// The cluster shared by every test in this process.
pub fn shared() -> &'static PgCluster {
    let result = SHARED.get_or_init(|| match std::env::var("CALLHOOK_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => Ok(PgCluster {
            dir: PathBuf::new(),
            bin: PathBuf::new(),
            run_as: None,
            admin_url: url,
            owned: false,
        }),
        _ => PgCluster::start().map_err(|e| format!("{e:#}")),
    });
    match result {
        Ok(c) => c,
        Err(e) => panic!("cannot start a PostgreSQL cluster for the tests: {e}"),
    }
}

fn find_bin() -> anyhow::Result<PathBuf> {
    if let Ok(dir) = std::env::var("CALLHOOK_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    candidates.retain(|p| p.join("initdb").exists());
    candidates.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    if let Some(best) = candidates.pop() {
        return Ok(best);
    }
    let out = Command::new("pg_config").arg("--bindir").output();
    if let Ok(out) = out {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    anyhow::bail!(
        "no PostgreSQL server binaries found (looked in /usr/lib/postgresql/*/bin and pg_config); set CALLHOOK_PG_BIN"
    )
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn unprivileged_user() -> String {
    for user in ["postgres", "nobody"] {
        if Command::new("id")
            .arg(user)
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return user.to_owned();
        }
    }
    "nobody".to_owned()
}

impl PgCluster {
    /// Starts a new cluster in a fresh temporary directory.
    pub fn start() -> anyhow::Result<Self> {
        let bin = find_bin()?;
        let dir = tempfile::Builder::new()
            .prefix("callhook-pg-")
            .tempdir_in("/tmp")?
            .keep();
        let run_as = is_root().then(unprivileged_user);
        if let Some(user) = &run_as {
            let status = Command::new("chown")
                .arg("-R")
                .arg(user)
                .arg(&dir)
                .status()?;
            anyhow::ensure!(status.success(), "chown {} failed", dir.display());
        }
        let cluster = Self {
            admin_url: format!(
                "postgres://postgres@localhost/postgres?host={}",
                dir.display()
            ),
            dir,
            bin,
            run_as,
            owned: true,
        };
        cluster.run(
            "initdb",
            &[
                "-D",
                &cluster.data(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )?;
        cluster.spawn_reaper()?;
        cluster.start_server()?;
        Ok(cluster)
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(user).arg("--").arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let out = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// Starts (or restarts) the server.
    pub fn start_server(&self) -> anyhow::Result<()> {
        let opts = format!(
            "-c listen_addresses='' -c unix_socket_directories='{}' -c max_connections=300 -c shared_buffers=64MB",
            self.dir.display()
        );
        let log = self.dir.join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-o",
                &opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
    }

    /// Stops the server at once (like a crash or a failover: no checkpoint, connections cut).
    pub fn stop_server(&self) -> anyhow::Result<()> {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        )
    }

    /// The server's processes: the postmaster (from `postmaster.pid`) and its children.
    fn processes(&self) -> anyhow::Result<Vec<u32>> {
        let pidfile = std::fs::read_to_string(self.dir.join("data").join("postmaster.pid"))?;
        let postmaster: u32 = pidfile
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no pid in postmaster.pid"))?;
        let mut pids = vec![postmaster];
        for entry in std::fs::read_dir("/proc")?.filter_map(|e| e.ok()) {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid …; comm may hold spaces, so split after the last ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(postmaster) {
                pids.push(pid);
            }
        }
        Ok(pids)
    }

    /// Signals the postmaster (which must work) and its children (one that exited in the
    /// meantime is no matter).
    fn signal_all(&self, signal: &str) -> anyhow::Result<()> {
        let pids = self.processes()?;
        for (i, pid) in pids.iter().enumerate() {
            let status = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(pid.to_string())
                .stderr(Stdio::null())
                .status()?;
            anyhow::ensure!(i > 0 || status.success(), "kill -{signal} {pid} failed");
        }
        Ok(())
    }

    /// Freezes the server with SIGSTOP: connections are accepted by the kernel but nothing
    /// answers (like a hung host or a network black hole).
    pub fn freeze(&self) -> anyhow::Result<()> {
        self.signal_all("STOP")
    }

    /// Resumes a frozen server (SIGCONT).
    pub fn thaw(&self) -> anyhow::Result<()> {
        self.signal_all("CONT")
    }

    fn spawn_reaper(&self) -> anyhow::Result<()> {
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = match &self.run_as {
            Some(u) => format!(
                "runuser -u {u} -- {} -D {} -m immediate stop",
                pg_ctl.display(),
                self.data()
            ),
            None => format!("{} -D {} -m immediate stop", pg_ctl.display(), self.data()),
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf '{dir}'",
            pid = std::process::id(),
            dir = self.dir.display()
        );
        Command::new("setsid")
            .arg("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(())
    }

    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    pub fn owned(&self) -> bool {
        self.owned
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates an empty database and returns its URL.
    pub async fn create_database(&self) -> String {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!(
            "callhook_test_{}_{}_{n}",
            std::process::id(),
            crate::helpers::unique_suffix()
        );
        let mut last_err = None;
        for _ in 0..50 {
            match PgConnection::connect(&self.admin_url).await {
                Ok(mut conn) => {
                    let created = sqlx::query(&format!("CREATE DATABASE {name}"))
                        .execute(&mut conn)
                        .await;
                    let _ = conn.close().await;
                    if let Err(e) = created {
                        panic!("CREATE DATABASE {name}: {e}");
                    }
                    return self.database_url(&name);
                }
                Err(e) => {
                    last_err = Some(e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        panic!("cannot connect to the test cluster: {last_err:?}");
    }

    pub fn database_url(&self, name: &str) -> String {
        match self.admin_url.split_once('?') {
            Some((base, q)) => format!(
                "{}/{name}?{q}",
                base.rsplit_once('/').map_or(base, |(b, _)| b)
            ),
            None => format!(
                "{}/{name}",
                self.admin_url
                    .rsplit_once('/')
                    .map_or(self.admin_url.as_str(), |(b, _)| b)
            ),
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.owned {
            // A frozen server would not act on the stop signal.
            let _ = self.thaw();
            let _ = self.stop_server();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
