//! `callhook healthcheck`, the container image's HEALTHCHECK: it probes the address
//! `serve` was configured to listen on, from the same settings.

use crate::helpers::*;
use crate::process::{Server, free_port};

fn healthcheck(args: &[&str], envs: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_callhook"));
    cmd.arg("healthcheck")
        .args(args)
        .env_remove("CALLHOOK_HEALTHCHECK_URL")
        .env_remove("CALLHOOK_LISTEN")
        .env_remove("CALLHOOK_CONFIG");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running callhook: {e}"));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_probes_the_configured_listen_address() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = Server::start(
        &["--database-url", &db.url, "--sdkappid", &APP.to_string()],
        &[],
    )
    .await;
    let port = server.addr.port();
    let wildcard = format!("0.0.0.0:{port}");
    let other = format!("127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = dir.path().join("config.toml");
    std::fs::write(&config, format!("listen = \"{wildcard}\"\n")).unwrap_or_else(|e| panic!("{e}"));
    let config = config.display().to_string();
    let readyz = format!("http://127.0.0.1:{port}/readyz");

    // (arguments, environment, healthy?). The server is another process, so running the
    // probes synchronously here blocks nothing it needs.
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, bool);
    let cases: Vec<Case<'_>> = vec![
        // The container's way: CALLHOOK_LISTEN on the wildcard address, probed on loopback.
        (vec![], vec![("CALLHOOK_LISTEN", &wildcard)], true),
        (vec!["--listen", &wildcard], vec![], true),
        (vec!["--config", &config], vec![], true),
        (vec![], vec![("CALLHOOK_CONFIG", &config)], true),
        // The flag or environment over the file, as for serve.
        (
            vec!["--config", &config],
            vec![("CALLHOOK_LISTEN", &other)],
            false,
        ),
        // An explicit URL over everything.
        (
            vec!["--listen", &other],
            vec![("CALLHOOK_HEALTHCHECK_URL", &readyz)],
            true,
        ),
        // A port nothing listens on: unhealthy, one line on stderr.
        (vec!["--listen", &other], vec![], false),
    ];
    for (args, envs, healthy) in cases {
        let (code, stderr) = healthcheck(&args, &envs);
        if healthy {
            assert_eq!(code, Some(0), "{args:?} {envs:?}: {stderr}");
        } else {
            assert_eq!(code, Some(1), "{args:?} {envs:?}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
        }
    }

    // A listen address serve would refuse: a configuration error, exit 2.
    let (code, stderr) = healthcheck(&["--listen", "localhost:80"], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("listen address"), "{stderr}");
}
