//! The wire: one generated HTTP request ([`Delivery`]), the query strings of the call
//! callback families, and the bodies as Tencent lays them out (fields in the documented
//! order). Only the renderer fills these.

use serde::Serialize;

use crate::protocol::Family;

/// One HTTP request Tencent's sender would make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub family: Family,
    /// The command (`call_end`, `caller_start_call`, `Call.CallbackAfterEndCall`, …).
    pub command: &'static str,
    /// When the sender would send it (Unix ms); deliveries are sent in this order.
    pub at: i64,
    /// Tencent's query parameters, encoded, without `?`.
    pub query: String,
    pub body: String,
    /// The `Content-Type` header, if any: none for the status and event families
    /// (Tencent's example request has none), JSON for v4.
    pub content_type: Option<&'static str>,
}

/// The query string of the status and event families.
pub fn v1_query(sdkappid: i64, command: &str, ip: &str, platform: &str) -> String {
    format!(
        "sdkappid={sdkappid}&command={command}&contenttype=json&clientip={ip}&optplatform={platform}"
    )
}

/// The query string of the v4 family.
pub fn v4_query(sdkappid: i64, command: &str, ip: &str, platform: &str) -> String {
    format!(
        "SdkAppid={sdkappid}&CallbackCommand={command}&contenttype=json&ClientIP={ip}&OptPlatform={platform}"
    )
}

/// The status/event body, fields in the documented order.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct V1Wire<'a> {
    pub(super) user_id: &'a str,
    pub(super) room_id: &'a str,
    pub(super) total_num: usize,
    pub(super) media_type: &'static str,
    pub(super) call_type: &'static str,
    pub(super) call_id: &'a str,
    pub(super) role: &'static str,
    pub(super) call_result: &'static str,
    pub(super) event_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) start_call_ts: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) accept_ts: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) end_ts: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) event: Option<&'a str>,
}

#[derive(Serialize)]
pub(super) struct V4User<'a> {
    #[serde(rename = "User_Account")]
    pub(super) user_account: &'a str,
    #[serde(rename = "Status")]
    pub(super) status: &'static str,
}

#[derive(Serialize)]
pub(super) struct V4Change<'a> {
    #[serde(rename = "User_Account")]
    pub(super) user_account: &'a str,
    #[serde(rename = "ActionType")]
    pub(super) action_type: &'static str,
}

#[derive(Serialize)]
pub(super) struct V4CallInfo<'a> {
    #[serde(rename = "CallId")]
    pub(super) call_id: &'a str,
    #[serde(rename = "CallMediaType")]
    pub(super) media_type: &'static str,
    #[serde(rename = "ChatGroupId")]
    pub(super) chat_group_id: &'a str,
    #[serde(rename = "RoomId")]
    pub(super) room_id: &'a str,
    #[serde(rename = "RoomIdType")]
    pub(super) room_id_type: u8,
}

#[derive(Serialize)]
pub(super) struct V4CallRecord<'a> {
    #[serde(rename = "CallId")]
    pub(super) call_id: &'a str,
    #[serde(rename = "Caller_Account")]
    pub(super) caller_account: &'a str,
    #[serde(rename = "MediaType")]
    pub(super) media_type: &'static str,
    #[serde(rename = "CallType")]
    pub(super) call_type: &'static str,
    #[serde(rename = "StartTime")]
    pub(super) start_time: i64,
    #[serde(rename = "EndTime")]
    pub(super) end_time: i64,
    #[serde(rename = "AcceptTime")]
    pub(super) accept_time: i64,
    #[serde(rename = "CallResult")]
    pub(super) call_result: &'static str,
    #[serde(rename = "CalleeList_Account")]
    pub(super) callee_list_account: Vec<&'a str>,
    #[serde(rename = "RoomId")]
    pub(super) room_id: &'a str,
    #[serde(rename = "RoomIdType")]
    pub(super) room_id_type: u8,
}

#[derive(Serialize)]
pub(super) struct V4Wire<'a> {
    #[serde(rename = "CallbackCommand")]
    pub(super) callback_command: &'static str,
    #[serde(rename = "CallInfo", skip_serializing_if = "Option::is_none")]
    pub(super) call_info: Option<V4CallInfo<'a>>,
    #[serde(rename = "CallRecord", skip_serializing_if = "Option::is_none")]
    pub(super) call_record: Option<V4CallRecord<'a>>,
    #[serde(rename = "CallId", skip_serializing_if = "Option::is_none")]
    pub(super) call_id: Option<&'a str>,
    #[serde(rename = "UserList", skip_serializing_if = "Option::is_none")]
    pub(super) user_list: Option<Vec<V4User<'a>>>,
    #[serde(rename = "ChangedUserList", skip_serializing_if = "Option::is_none")]
    pub(super) changed_user_list: Option<Vec<V4Change<'a>>>,
    #[serde(rename = "EventTime")]
    pub(super) event_time: i64,
}

/// Serialising these plain structs cannot fail.
pub(super) fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}
