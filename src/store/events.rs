//! The `events` table: batches of storefront events written in one statement each.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::events::Event;

/// Inserts `events` in one statement; an event whose `event_id` is already stored is skipped,
/// so a retried batch or a storefront's resent event is kept once. Returns the rows written.
pub async fn insert_events(pool: &PgPool, events: &[Event]) -> Result<u64, sqlx::Error> {
    let mut event_ids = Vec::with_capacity(events.len());
    let mut occurred_at = Vec::with_capacity(events.len());
    let mut received_at = Vec::with_capacity(events.len());
    let mut kinds = Vec::with_capacity(events.len());
    let mut request_ids = Vec::with_capacity(events.len());
    let mut item_ids = Vec::with_capacity(events.len());
    let mut shoppers = Vec::with_capacity(events.len());
    let mut sessions = Vec::with_capacity(events.len());
    let mut touchpoints = Vec::with_capacity(events.len());
    let mut variants = Vec::with_capacity(events.len());
    let mut model_versions = Vec::with_capacity(events.len());
    for e in events {
        event_ids.push(e.event_id);
        occurred_at.push(e.occurred_at);
        received_at.push(e.received_at);
        kinds.push(e.kind.as_str());
        request_ids.push(e.request_id);
        item_ids.push(e.item_id.as_str());
        shoppers.push(e.shopper.as_deref());
        sessions.push(e.session.as_deref());
        touchpoints.push(e.touchpoint.map(|t| t.as_str()));
        variants.push(e.variant.as_deref());
        model_versions.push(e.model_version);
    }
    let result = sqlx::query(
        "INSERT INTO events (event_id, occurred_at, kind, request_id, item_id, shopper, session, \
                             touchpoint, variant, model_version, received_at) \
         SELECT * FROM UNNEST($1::uuid[], $2::timestamptz[], $3::text[], $4::uuid[], $5::text[], \
                              $6::text[], $7::text[], $8::text[], $9::text[], $10::bigint[], \
                              $11::timestamptz[]) \
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(&event_ids)
    .bind(&occurred_at)
    .bind(&kinds)
    .bind(&request_ids)
    .bind(&item_ids)
    .bind(&shoppers)
    .bind(&sessions)
    .bind(&touchpoints)
    .bind(&variants)
    .bind(&model_versions)
    .bind(&received_at)
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

/// Deletes every event accepted up to `until` of the shopper whose user key is `shopper` or
/// whose session key is `session` (hex keyed hashes); returns how many were deleted.
pub async fn delete_shopper_events(
    pool: &PgPool,
    shopper: &str,
    session: &str,
    until: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let result = sqlx::query(
        "DELETE FROM events WHERE (shopper = $1 OR session = $2) AND received_at <= $3",
    )
    .bind(shopper)
    .bind(session)
    .bind(until)
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}
