//! How a [`Session`] becomes a row and back. The `body` column holds the whole session
//! as JSON text (the core's serde form, which carries the token's hash, never the
//! token) and is the truth; the other columns are copies of the fields that queries
//! filter, sort or lock on, rewritten from the body at every write.

use deadpool_postgres::GenericClient;
use sessiond_core::{Session, SessionId, Timestamp, TokenHash};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::error::{PgResult, PostgresError};
use crate::schema::Sql;
use crate::unreadable::{describe, Unreadable};

/// A timestamp as stored (milliseconds since the epoch; "never" saturates).
pub(crate) fn ts(t: Timestamp) -> i64 {
    i64::try_from(t.as_millis()).unwrap_or(i64::MAX)
}

/// A session id as a `uuid` value.
pub(crate) fn uuid(id: SessionId) -> Uuid {
    Uuid::from_u128(id.as_u128())
}

/// A token hash as stored: its 16 bytes, big-endian.
pub(crate) fn hash_bytes(h: TokenHash) -> Vec<u8> {
    h.0.to_be_bytes().to_vec()
}

/// A `body::text, id` row, decoded.
// One lives for one row; boxing the session would cost an allocation per row.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Decoded {
    /// The session.
    Session(Session),
    /// The body does not decode (already counted and logged); `why` says how.
    Unreadable {
        /// The session whose body it is (from the `id` column).
        id: SessionId,
        /// What is wrong with it, without its content.
        why: String,
    },
}

/// Decodes a `body::text, id` row. An unreadable body is counted and logged (`what`
/// says what becomes of it) and answered as [`Decoded::Unreadable`].
pub(crate) fn decode_row(sql: &Sql, bad: &Unreadable, row: &Row, what: &str) -> PgResult<Decoded> {
    let body: &str = row.try_get(0)?;
    let id: Uuid = row.try_get(1)?;
    let id = SessionId::from_u128(id.as_u128());
    let why = match serde_json::from_str::<Session>(body) {
        Ok(s) if s.id == id => return Ok(Decoded::Session(s)),
        Ok(s) => format!("it holds session {}", s.id),
        Err(e) => describe(&e),
    };
    bad.met(id, &format!("{}.sessions row {id}", sql.schema), &why, what);
    Ok(Decoded::Unreadable { id, why })
}

/// Decodes `body::text, id` rows, leaving out (and reporting as skipped) the ones
/// whose body does not decode.
pub(crate) fn decode_rows(sql: &Sql, bad: &Unreadable, rows: &[Row]) -> PgResult<Vec<Session>> {
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        if let Decoded::Session(s) = decode_row(sql, bad, row, "skipped")? {
            out.push(s);
        }
    }
    Ok(out)
}

/// The column values of one session.
pub(crate) struct Columns {
    id: Uuid,
    token_hash: Vec<u8>,
    app: String,
    user: Option<String>,
    open: bool,
    counts_seat: bool,
    deadline: i64,
    created_at: i64,
    last_activity_at: i64,
    version: i64,
    body: String,
}

impl Columns {
    /// The columns of `s`.
    pub fn of(s: &Session) -> PgResult<Columns> {
        Ok(Columns {
            id: uuid(s.id),
            token_hash: hash_bytes(s.token_hash),
            app: s.app.to_string(),
            user: s.user.as_deref().map(String::from),
            open: s.is_open(),
            counts_seat: s.counts_seat,
            deadline: ts(s.deadline()),
            created_at: ts(s.created_at),
            last_activity_at: ts(s.last_activity_at),
            version: i64::try_from(s.version)
                .map_err(|_| PostgresError::Corrupt(format!("version {} too large", s.version)))?,
            body: s.to_json(),
        })
    }
}

/// Runs a statement whose parameters are every column, in table order.
async fn write_all_columns(c: &impl GenericClient, statement: &str, s: &Session) -> PgResult<()> {
    let v = Columns::of(s)?;
    let stmt = c.prepare_cached(statement).await?;
    c.execute(
        &stmt,
        &[
            &v.id,
            &v.token_hash,
            &v.app,
            &v.user,
            &v.open,
            &v.counts_seat,
            &v.deadline,
            &v.created_at,
            &v.last_activity_at,
            &v.version,
            &v.body,
        ],
    )
    .await?;
    Ok(())
}

/// Inserts a new session.
pub(crate) async fn insert(c: &impl GenericClient, sql: &Sql, s: &Session) -> PgResult<()> {
    write_all_columns(c, &sql.insert, s).await
}

/// Inserts `s`, or overwrites every column of the session with its id (an import).
pub(crate) async fn upsert(c: &impl GenericClient, sql: &Sql, s: &Session) -> PgResult<()> {
    write_all_columns(c, &sql.upsert, s).await
}

/// Writes the new state of one existing session.
pub(crate) async fn update(c: &impl GenericClient, sql: &Sql, s: &Session) -> PgResult<()> {
    let v = Columns::of(s)?;
    let stmt = c.prepare_cached(&sql.update_one).await?;
    c.execute(
        &stmt,
        &[
            &v.id,
            &v.token_hash,
            &v.user,
            &v.open,
            &v.counts_seat,
            &v.deadline,
            &v.last_activity_at,
            &v.version,
            &v.body,
        ],
    )
    .await?;
    Ok(())
}

/// Writes the new states of many existing sessions in one statement.
pub(crate) async fn update_many(
    c: &impl GenericClient,
    sql: &Sql,
    sessions: &[Session],
) -> PgResult<()> {
    match sessions {
        [] => return Ok(()),
        [one] => return update(c, sql, one).await,
        _ => {}
    }
    let cols = sessions
        .iter()
        .map(Columns::of)
        .collect::<PgResult<Vec<_>>>()?;
    let ids: Vec<Uuid> = cols.iter().map(|v| v.id).collect();
    let hashes: Vec<&[u8]> = cols.iter().map(|v| v.token_hash.as_slice()).collect();
    let users: Vec<Option<&str>> = cols.iter().map(|v| v.user.as_deref()).collect();
    let open: Vec<bool> = cols.iter().map(|v| v.open).collect();
    let seats: Vec<bool> = cols.iter().map(|v| v.counts_seat).collect();
    let deadlines: Vec<i64> = cols.iter().map(|v| v.deadline).collect();
    let activity: Vec<i64> = cols.iter().map(|v| v.last_activity_at).collect();
    let versions: Vec<i64> = cols.iter().map(|v| v.version).collect();
    let bodies: Vec<&str> = cols.iter().map(|v| v.body.as_str()).collect();
    let params: [&(dyn ToSql + Sync); 9] = [
        &ids, &hashes, &users, &open, &seats, &deadlines, &activity, &versions, &bodies,
    ];
    let stmt = c.prepare_cached(&sql.update_many).await?;
    c.execute(&stmt, &params).await?;
    Ok(())
}

/// Runs a (cached) prepared statement and returns its rows.
pub(crate) async fn query(
    c: &impl GenericClient,
    text: &str,
    params: &[&(dyn ToSql + Sync)],
) -> PgResult<Vec<Row>> {
    let stmt = c.prepare_cached(text).await?;
    Ok(c.query(&stmt, params).await?)
}

/// Runs a (cached) prepared statement and returns its row, if any.
pub(crate) async fn query_opt(
    c: &impl GenericClient,
    text: &str,
    params: &[&(dyn ToSql + Sync)],
) -> PgResult<Option<Row>> {
    let stmt = c.prepare_cached(text).await?;
    Ok(c.query_opt(&stmt, params).await?)
}

/// Runs a (cached) prepared statement and returns the number of rows it touched.
pub(crate) async fn execute(
    c: &impl GenericClient,
    text: &str,
    params: &[&(dyn ToSql + Sync)],
) -> PgResult<u64> {
    let stmt = c.prepare_cached(text).await?;
    Ok(c.execute(&stmt, params).await?)
}
