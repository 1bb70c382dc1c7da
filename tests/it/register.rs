//! `callhook register` against the fake of Tencent's callback configuration API: the real
//! binary sets the URL (with the app's token) and the v4 callbacks the app takes, and
//! `--check` says how Tencent's configuration differs from this deployment. No database is
//! involved.

use serde_json::{Value, json};

use crate::helpers::{APP, TOKEN};
use crate::reconcile::{KEY, callhook};
use crate::tencent_fake::{FakeApp, FakeTencent};

async fn register(config: &str, args: &[&str]) -> (i32, String, String) {
    let mut all = vec![
        "register".to_owned(),
        "--config".to_owned(),
        config.to_owned(),
    ];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    let env = [("TEST_SECRET_KEY", KEY), ("TEST_TOKEN", TOKEN)];
    callhook(
        all,
        env.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
    .await
}

fn config(dir: &tempfile::TempDir, fake: &FakeTencent, extra: &str) -> String {
    let path = dir.path().join("callhook.toml");
    let text = format!(
        "[[apps]]\nsdkappid = {APP}\nsecret_key_env = \"TEST_SECRET_KEY\"\napi_url = \"{}\"\ntoken_env = \"TEST_TOKEN\"\n{extra}",
        fake.url()
    );
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path.display().to_string()
}

const ALL: [&str; 4] = [
    "Call.CallbackAfterStartCall",
    "Call.CallbackAfterEndCall",
    "Call.CallbackAfterMemberChanged",
    "Call.CallbackAfterRecordChanged",
];

#[tokio::test]
async fn register_sets_the_url_with_its_token_and_check_compares() {
    let fake = FakeTencent::start([(APP, FakeApp::new(KEY))]).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cfg = config(&dir, &fake, "");

    // Nothing configured yet: --check says so, and fails.
    let (code, _, err) = register(&cfg, &["--check"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no callback configured"), "{err}");

    let (code, out, err) = register(&cfg, &["--url", "https://hooks.example.com/"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let url = format!("https://hooks.example.com/?token={TOKEN}");
    assert_eq!(
        fake.callback(APP),
        Some(json!({"Url": url, "CallbackCommandList": ALL}))
    );
    assert!(out.contains("matches this deployment"), "{out}");
    assert!(
        !out.contains(TOKEN) && !err.contains(TOKEN) && !out.contains(KEY),
        "{out}{err}"
    );

    let (code, out, _) = register(&cfg, &["--check", "--url", "https://hooks.example.com/"]).await;
    assert_eq!(code, 0, "{out}");

    // Someone changed it in the console: another URL without the token, a callback fewer.
    fake.set_callback(
        APP,
        Some(json!({"Url": "https://old.example.com/cb", "CallbackCommandList": &ALL[..2]})),
    );
    let (code, out, err) =
        register(&cfg, &["--check", "--url", "https://hooks.example.com/"]).await;
    assert_eq!(code, 1);
    assert!(out.contains("Tencent posts to https://old.example.com/cb, not to https://hooks.example.com/?token=REDACTED"), "{out}");
    assert!(out.contains("carries no token"), "{out}");
    assert!(
        out.contains("does not send Call.CallbackAfterMemberChanged"),
        "{out}"
    );
    assert!(
        out.contains("does not send Call.CallbackAfterRecordChanged"),
        "{out}"
    );
    assert!(
        err.contains("differs from this deployment (4 differences"),
        "{err}"
    );
    let requests = fake.seen();
    assert!(requests.iter().all(|s| s.api.starts_with("call_config/")));
}

#[tokio::test]
async fn an_app_with_a_command_list_registers_what_it_takes() {
    let fake = FakeTencent::start([(APP, FakeApp::new(KEY))]).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cfg = config(
        &dir,
        &fake,
        "commands = [\"call_end\", \"Call.CallbackAfterEndCall\"]\n",
    );
    let (code, out, err) = register(&cfg, &["--url", "https://h.example/"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let got = fake.callback(APP).unwrap_or(Value::Null);
    assert_eq!(
        got["CallbackCommandList"],
        json!(["Call.CallbackAfterEndCall"])
    );
    fake.set_callback(
        APP,
        Some(json!({"Url": got["Url"], "CallbackCommandList": &ALL[..2]})),
    );
    let (code, out, _) = register(&cfg, &["--check"]).await;
    assert_eq!(code, 1);
    assert!(
        out.contains("Tencent sends Call.CallbackAfterStartCall, which this deployment refuses"),
        "{out}"
    );
}

#[tokio::test]
async fn a_refused_key_is_named() {
    let fake = FakeTencent::start([(APP, FakeApp::new("another-key"))]).await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cfg = config(&dir, &fake, "");
    let (code, _, err) = register(&cfg, &["--url", "https://h.example/"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("70003") && err.contains("secret key"), "{err}");
    assert_eq!(fake.callback(APP), None);
}
