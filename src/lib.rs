//! callhook: a durable receiver for Tencent TRTC / TUICallKit call callbacks.
//!
//! A callback flows down through these modules, and no module imports one above it
//! (ARCHITECTURE.md draws the whole picture):
//!
//! | layer | modules | what they do |
//! |---|---|---|
//! | entry | `main.rs`, [`app`] | resolve the command line; build, run and stop the receiver |
//! | HTTP | [`http`], [`auth`], [`quality`] | routes, admission (app, token, `Sign`), the answer envelope, the call-quality metrics |
//! | protocol | [`protocol`], [`webhook`] | pure: query and body parsing into rows, dedupe keys, error codes; Standard Webhooks signatures |
//! | ingest | [`ingest`], [`journal`], [`supervisor`], [`health`] | the write path (`ingest/`: the handle, `queue.rs`, `writer.rs`, `batch.rs`, `handoff.rs` to the journal, `outcome.rs`), the outage journal, task supervision, database health |
//! | forwarding | [`forward`] | the outbox's delivery workers (claim, send, record, schedule), the message body, `callhook forward status` and `retry` |
//! | storage | [`store`] | PostgreSQL and SQLite behind one `Store` (with the forwarding outbox, written with the events); the analytics reads; Tencent's call records and the reconcile runs |
//! | settings | [`config`], [`cli`] | defaults → file → environment → flags, then validation |
//! | analytics | [`rollup`], [`room_check`] | the rollup task of `serve`: folds queued calls into the daily rollups `report` reads; the room check task: TRTC room callbacks without a known call |
//! | tools | [`report`], [`events`], [`send`], [`listen`], [`reconcile`], [`register`] | `callhook report`, `callhook events`, `callhook send`, `callhook listen`, `callhook reconcile` (and its task in `serve`), `callhook register` |
//! | support | [`metrics`], [`logging`], [`faults`], [`text_table`], [`tencent`] | Prometheus metrics, log output, the fault hooks of the randomized fault test, aligned text tables, Tencent's REST APIs (UserSig, client, call records, callback configuration) |
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
// The book's generated pages (docs/src/config-reference.md, cli-reference.md), made and
// checked by its tests.
#[cfg(test)]
mod docs;
pub mod events;
pub mod faults;
pub mod forward;
pub mod health;
pub mod http;
pub mod ingest;
pub mod journal;
pub mod listen;
pub mod logging;
pub mod metrics;
pub mod protocol;
pub mod quality;
pub mod reconcile;
pub mod register;
pub mod report;
pub mod retention;
pub mod rollup;
pub mod room_check;
pub mod send;
pub mod store;
pub mod supervisor;
pub mod tencent;
pub mod text_table;
pub mod webhook;

pub use app::shutdown_signal;

/// Now, in milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Makes `ring` the TLS crypto provider for outgoing HTTPS (`callhook send`). Call before
/// building an HTTP client; later calls do nothing.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
