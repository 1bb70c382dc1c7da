//! Migrations carry existing databases forward: a database with events stored by the
//! version before the refusal policy (jsonb payloads on PostgreSQL, no `members`, no
//! `notes`, rejected deliveries without keys) is migrated, and its rows, its v4 accounts
//! and the views come through.

use std::path::Path;

use callhook::store::Store;
use serde_json::Value;

use crate::both_backends;
use crate::helpers::*;

/// Applies the migrations of `dir` up to `version`, as an older callhook would have.
pub(crate) async fn migrate_to(store: &Store, dir: &str, version: i64) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut m = sqlx::migrate::Migrator::new(path)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    m.migrations = m
        .migrations
        .iter()
        .filter(|mig| mig.version <= version)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    let result = match store {
        Store::Postgres(s) => m.run(s.pool()).await,
        Store::Sqlite(s) => m.run(s.pool()).await,
    };
    result.unwrap_or_else(|e| panic!("migrating to {version}: {e}"));
}

async fn exec(store: &Store, sql: &str) {
    match store {
        Store::Postgres(s) => sqlx::query(sql).execute(s.pool()).await.map(|_| ()),
        Store::Sqlite(s) => sqlx::query(sql).execute(s.pool()).await.map(|_| ()),
    }
    .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

const OLD_V4_END: &str = r#"{"CallbackCommand":"Call.CallbackAfterEndCall","CallRecord":{"CallId":"old-1","Caller_Account":"alice","CalleeList_Account":["alice",10086,"bob"],"CallResult":"NormalEnd","StartTime":1704870000,"AcceptTime":1704870004,"EndTime":1704870187},"EventTime":1704870187456}"#;
const OLD_V4_START: &str = r#"{"CallInfo":{"CallId":"old-1"},"UserList":[{"User_Account":"alice","Status":"Calling"},{"User_Account":"carol"}],"EventTime":1704870000000}"#;

both_backends! {
    async fn an_older_database_is_carried_forward(backend: Backend) {
        let db = TestDb::new(backend).await;
        let store = Store::connect(&callhook::config::DatabaseSettings::new(&db.url))
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        let (dir, before, ts) = match backend {
            Backend::Postgres => ("migrations/postgres", 4, "'2024-01-10T07:03:07.456Z'::timestamptz"),
            Backend::Sqlite => ("migrations/sqlite", 2, "'2024-01-10T07:03:07.456Z'"),
        };
        migrate_to(&store, dir, before).await;
        let payload = |p: &str| match backend {
            Backend::Postgres => format!("'{p}'::jsonb"),
            Backend::Sqlite => format!("'{p}'"),
        };
        let key = |k: u8| match backend {
            Backend::Postgres => format!("'\\x{k:032x}'::bytea"),
            Backend::Sqlite => format!("x'{k:032x}'"),
        };
        for (k, body, user, result) in [(1, OLD_V4_END, "alice", "'normal_end'"), (2, OLD_V4_START, "alice", "NULL")] {
            exec(&store, &format!(
                "INSERT INTO call_events (sdkappid, family, command, call_id, user_id, role, call_result, \
                 event_time, payload, deliveries, received_at, last_delivery_at, dedupe_key) VALUES \
                 ({APP}, 'v4', 'Call.Callback', 'old-1', '{user}', 'caller', {result}, {ts}, {}, 2, {ts}, {ts}, {})",
                payload(body), key(k)
            )).await;
        }
        exec(&store, &format!(
            "INSERT INTO rejected_deliveries (received_at, sdkappid, command, query, body, error_code, reason) \
             VALUES ({ts}, {APP}, 'call_end', 'sdkappid={APP}', '{{broken', 71001, 'body is not JSON')"
        )).await;

        store.migrate(std::time::Duration::from_secs(60)).await.unwrap_or_else(|e| panic!("{e:#}"));

        let rows = read_events(&store).await;
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].deliveries, 2, "rows keep their counts");
        let end: Value = serde_json::from_str(OLD_V4_END).unwrap_or_default();
        assert_eq!(rows[0].payload, end, "the payload keeps its content");
        let sorted = |m: &Option<Value>| {
            let mut v: Vec<String> = m.as_ref().and_then(Value::as_array).into_iter().flatten()
                .filter_map(|a| a.as_str().map(str::to_owned)).collect();
            v.sort();
            v
        };
        assert_eq!(sorted(&rows[0].members), ["10086", "alice", "bob"], "the accounts of old v4 rows");
        assert_eq!(sorted(&rows[1].members), ["alice", "carol"]);
        assert_eq!(rows[0].notes, None);
        let rejected = read_rejected(&store).await;
        assert_eq!(rejected.len(), 1);
        assert_eq!((rejected[0].deliveries, rejected[0].last_delivery_at), (1, rejected[0].received_at));
        let callees = match &store {
            Store::Postgres(s) => sqlx::query_scalar::<_, String>("SELECT array_to_string(callees, ',') FROM calls")
                .fetch_one(s.pool()).await,
            Store::Sqlite(s) => sqlx::query_scalar::<_, String>("SELECT callees FROM calls").fetch_one(s.pool()).await,
        }
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(callees, "10086,bob,carol", "the views read the carried-over accounts");

        // New deliveries go in beside the old rows, and a repeat of a refused one is counted.
        store.close().await;
        let app = TestApp::spawn_on(db.share(), |_| {}).await;
        let (status, _) = app.post(&format!("sdkappid={APP}&command=call_end"), "{broken").await;
        assert_eq!(status, 400);
        app.post(&format!("sdkappid={APP}&command=call_end"), "{broken").await;
        let rejected = app.rejected().await;
        assert_eq!(rejected.len(), 2, "the old row has no key; the new one counts its retries");
        assert_eq!(rejected[1].deliveries, 2);
        let (status, _) = app.post_status("call_end", &status_body("new-1", "u", "caller", "cancel")).await;
        assert_eq!(status, 200);
        assert_eq!(app.events().await.len(), 3);
    }
}
