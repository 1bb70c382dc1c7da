//! callhook: a durable receiver for Tencent TRTC / TUICallKit call callbacks.
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod events;
pub mod health;
pub mod http;
pub mod ingest;
pub mod journal;
pub mod logging;
pub mod metrics;
pub mod protocol;
pub mod store;
pub mod supervisor;

pub use app::shutdown_signal;

/// Now, in milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
pub mod report;
pub mod send;

/// Makes `ring` the TLS crypto provider for outgoing HTTPS (`callhook send`). Call before
/// building an HTTP client; later calls do nothing.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
