//! callhook: a durable receiver for Tencent TRTC / TUICallKit call callbacks.
pub mod protocol;
