//! `callhook register`: tells Tencent, through its callback configuration API, where to post
//! an app's v4 call callbacks and which ones; with `--check`, compares what Tencent has with
//! this deployment and says how it differs. Step one of the deployment guide
//! (docs/src/registering.md).
//!
//! What this deployment expects: the v4 callbacks the app accepts (its `commands` list, or
//! all four), posted to `--url` with the app's token when it has one.

use crate::config::{AppSettings, RegisterJob};
use crate::protocol::query::redact_url;
use crate::tencent::callback_config::{self, CALLBACK_COMMANDS, CallbackConfig};

/// The v4 callbacks an app takes: all four, or those its `commands` list names.
pub fn expected_commands(app: &AppSettings) -> Vec<String> {
    CALLBACK_COMMANDS
        .iter()
        .filter(|c| app.allows(Some(c)))
        .map(|c| (*c).to_owned())
        .collect()
}

/// The URL to register: `url`, with `token=<token>` added when the app has a token and the
/// URL does not carry one.
pub fn registered_url(app: &AppSettings, url: &str) -> String {
    match &app.token {
        Some(token) if token_of(url).is_none() => {
            let sep = if url.contains('?') { '&' } else { '?' };
            let value: String =
                form_urlencoded::byte_serialize(token.expose().as_bytes()).collect();
            format!("{url}{sep}token={value}")
        }
        _ => url.to_owned(),
    }
}

/// The `token` parameter of a URL, decoded.
fn token_of(url: &str) -> Option<String> {
    let (_, query) = url.split_once('?')?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}

/// A URL without its `token` parameter, to compare where two URLs point.
fn without_token(url: &str) -> String {
    match url.split_once('?') {
        None => url.to_owned(),
        Some((base, query)) => {
            let rest: Vec<&str> = query
                .split('&')
                .filter(|p| !p.starts_with("token=") && !p.is_empty())
                .collect();
            if rest.is_empty() {
                base.to_owned()
            } else {
                format!("{base}?{}", rest.join("&"))
            }
        }
    }
}

/// How Tencent's configuration differs from this deployment, one sentence each; empty when
/// it matches.
pub fn differences(app: &AppSettings, url: Option<&str>, tencent: &CallbackConfig) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(url) = url
        && without_token(url) != without_token(&tencent.url)
    {
        out.push(format!(
            "Tencent posts to {}, not to {}",
            redact_url(&tencent.url),
            redact_url(url)
        ));
    }
    if let Some(token) = &app.token {
        match token_of(&tencent.url) {
            None => out.push(
                "the URL Tencent has carries no token, and this app requires one: its callbacks are refused (403); run callhook register --url … to add it".to_owned(),
            ),
            Some(t) if t != token.expose() => out.push(
                "the URL Tencent has carries another token than this app's: its callbacks are refused (403)".to_owned(),
            ),
            Some(_) => {}
        }
    }
    for c in &tencent.commands {
        if !app.allows(Some(c)) {
            out.push(format!(
                "Tencent sends {c}, which this deployment refuses (not in the app's commands list): each is lost after Tencent's retries"
            ));
        }
    }
    for c in expected_commands(app) {
        if !tencent.commands.iter().any(|t| t.eq_ignore_ascii_case(&c)) {
            out.push(format!("Tencent does not send {c}"));
        }
    }
    out
}

/// Prints what Tencent has configured.
fn show(app: &AppSettings, config: &CallbackConfig) {
    println!(
        "app {}: Tencent posts {} to {}",
        app.sdkappid,
        if config.commands.is_empty() {
            "no callback".to_owned()
        } else {
            config.commands.join(", ")
        },
        redact_url(&config.url)
    );
}

pub async fn run(job: RegisterJob) -> anyhow::Result<()> {
    let client = crate::reconcile::client_for(&job.app, job.rate)?;
    let app = &job.app;
    if !job.check {
        let url = job.url.as_deref().unwrap_or_default();
        let config = CallbackConfig {
            url: registered_url(app, url),
            commands: expected_commands(app),
        };
        callback_config::set(&client, &config).await?;
        println!(
            "app {}: registered {} for {}",
            app.sdkappid,
            redact_url(&config.url),
            config.commands.join(", ")
        );
    }
    let Some(tencent) = callback_config::get(&client).await? else {
        anyhow::bail!(
            "Tencent has no callback configured for app {}: run callhook register --url https://<your host>/",
            app.sdkappid
        );
    };
    show(app, &tencent);
    let url = job.url.as_deref().map(|u| registered_url(app, u));
    let diff = differences(app, url.as_deref(), &tencent);
    if diff.is_empty() {
        println!(
            "app {}: Tencent's configuration matches this deployment",
            app.sdkappid
        );
        return Ok(());
    }
    for d in &diff {
        println!("  differs: {d}");
    }
    anyhow::bail!(
        "Tencent's callback configuration for app {} differs from this deployment ({} differences, above)",
        app.sdkappid,
        diff.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn app(token: Option<&str>, commands: Option<&[&str]>) -> AppSettings {
        AppSettings {
            token: token.map(Secret::new),
            commands: commands.map(|c| c.iter().map(|s| s.to_ascii_lowercase()).collect()),
            ..AppSettings::new(1)
        }
    }

    #[test]
    fn the_url_carries_the_token() {
        let a = app(Some("t o"), None);
        assert_eq!(registered_url(&a, "https://h/cb"), "https://h/cb?token=t+o");
        assert_eq!(
            registered_url(&a, "https://h/?x=1"),
            "https://h/?x=1&token=t+o"
        );
        assert_eq!(
            registered_url(&a, "https://h/?token=given"),
            "https://h/?token=given"
        );
        assert_eq!(registered_url(&app(None, None), "https://h/"), "https://h/");
    }

    #[test]
    fn every_difference_is_named() {
        let a = app(
            Some("tok"),
            Some(&["call_end", "Call.CallbackAfterEndCall"]),
        );
        assert_eq!(expected_commands(&a), ["Call.CallbackAfterEndCall"]);
        let tencent = CallbackConfig {
            url: "https://old.example/?token=other".into(),
            commands: vec!["Call.CallbackAfterStartCall".into()],
        };
        let d = differences(&a, Some("https://new.example/?token=tok"), &tencent);
        assert_eq!(d.len(), 4, "{d:?}");
        assert!(
            d[0].contains("https://old.example/") && d[0].contains("token=REDACTED"),
            "{d:?}"
        );
        assert!(d[1].contains("another token"));
        assert!(d[2].contains("Call.CallbackAfterStartCall") && d[2].contains("refuses"));
        assert!(d[3].contains("does not send Call.CallbackAfterEndCall"));
        let same = CallbackConfig {
            url: "https://new.example/?token=tok".into(),
            commands: vec!["Call.CallbackAfterEndCall".into()],
        };
        assert!(differences(&a, Some("https://new.example/"), &same).is_empty());
    }
}
