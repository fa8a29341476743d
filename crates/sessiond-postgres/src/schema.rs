//! The database schema: the name check, the migrations (applied on connect, once, under
//! an advisory lock so several nodes can start together) and the text of every
//! statement the store runs, with the schema name filled in once at connect.

use crate::error::{PgResult, PostgresError};

/// Longest schema name accepted (leaves room for the `_events` channel suffix within
/// PostgreSQL's 63-byte identifiers).
pub(crate) const MAX_SCHEMA_LEN: usize = 48;

/// Checks a schema name: lowercase ASCII letters, digits and `_`, not starting with a
/// digit. Keeping to unquoted-identifier characters means the name reads the same in
/// `psql` as in the store, and can be embedded in SQL text safely.
pub(crate) fn check_schema(name: &str) -> PgResult<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_SCHEMA_LEN
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && !name.starts_with("pg_")
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(PostgresError::BadSchema(name.to_string()))
    }
}

/// The migrations, in order; each runs once per schema, in its own transaction.
/// `{s}` is the quoted schema name. Never edit a released migration: add one.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        r#"
CREATE TABLE {s}.apps (
    app text PRIMARY KEY
);
CREATE TABLE {s}.sessions (
    id uuid PRIMARY KEY,
    token_hash bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) = 16),
    app text NOT NULL,
    user_name text,
    open boolean NOT NULL,
    counts_seat boolean NOT NULL,
    deadline bigint NOT NULL,
    created_at bigint NOT NULL,
    last_activity_at bigint NOT NULL,
    version bigint NOT NULL,
    body json NOT NULL
);
CREATE INDEX sessions_app_open_idx ON {s}.sessions (app, open);
CREATE INDEX sessions_app_user_idx ON {s}.sessions (app, user_name);
CREATE INDEX sessions_deadline_idx ON {s}.sessions (open, deadline);
"#,
    ),
    (
        2,
        r#"
CREATE TABLE {s}.deliveries (
    id uuid PRIMARY KEY,
    app text NOT NULL,
    dead boolean NOT NULL,
    due bigint NOT NULL,
    body json NOT NULL
);
CREATE INDEX deliveries_due_idx ON {s}.deliveries (dead, due);
CREATE INDEX deliveries_app_idx ON {s}.deliveries (app, id);
"#,
    ),
];

/// Applies the migrations that `schema` lacks. Safe to run from many nodes at once: a
/// transaction-scoped advisory lock keyed by the schema name serialises them, and the
/// `schema_migrations` table records what ran.
pub(crate) async fn migrate(client: &mut tokio_postgres::Client, schema: &str) -> PgResult<()> {
    let s = quoted(schema);
    let tx = client.transaction().await?;
    // Migrations may wait for another node's; give them longer than one operation.
    tx.batch_execute("SET LOCAL statement_timeout = '60s'")
        .await?;
    // 0x73657373 is "sess": the advisory-lock class of sessiond.
    tx.execute(
        "SELECT pg_advisory_xact_lock(1936028531, hashtext($1))",
        &[&schema],
    )
    .await?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {s};
         CREATE TABLE IF NOT EXISTS {s}.schema_migrations (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         );"
    ))
    .await?;
    let done: Vec<i32> = tx
        .query(&format!("SELECT version FROM {s}.schema_migrations"), &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if let Some(found) = done.iter().copied().filter(|v| *v > known).max() {
        tx.rollback().await?;
        return Err(PostgresError::NewerSchema {
            schema: schema.to_string(),
            found: u32::try_from(found).unwrap_or(0),
            known: u32::try_from(known).unwrap_or(0),
        });
    }
    for (version, text) in MIGRATIONS {
        if done.contains(version) {
            continue;
        }
        tx.batch_execute(&text.replace("{s}", &s)).await?;
        tx.execute(
            &format!("INSERT INTO {s}.schema_migrations (version) VALUES ($1)"),
            &[version],
        )
        .await?;
        tracing::info!(schema, version, "applied PostgreSQL store migration");
    }
    tx.commit().await?;
    Ok(())
}

/// `name` as a quoted identifier (names are checked, so no quote can be inside).
pub(crate) fn quoted(name: &str) -> String {
    format!("\"{name}\"")
}

/// The text of every fixed statement, with the schema filled in.
#[derive(Debug)]
pub(crate) struct Sql {
    /// The quoted schema name, for statements built per call (lists).
    pub schema: String,
    pub insert: String,
    pub upsert: String,
    pub update_one: String,
    pub update_many: String,
    pub get_by_id: String,
    pub get_by_token: String,
    pub lock_by_id: String,
    pub lock_by_token: String,
    pub delete_one: String,
    pub app_of: String,
    pub lock_app_of: String,
    pub lock_app: String,
    pub insert_app: String,
    pub seats_used: String,
    pub due_in_app: String,
    pub user_holders: String,
    pub take_over_holder: String,
    pub idlest: String,
    pub lock_many: String,
    pub lock_open_except: String,
    pub counts: String,
    pub due_open: String,
    pub purge: String,
    pub hook_insert: String,
    pub hook_claim: String,
    pub hook_lock: String,
    pub hook_put: String,
    pub hook_delete: String,
    pub hook_list: String,
    pub hook_tally: String,
    pub hook_forget_dead: String,
    /// The webhook routes every write derives its deliveries with (set by the server;
    /// kept here because every operation is given the statements).
    pub routes: sessiond_core::hooks::HookRoutes,
}

impl Sql {
    /// The statements for `schema` (already checked).
    pub(crate) fn new(schema: &str) -> Sql {
        let s = quoted(schema);
        let t = format!("{s}.sessions");
        let d = format!("{s}.deliveries");
        // Rows that become sessions: the body, and the id to name one that does not
        // decode.
        let body = "SELECT body::text, id";
        Sql {
            insert: format!(
                "INSERT INTO {t} (id, token_hash, app, user_name, open, counts_seat, deadline, \
                 created_at, last_activity_at, version, body) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::text::json)"
            ),
            upsert: format!(
                "INSERT INTO {t} (id, token_hash, app, user_name, open, counts_seat, deadline, \
                 created_at, last_activity_at, version, body) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::text::json) \
                 ON CONFLICT (id) DO UPDATE SET token_hash = EXCLUDED.token_hash, \
                 app = EXCLUDED.app, user_name = EXCLUDED.user_name, open = EXCLUDED.open, \
                 counts_seat = EXCLUDED.counts_seat, deadline = EXCLUDED.deadline, \
                 created_at = EXCLUDED.created_at, last_activity_at = EXCLUDED.last_activity_at, \
                 version = EXCLUDED.version, body = EXCLUDED.body"
            ),
            update_one: format!(
                "UPDATE {t} SET token_hash = $2, user_name = $3, open = $4, counts_seat = $5, \
                 deadline = $6, last_activity_at = $7, version = $8, body = $9::text::json \
                 WHERE id = $1"
            ),
            update_many: format!(
                "UPDATE {t} AS s SET token_hash = u.token_hash, user_name = u.user_name, \
                 open = u.open, counts_seat = u.counts_seat, deadline = u.deadline, \
                 last_activity_at = u.last_activity_at, version = u.version, body = u.body::json \
                 FROM unnest($1::uuid[], $2::bytea[], $3::text[], $4::bool[], $5::bool[], \
                 $6::int8[], $7::int8[], $8::int8[], $9::text[]) \
                 AS u(id, token_hash, user_name, open, counts_seat, deadline, last_activity_at, \
                 version, body) WHERE s.id = u.id"
            ),
            get_by_id: format!("{body} FROM {t} WHERE id = $1"),
            get_by_token: format!("{body} FROM {t} WHERE token_hash = $1"),
            lock_by_id: format!("{body} FROM {t} WHERE id = $1 FOR UPDATE"),
            lock_by_token: format!("{body} FROM {t} WHERE token_hash = $1 FOR UPDATE"),
            delete_one: format!("DELETE FROM {t} WHERE id = $1"),
            app_of: format!("SELECT app FROM {t} WHERE id = $1"),
            lock_app_of: format!("SELECT app FROM {t} WHERE id = $1 FOR UPDATE"),
            lock_app: format!("SELECT 1 FROM {s}.apps WHERE app = $1 FOR UPDATE"),
            insert_app: format!("INSERT INTO {s}.apps (app) VALUES ($1) ON CONFLICT DO NOTHING"),
            seats_used: format!("SELECT count(*) FROM {t} WHERE app = $1 AND open AND counts_seat"),
            // At most 256 at a time, as in Redis: the sweeper closes the rest.
            due_in_app: format!(
                "{body} FROM {t} WHERE app = $1 AND open AND deadline < $2 \
                 ORDER BY deadline, id LIMIT 256 FOR UPDATE"
            ),
            user_holders: format!("{body} FROM {t} WHERE app = $1 AND user_name = $2 AND open"),
            take_over_holder: format!("{body} FROM {t} WHERE id = $1 AND app = $2 AND open"),
            idlest: format!(
                "{body} FROM {t} WHERE app = $1 AND open AND counts_seat \
                 ORDER BY last_activity_at, id LIMIT $2"
            ),
            lock_many: format!(
                "{body} FROM {t} WHERE id = ANY($1) AND open ORDER BY id FOR UPDATE"
            ),
            lock_open_except: format!(
                "{body} FROM {t} WHERE app = $1 AND open AND NOT (id = ANY($2)) \
                 ORDER BY id FOR UPDATE"
            ),
            counts: format!(
                "SELECT count(*), count(*) FILTER (WHERE counts_seat) FROM {t} \
                 WHERE app = $1 AND open"
            ),
            due_open: format!(
                "{body} FROM {t} WHERE open AND deadline < $1 AND NOT (id = ANY($3)) \
                 ORDER BY deadline LIMIT $2 FOR UPDATE SKIP LOCKED"
            ),
            purge: format!(
                "DELETE FROM {t} WHERE id IN (SELECT id FROM {t} WHERE NOT open \
                 AND deadline < $1 ORDER BY deadline LIMIT $2 FOR UPDATE SKIP LOCKED)"
            ),
            hook_insert: format!(
                "INSERT INTO {d} (id, app, dead, due, body) SELECT u.id, u.app, u.dead, u.due, \
                 u.body::json FROM unnest($1::uuid[], $2::text[], $3::bool[], $4::int8[], \
                 $5::text[]) AS u(id, app, dead, due, body)"
            ),
            hook_claim: format!(
                "UPDATE {d} SET due = $2, \
                 body = jsonb_set(body::jsonb, '{{due}}', to_jsonb($2::int8))::json \
                 WHERE id IN (SELECT id FROM {d} WHERE NOT dead AND due <= $1 \
                 ORDER BY due, id LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING body::text"
            ),
            hook_lock: format!("SELECT body::text FROM {d} WHERE id = $1 FOR UPDATE"),
            hook_put: format!(
                "UPDATE {d} SET dead = $2, due = $3, body = $4::text::json WHERE id = $1"
            ),
            hook_delete: format!("DELETE FROM {d} WHERE id = $1"),
            hook_list: format!(
                "SELECT body::text FROM {d} WHERE ($1::text IS NULL OR app = $1) \
                 AND ($2::bool IS NULL OR dead = $2) ORDER BY id LIMIT $3"
            ),
            hook_tally: format!(
                "SELECT count(*) FILTER (WHERE NOT dead), count(*) FILTER (WHERE dead) FROM {d}"
            ),
            hook_forget_dead: format!(
                "DELETE FROM {d} WHERE id IN (SELECT id FROM {d} WHERE dead AND id < $1 \
                 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)"
            ),
            routes: Default::default(),
            schema: s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers() {
        for good in ["sessiond", "sessiond_test_0a1b", "_x", "a1"] {
            assert!(check_schema(good).is_ok(), "{good}");
        }
        let long = "a".repeat(MAX_SCHEMA_LEN + 1);
        for bad in [
            "",
            "1abc",
            "Sessiond",
            "a-b",
            "a\"b",
            "a b",
            "pg_temp",
            long.as_str(),
        ] {
            assert!(check_schema(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn statements_name_the_schema() {
        let sql = Sql::new("abc");
        assert!(sql.insert.contains("\"abc\".sessions"));
        assert!(sql.lock_app.contains("\"abc\".apps"));
        assert!(MIGRATIONS[0].1.contains("{s}.sessions"));
    }
}
