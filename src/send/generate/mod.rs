//! Generated traffic: realistic calls, deterministic for a seed, and the deliveries
//! Tencent's sender makes for them in each callback family.
//!
//! A [`Call`] is a timeline of [`Step`]s (who did what, when). [`render()`] turns one
//! timeline into the deliveries of each family. All randomness comes from [`Rng`] and only
//! integer arithmetic is used, so a seed gives the same calls on every machine.
//!
//! Proportions (see [`tables`]): 85 % of calls are 1-to-1, 15 % group calls with
//! 2 to 6 callees; 1-to-1 calls end `normal_end` 62 %, `not_answer` 14 %, `reject` 9 %,
//! `cancel` 8 %, `call_busy` 5 %, `interrupt` 2 %; group calls always end `normal_end`
//! (the only result Tencent reports for them), their callees answering, not answering,
//! rejecting or being busy individually. 35 % of calls are video. Calls ring for a few
//! seconds (30 s until `not_answer`) and talk for seconds to an hour.
//!
//! ```text
//! Rng + tables ──► Generator ──► Call (model) ──► render(families) ──► Delivery (wire)
//! ```
//! One concern per file: [`rng`] the random numbers, [`tables`] the proportions and
//! timings, [`model`] the call and its timeline, [`generator`] the stream of calls,
//! [`mod@render`] the replay of a timeline into deliveries, [`wire`] the requests and bodies
//! as sent.

pub mod generator;
pub mod model;
pub mod render;
pub mod rng;
pub mod tables;
#[cfg(test)]
mod tests;
pub mod wire;

pub use generator::Generator;
pub use model::{Act, Call, CallOutcome, Person, Platform, Step};
pub use render::{Families, record_json, render};
pub use rng::{Rng, random_seed};
pub use tables::{GROUP_PERCENT, SINGLE_OUTCOMES, VIDEO_PERCENT};
pub use wire::{Delivery, v1_query, v4_query};
