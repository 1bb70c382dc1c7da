//! Integration tests: the real application on real databases (a throwaway PostgreSQL
//! cluster and SQLite files), driven over real sockets. One binary, so the PostgreSQL
//! cluster is started once per run.

// Not every helper is used by every test module.
#[allow(dead_code)]
mod helpers;
#[allow(dead_code)]
mod pg;
#[allow(dead_code)]
mod process;

mod analytics;
mod callback;
mod events;
mod families;
mod forward;
mod healthcheck;
mod journal;
mod loss_paths;
mod migrations;
mod operations;
mod reconcile;
mod register;
mod retention;
mod rollups;
mod room_check;
mod send;
mod simulation;
mod supervision;
#[allow(dead_code)]
mod tencent_fake;
mod trtc;
