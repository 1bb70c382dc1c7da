//! The callback configuration API (`call_config`): the URL Tencent posts TUICallKit's v4
//! callbacks to, and which of them. Setting it overwrites what was there. (Its sibling
//! that deletes the configuration is not used: `callhook register` only sets and reads.)

use serde::Deserialize;

use super::client::{ApiError, Client};

pub const SET: &str = "call_config/set_callback";
pub const GET: &str = "call_config/get_callback";

/// Tencent's code for "no callback is configured" (as we read the documentation).
pub const NOTHING_CONFIGURED: i64 = 999;

/// The v4 call callbacks the configuration API names.
pub const CALLBACK_COMMANDS: [&str; 4] = [
    "Call.CallbackAfterStartCall",
    "Call.CallbackAfterEndCall",
    "Call.CallbackAfterMemberChanged",
    "Call.CallbackAfterRecordChanged",
];

/// A callback configuration: where, and which callbacks.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CallbackConfig {
    #[serde(rename = "Url", default)]
    pub url: String,
    #[serde(rename = "CallbackCommandList", default)]
    pub commands: Vec<String>,
}

/// Sets the app's callback URL and command list (replacing what was configured).
pub async fn set(client: &Client, config: &CallbackConfig) -> Result<(), ApiError> {
    let body = serde_json::json!({ "Url": config.url, "CallbackCommandList": config.commands });
    client.call(SET, &body).await.map(|_| ())
}

/// What Tencent has configured; `None` when nothing is.
pub async fn get(client: &Client) -> Result<Option<CallbackConfig>, ApiError> {
    match client.call(GET, &serde_json::json!({})).await {
        Ok(answer) => match answer.response {
            None => Ok(None),
            Some(raw) => serde_json::from_str(raw.get())
                .map(Some)
                .map_err(|e| ApiError::Answer {
                    api: GET.to_owned(),
                    reason: format!("Response: {e}"),
                }),
        },
        Err(e) if e.code() == Some(NOTHING_CONFIGURED) => Ok(None),
        Err(e) => Err(e),
    }
}
