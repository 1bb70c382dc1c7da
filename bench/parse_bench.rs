//! The protocol module's cost per delivery: `parse_delivery` on a status body, and its
//! parts (splitting the body into fields, the canonical digest, the scans), best of five
//! rounds of 300,000. `cargo run --release --example parse_bench`; see docs/src/benchmarks.md.

use callhook::protocol::{Context, Kind, parse_delivery};
fn main() {
    let body = br#"{"UserId":"user_1712","RoomId":"79328096","TotalNum":2,"MediaType":"video","CallType":"single","CallId":"53d0ad3a-7a52-4edb-841d-b64b1de5a81b","Role":"caller","CallResult":"normal_end","EventTime":1704813610,"StartCallTs":1704813600,"AcceptTs":1704813605,"EndTs":1704813610}"#;
    let ctx = Context {
        sdkappid: 1400000001,
        command: "call_end",
        client_ip: Some("127.0.0.1"),
        opt_platform: Some("iOS"),
        remote_addr: Some("127.0.0.1"),
        received_at: 1_764_000_000_000,
    };
    let n = 300_000;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let mut k = 0u8;
        for _ in 0..n {
            let rows = parse_delivery(Kind::Status, false, &ctx, body).unwrap_or_default();
            k ^= rows[0].dedupe_key[0];
        }
        let ns = t.elapsed().as_nanos() as f64 / n as f64;
        best = best.min(ns);
        std::hint::black_box(k);
    }
    println!("parse_delivery: {best:.0} ns per status body (best of 5)");
    let text = std::str::from_utf8(body).unwrap_or_default();
    let time = |name: &str, f: &dyn Fn() -> usize| {
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = std::time::Instant::now();
            let mut k = 0usize;
            for _ in 0..n {
                k ^= f();
            }
            best = best.min(t.elapsed().as_nanos() as f64 / n as f64);
            std::hint::black_box(k);
        }
        println!("{name}: {best:.0} ns");
    };
    time("fields", &|| {
        callhook::protocol::Fields::parse(text)
            .map(|f| f.has("UserId") as usize)
            .unwrap_or(0)
    });
    time("digest", &|| {
        callhook::protocol::canonical::digest(text)
            .map(|d| d[0] as usize)
            .unwrap_or(0)
    });
    let f = callhook::protocol::Fields::parse(text).unwrap_or_default();
    time("digest_members", &|| {
        callhook::protocol::canonical::digest_members(f.members())
            .map(|d| d[0] as usize)
            .unwrap_or(0)
    });
    time("sha256 of body", &|| {
        use sha2::Digest;
        sha2::Sha256::digest(text.as_bytes())[0] as usize
    });
    time("depth", &|| callhook::protocol::scan::depth(text));
    time("trouble", &|| {
        callhook::protocol::scan::postgres_json_trouble(text).is_some() as usize
    });
    time("serde Value", &|| {
        serde_json::from_str::<serde_json::Value>(text)
            .map(|v| v.is_object() as usize)
            .unwrap_or(0)
    });
}
