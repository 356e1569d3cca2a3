//! Storefront events (`POST /events`): what a shop reports back about the lists it showed
//! (impressions, clicks, add-to-carts, purchases, "not interested"), validated here and
//! persisted by the batched [`EventWriter`].
//!
//! Shopper and session ids are pseudonymised (keyed hash) before an event leaves this module;
//! with an opt-out (`DNT: 1`, `Sec-GPC: 1`) they are dropped, so the event stays useful for
//! counting without saying anything about the shopper.

mod writer;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::capping::{Pseudonymizer, ShopperKey};
use crate::domain::Touchpoint;

pub use writer::{EventSettings, EventWriter, SubmitError};

/// What happened to a recommended item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The item was shown.
    Impression,
    /// The shopper clicked it.
    Click,
    /// The shopper put it in the cart.
    AddToCart,
    /// The shopper bought it.
    Purchase,
    /// The shopper said "not interested".
    Dismiss,
}

impl EventKind {
    /// Every kind, in a stable order (metric labels).
    pub const ALL: [EventKind; 5] = [
        EventKind::Impression,
        EventKind::Click,
        EventKind::AddToCart,
        EventKind::Purchase,
        EventKind::Dismiss,
    ];

    /// The wire and database name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Impression => "impression",
            EventKind::Click => "click",
            EventKind::AddToCart => "add_to_cart",
            EventKind::Purchase => "purchase",
            EventKind::Dismiss => "dismiss",
        }
    }
}

/// One event as the storefront sends it (all fields but `kind` and `item_id` optional).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventInput {
    kind: EventKind,
    item_id: String,
    #[serde(default)]
    event_id: Option<Uuid>,
    #[serde(default)]
    request_id: Option<Uuid>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    timestamp: Option<DateTime<Utc>>,
    #[serde(default)]
    touchpoint: Option<Touchpoint>,
    #[serde(default)]
    variant: Option<String>,
    #[serde(default)]
    model_version: Option<i64>,
}

/// A validated, pseudonymised event, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Idempotency key: the storefront's, or one given on arrival; stored once.
    pub event_id: Uuid,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// When this service accepted it: an erasure removes the events accepted before it.
    pub received_at: DateTime<Utc>,
    /// What happened.
    pub kind: EventKind,
    /// The recommendation response it follows, if any.
    pub request_id: Option<Uuid>,
    /// The item.
    pub item_id: String,
    /// Keyed hash of the user id (hex).
    pub shopper: Option<String>,
    /// Keyed hash of the session id (hex).
    pub session: Option<String>,
    /// Where the item was shown.
    pub touchpoint: Option<Touchpoint>,
    /// Experiment variant the storefront was shown.
    pub variant: Option<String>,
    /// Model version that produced the list.
    pub model_version: Option<i64>,
    /// The frequency-capping key (user, else session); never stored with the event.
    pub cap_key: Option<ShopperKey>,
}

/// Limits on one `POST /events` body.
#[derive(Debug, Clone, Copy)]
pub struct EventLimits {
    /// Most events in one body.
    pub max_events: usize,
    /// How far in the future a timestamp may be (clock skew).
    pub max_future_skew: ChronoDuration,
}

/// Why a body of events was refused; the message names every bad event by index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidEvents {
    /// What is wrong, e.g. `event 3: item_id must be 1 to 128 characters`.
    pub message: String,
}

/// The longest id (item, user, session) accepted, as in the cart.
const MAX_ID_LEN: usize = 128;
/// The longest variant name accepted.
const MAX_VARIANT_LEN: usize = 64;
/// At most this many problems are listed in one error message.
const MAX_LISTED_PROBLEMS: usize = 10;

/// Parses and validates a JSON array of events, all or nothing. Ids are pseudonymised with
/// `pseudonymizer`, or dropped when it is `None` (the shopper opted out).
pub fn parse_events(
    body: &[u8],
    limits: EventLimits,
    now: DateTime<Utc>,
    pseudonymizer: Option<&Pseudonymizer>,
) -> Result<Vec<Event>, InvalidEvents> {
    let invalid = |message: String| InvalidEvents { message };
    let values: Vec<serde_json::Value> = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("the body must be a JSON array of events: {e}")))?;
    if values.is_empty() {
        return Err(invalid("the array holds no event".into()));
    }
    if values.len() > limits.max_events {
        return Err(invalid(format!(
            "at most {} events per request, not {}",
            limits.max_events,
            values.len()
        )));
    }
    let mut problems = Vec::new();
    let mut events = Vec::with_capacity(values.len());
    for (index, value) in values.into_iter().enumerate() {
        match validate(value, limits, now, pseudonymizer) {
            Ok(event) => events.push(event),
            Err(problem) => problems.push(format!("event {index}: {problem}")),
        }
    }
    if problems.is_empty() {
        return Ok(events);
    }
    let more = problems.len().saturating_sub(MAX_LISTED_PROBLEMS);
    problems.truncate(MAX_LISTED_PROBLEMS);
    let mut message = problems.join("; ");
    if more > 0 {
        message.push_str(&format!("; and {more} more"));
    }
    Err(invalid(message))
}

fn check_id(name: &str, id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_ID_LEN || id.chars().any(char::is_control) {
        return Err(format!(
            "{name} must be 1 to {MAX_ID_LEN} characters without control characters"
        ));
    }
    Ok(())
}

fn validate(
    value: serde_json::Value,
    limits: EventLimits,
    now: DateTime<Utc>,
    pseudonymizer: Option<&Pseudonymizer>,
) -> Result<Event, String> {
    let input: EventInput = serde_json::from_value(value).map_err(|e| e.to_string())?;
    check_id("item_id", &input.item_id)?;
    for (name, id) in [("user", &input.user), ("session", &input.session)] {
        if let Some(id) = id {
            check_id(name, id)?;
        }
    }
    if let Some(variant) = &input.variant {
        if variant.len() > MAX_VARIANT_LEN {
            return Err(format!(
                "variant must be at most {MAX_VARIANT_LEN} characters"
            ));
        }
        // One NUL would make Postgres refuse the whole batch the event lands in.
        check_id("variant", variant)?;
    }
    let occurred_at = input.timestamp.unwrap_or(now);
    if occurred_at > now + limits.max_future_skew {
        return Err(format!("timestamp {occurred_at} is in the future"));
    }
    let cap_key =
        pseudonymizer.and_then(|p| p.shopper_key(input.user.as_deref(), input.session.as_deref()));
    let (shopper, session) = match pseudonymizer {
        Some(p) => (
            input
                .user
                .as_deref()
                .and_then(|user| p.shopper_key(Some(user), None))
                .map(|k| k.to_hex()),
            input
                .session
                .as_deref()
                .and_then(|session| p.shopper_key(None, Some(session)))
                .map(|k| k.to_hex()),
        ),
        None => (None, None),
    };
    Ok(Event {
        event_id: input.event_id.unwrap_or_else(Uuid::new_v4),
        occurred_at,
        received_at: now,
        kind: input.kind,
        request_id: input.request_id,
        item_id: input.item_id,
        shopper,
        session,
        touchpoint: input.touchpoint,
        variant: input.variant,
        model_version: input.model_version,
        cap_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> EventLimits {
        EventLimits {
            max_events: 3,
            max_future_skew: ChronoDuration::minutes(10),
        }
    }

    fn now() -> DateTime<Utc> {
        "2026-11-26T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_valid_body_becomes_pseudonymised_events() {
        let p = Pseudonymizer::new(b"secret");
        let body = br#"[{"kind": "click", "item_id": "22386", "user": "u1", "session": "s1",
            "request_id": "6f1c2e0a-0000-4000-8000-000000000001",
            "timestamp": "2026-11-26T11:59:00Z", "touchpoint": "cart", "variant": "control"},
            {"kind": "dismiss", "item_id": "85099B"}]"#;
        let events = parse_events(body, limits(), now(), Some(&p)).unwrap();
        assert_eq!(events.len(), 2);
        let click = &events[0];
        assert_eq!(click.kind, EventKind::Click);
        assert_eq!(click.touchpoint, Some(Touchpoint::Cart));
        let shopper = click.shopper.as_deref().unwrap();
        assert_eq!(shopper.len(), 32);
        assert!(!shopper.contains("u1"));
        assert_ne!(click.shopper, click.session);
        assert_eq!(
            events[1].occurred_at,
            now(),
            "a missing timestamp is the arrival time"
        );
        assert_ne!(events[0].event_id, events[1].event_id);
    }

    #[test]
    fn an_opted_out_shopper_leaves_no_id() {
        let body = br#"[{"kind": "impression", "item_id": "a", "user": "u1", "session": "s1"}]"#;
        let events = parse_events(body, limits(), now(), None).unwrap();
        assert_eq!(
            (events[0].shopper.as_deref(), events[0].session.as_deref()),
            (None, None)
        );
    }

    #[test]
    fn every_bad_event_is_named_by_its_index() {
        let body = br#"[{"kind": "click", "item_id": "ok"},
            {"kind": "clik", "item_id": "a"},
            {"kind": "click", "item_id": ""}]"#;
        let error = parse_events(body, limits(), now(), None).unwrap_err();
        assert!(
            error.message.starts_with("event 1: unknown variant `clik`"),
            "{error}"
        );
        assert!(
            error.message.contains("event 2: item_id must be"),
            "{error}"
        );
        assert!(!error.message.contains("event 0"), "{error}");
    }

    #[test]
    fn shape_size_and_time_are_checked() {
        let p = None;
        for (body, expected) in [
            (&br#"{"kind": "click"}"#[..], "must be a JSON array"),
            (br#"[]"#, "holds no event"),
            (br#"[{"kind":"click","item_id":"a"},{"kind":"click","item_id":"a"},{"kind":"click","item_id":"a"},{"kind":"click","item_id":"a"}]"#, "at most 3 events"),
            (br#"[{"kind":"click","item_id":"a","timestamp":"2026-11-27T12:00:00Z"}]"#, "in the future"),
            (br#"[{"kind":"click","item_id":"a","colour":"red"}]"#, "unknown field `colour`"),
            (br#"[{"kind":"click","item_id":"a","request_id":"nope"}]"#, "event 0"),
            (br#"[{"kind":"click","item_id":"a","variant":"v\u0000"}]"#, "variant must be"),
        ] {
            let error = parse_events(body, limits(), now(), p).unwrap_err();
            assert!(error.message.contains(expected), "{expected}: {error}");
        }
    }
}
