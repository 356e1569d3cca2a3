//! Erasures announced to every replica: a row in `shopper_erasures` and a NOTIFY on
//! [`ERASURE_CHANNEL`]; replicas LISTEN and read the rows after the last one they applied.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgListener;
use sqlx::PgPool;

/// The channel erasures are announced on.
pub const ERASURE_CHANNEL: &str = "tandem_shopper_erased";

/// How long an announced erasure is kept for a replica that was disconnected to catch up.
const KEPT_FOR: &str = "1 day";

/// One announced erasure: the user and session keys (hex) of one id.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Erasure {
    /// Its place in the log.
    pub id: i64,
    /// The id's key as a user.
    pub shopper: String,
    /// The id's key as a session.
    pub session: String,
    /// When it was erased: events accepted until then go, later ones stay.
    pub erased_at: DateTime<Utc>,
}

/// Records an erasure (its `id` is ignored: the log gives one) and tells every replica
/// (NOTIFY, delivered on commit); prunes the erasures older than a day.
pub async fn announce_erasure(pool: &PgPool, erasure: &Erasure) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO shopper_erasures (shopper, session, erased_at) VALUES ($1, $2, $3) \
         RETURNING id",
    )
    .bind(&erasure.shopper)
    .bind(&erasure.session)
    .bind(erasure.erased_at)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(&format!(
        "DELETE FROM shopper_erasures WHERE erased_at < now() - interval '{KEPT_FOR}'"
    ))
    .execute(&mut *tx)
    .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(ERASURE_CHANNEL)
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// The erasures after `after`, in order.
pub async fn erasures_after(pool: &PgPool, after: i64) -> Result<Vec<Erasure>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, shopper, session, erased_at FROM shopper_erasures WHERE id > $1 ORDER BY id",
    )
    .bind(after)
    .fetch_all(pool)
    .await
}

/// The newest erasure's place (0 when none): where a replica that starts now begins.
pub async fn last_erasure(pool: &PgPool) -> Result<i64, sqlx::Error> {
    let (last,): (Option<i64>,) = sqlx::query_as("SELECT max(id) FROM shopper_erasures")
        .fetch_one(pool)
        .await?;
    Ok(last.unwrap_or(0))
}

/// A connection that hears erasures (LISTEN on [`ERASURE_CHANNEL`]).
pub struct ErasureListener(PgListener);

impl ErasureListener {
    /// Connects and listens.
    pub async fn connect(pool: &PgPool) -> Result<Self, sqlx::Error> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(ERASURE_CHANNEL).await?;
        Ok(Self(listener))
    }

    /// Waits for the next announcement, or a reconnection (after which announcements may have
    /// been missed); either way the caller reads the log.
    pub async fn next(&mut self) -> Result<(), sqlx::Error> {
        self.0.try_recv().await.map(|_| ())
    }
}
