//! The `/recommendations` response: a served list rendered as JSON straight into one buffer.
//!
//! serde's derived serialiser scans every key and every value byte by byte for characters to
//! escape, a large share of a request's work. Here keys are literals, item ids and titles
//! carry whether they need escaping (the snapshot checks each once, at load), other values are
//! checked in one branch-free pass, and a value is copied whole unless it needs escaping (then
//! serde_json escapes it); numbers go through serde_json, so the bytes are exactly what it
//! writes for the same structs (a test compares them).

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
#[cfg(test)]
use serde::Serialize;

use super::error::ApiError;
use crate::domain::{ItemIndex, ModelVersion, Touchpoint};
use crate::model::{json_plain, Snapshot};
use crate::pipeline::{Contributions, ReasonKind, ReasonText};
use crate::serving::Served;

/// `served` as the JSON response, with its request id also in the `x-request-id` header.
pub(super) fn render(snapshot: &Snapshot, served: &Served<'_>) -> Response {
    let mut id_buffer = uuid::Uuid::encode_buffer();
    let request_id: &str = served.request_id.hyphenated().encode_lower(&mut id_buffer);
    let items = served
        .recommendations
        .items
        .iter()
        .map(|r| ResponseItem {
            item_id: item_id(snapshot, r.item),
            title: title(snapshot, r.item),
            price: Some(snapshot.attributes().price(r.item)).filter(|p| p.is_finite()),
            image_link: snapshot
                .attributes()
                .image_link(r.item)
                .map(JsonStr::checked),
            score: r.score,
            reason: ResponseReason {
                kind: r.reason.kind,
                anchor: r.reason.anchor.map(|a| item_id(snapshot, a)),
                text: ReasonText::new(snapshot, &r.reason),
                text_plain: r
                    .reason
                    .anchor
                    .is_none_or(|a| snapshot.attributes().title_is_json_plain(a)),
            },
            contributions: r.contributions,
        })
        .collect();
    let body = RecommendationsResponse {
        // Hyphenated lowercase hex.
        request_id: JsonStr::known(request_id, true),
        model_version: snapshot.version(),
        touchpoint: served.touchpoint,
        variant: served.variant,
        items,
        unknown_items: &served.recommendations.unknown_items,
    };
    let mut response = match body.to_json() {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => ApiError::Internal(format!("serialising the response: {e}")).into_response(),
    };
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// The id of `item`, with whether it needs JSON escaping.
fn item_id(snapshot: &Snapshot, item: ItemIndex) -> JsonStr<'_> {
    JsonStr::known(snapshot.item_id(item), snapshot.item_id_is_json_plain(item))
}

/// The title of `item`, with whether it needs JSON escaping.
fn title(snapshot: &Snapshot, item: ItemIndex) -> JsonStr<'_> {
    let attributes = snapshot.attributes();
    JsonStr::known(attributes.title(item), attributes.title_is_json_plain(item))
}

/// A string and whether it can stand inside a JSON string unescaped.
#[derive(Debug, Clone, Copy)]
pub(super) struct JsonStr<'a> {
    text: &'a str,
    plain: bool,
}

impl<'a> JsonStr<'a> {
    /// `text`, whose plainness the caller knows (from the snapshot's flags).
    pub(super) fn known(text: &'a str, plain: bool) -> Self {
        debug_assert_eq!(plain, json_plain(text));
        Self { text, plain }
    }

    /// `text`, checked now.
    pub(super) fn checked(text: &'a str) -> Self {
        Self {
            text,
            plain: json_plain(text),
        }
    }
}

#[cfg(test)]
impl Serialize for JsonStr<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.text)
    }
}

/// Why an item is listed.
#[cfg_attr(test, derive(Serialize))]
pub(super) struct ResponseReason<'a> {
    pub(super) kind: ReasonKind,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub(super) anchor: Option<JsonStr<'a>>,
    pub(super) text: ReasonText<'a>,
    /// Whether the anchor's title in `text` can stand in JSON unescaped.
    #[cfg_attr(test, serde(skip))]
    pub(super) text_plain: bool,
}

/// One listed item.
#[cfg_attr(test, derive(Serialize))]
pub(super) struct ResponseItem<'a> {
    pub(super) item_id: JsonStr<'a>,
    pub(super) title: JsonStr<'a>,
    /// The catalogue price; absent when the catalogue has none.
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub(super) price: Option<f32>,
    /// The catalogue's image link; absent when it has none.
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub(super) image_link: Option<JsonStr<'a>>,
    pub(super) score: f32,
    pub(super) reason: ResponseReason<'a>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub(super) contributions: Option<Contributions>,
}

/// The whole answer.
#[cfg_attr(test, derive(Serialize))]
pub(super) struct RecommendationsResponse<'a> {
    pub(super) request_id: JsonStr<'a>,
    pub(super) model_version: ModelVersion,
    pub(super) touchpoint: Touchpoint,
    pub(super) variant: &'a str,
    pub(super) items: Vec<ResponseItem<'a>>,
    pub(super) unknown_items: &'a [&'a str],
}

impl RecommendationsResponse<'_> {
    /// The body as JSON, in one buffer sized for a typical list.
    pub(super) fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(512 + 256 * self.items.len());
        out.extend_from_slice(b"{\"request_id\":");
        write_json_str(&mut out, self.request_id)?;
        out.extend_from_slice(b",\"model_version\":");
        serde_json::to_writer(&mut out, &self.model_version)?;
        out.extend_from_slice(b",\"touchpoint\":\"");
        out.extend_from_slice(self.touchpoint.as_str().as_bytes());
        out.push(b'"');
        out.extend_from_slice(b",\"variant\":");
        write_str(&mut out, self.variant)?;
        out.extend_from_slice(b",\"items\":[");
        for (n, item) in self.items.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            item.write(&mut out)?;
        }
        out.extend_from_slice(b"],\"unknown_items\":[");
        for (n, id) in self.unknown_items.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            write_str(&mut out, id)?;
        }
        out.extend_from_slice(b"]}");
        Ok(out)
    }
}

impl ResponseItem<'_> {
    fn write(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        out.extend_from_slice(b"{\"item_id\":");
        write_json_str(out, self.item_id)?;
        out.extend_from_slice(b",\"title\":");
        write_json_str(out, self.title)?;
        if let Some(price) = self.price {
            out.extend_from_slice(b",\"price\":");
            serde_json::to_writer(&mut *out, &price)?;
        }
        if let Some(link) = self.image_link {
            out.extend_from_slice(b",\"image_link\":");
            write_json_str(out, link)?;
        }
        out.extend_from_slice(b",\"score\":");
        serde_json::to_writer(&mut *out, &self.score)?;
        out.extend_from_slice(b",\"reason\":{\"kind\":\"");
        out.extend_from_slice(self.reason.kind.as_str().as_bytes());
        out.push(b'"');
        if let Some(anchor) = self.reason.anchor {
            out.extend_from_slice(b",\"anchor\":");
            write_json_str(out, anchor)?;
        }
        out.extend_from_slice(b",\"text\":\"");
        // The sentence's own parts are plain literals (a test checks every one).
        let (before, title, after) = self.reason.text.parts();
        out.extend_from_slice(before.as_bytes());
        if let Some(title) = title {
            write_str_contents(out, JsonStr::known(title, self.reason.text_plain))?;
        }
        out.extend_from_slice(after.as_bytes());
        out.extend_from_slice(b"\"}");
        if let Some(contributions) = &self.contributions {
            out.extend_from_slice(b",\"contributions\":");
            serde_json::to_writer(&mut *out, contributions)?;
        }
        out.push(b'}');
        Ok(())
    }
}

/// `s` as a quoted JSON string, checked for escapes now.
fn write_str(out: &mut Vec<u8>, s: &str) -> serde_json::Result<()> {
    write_json_str(out, JsonStr::checked(s))
}

/// `s` as a quoted JSON string.
fn write_json_str(out: &mut Vec<u8>, s: JsonStr<'_>) -> serde_json::Result<()> {
    out.push(b'"');
    write_str_contents(out, s)?;
    out.push(b'"');
    Ok(())
}

/// `s` escaped for the inside of a JSON string (no quotes).
fn write_str_contents(out: &mut Vec<u8>, s: JsonStr<'_>) -> serde_json::Result<()> {
    if s.plain {
        out.extend_from_slice(s.text.as_bytes());
        return Ok(());
    }
    let start = out.len();
    serde_json::to_writer(&mut *out, s.text)?;
    // Drop the quotes serde_json put around it.
    out.pop();
    out.remove(start);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ItemRecord, Snapshot, SnapshotBuilder};
    use crate::pipeline::Reason;
    use proptest::prelude::*;

    fn kind(n: u8) -> ReasonKind {
        [
            ReasonKind::BoughtTogether,
            ReasonKind::SimilarTo,
            ReasonKind::ViewedTogether,
            ReasonKind::BoughtBefore,
            ReasonKind::Popular,
        ][usize::from(n % 5)]
    }

    #[test]
    fn reason_kinds_are_named_as_serde_names_them() {
        for n in 0..5 {
            let k = kind(n);
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
        }
    }

    #[test]
    fn the_sentences_around_a_title_need_no_escaping() {
        for n in 0..5 {
            for anchor in [None, Some(0)] {
                let snapshot = snapshot_with_titles(&["x"]);
                let reason = Reason {
                    kind: kind(n),
                    anchor,
                };
                let (before, _, after) = ReasonText::new(&snapshot, &reason).parts();
                assert!(
                    json_plain(before) && json_plain(after),
                    "{before:?} {after:?}"
                );
            }
        }
    }

    #[test]
    fn ids_and_titles_know_whether_they_need_escaping() {
        let snapshot =
            snapshot_with_titles(&["plain", "say \"hi\"", "tab\there", "back\\slash", "é"]);
        let plain: Vec<bool> = (0..6)
            .map(|i| snapshot.attributes().title_is_json_plain(i))
            .collect();
        assert_eq!(plain, [true, false, false, false, true, true]);
        assert!((0..6).all(|i| snapshot.item_id_is_json_plain(i)));
    }

    /// A snapshot whose first items have `titles` (and one more, as a snapshot is never
    /// empty).
    fn snapshot_with_titles(titles: &[&str]) -> Snapshot {
        let mut builder = SnapshotBuilder::new(ModelVersion(1), 0, titles.len() + 1);
        for (n, title) in titles.iter().chain(&["spare"]).enumerate() {
            builder
                .add_item(ItemRecord {
                    id: &format!("item{n}"),
                    title: Some(title),
                    in_stock: true,
                    ..Default::default()
                })
                .unwrap();
        }
        builder.finish().unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]
        /// Any strings (quotes, backslashes, control characters, non-ASCII), any scores and
        /// reasons: the same bytes as serde_json writes for the derived structs.
        #[test]
        fn the_body_is_byte_for_byte_what_serde_json_writes(
            request_id in ".{0,40}",
            variant in "\\PC{0,12}|[\"\\\\\u{0}-\u{1f}a]{0,6}",
            version in any::<i64>(),
            items in prop::collection::vec(
                (".{0,12}", "\\PC{0,30}|[\"\\\\\u{0}-\u{1f}é]{0,8}", any::<f32>(), any::<u8>(),
                 prop::option::of(".{0,8}"), any::<bool>(), any::<bool>()),
                0..6,
            ),
            unknown in prop::collection::vec(".{0,10}", 0..3),
            touchpoint in 0usize..3,
        ) {
            let titles: Vec<&str> = items.iter().map(|item| item.1.as_str()).collect();
            let snapshot = snapshot_with_titles(&titles);
            let unknown: Vec<&str> = unknown.iter().map(String::as_str).collect();
            let items: Vec<ResponseItem<'_>> = items
                .iter()
                .enumerate()
                .map(|(n, (id, title, score, k, anchor, anchored, explain))| {
                    // The reason names the item's own title, so odd titles reach the text.
                    let reason = Reason {
                        kind: kind(*k),
                        anchor: anchored.then_some(n as u32),
                    };
                    ResponseItem {
                        item_id: JsonStr::checked(id),
                        title: JsonStr::checked(title),
                        price: (*explain).then_some(if score.is_finite() { score.abs() } else { 2.5 }),
                        // Titles stand in for links: quotes, backslashes and control characters.
                        image_link: anchored.then(|| JsonStr::checked(title)),
                        score: if score.is_finite() { *score } else { 0.5 },
                        reason: ResponseReason {
                            kind: reason.kind,
                            anchor: anchor.as_deref().map(JsonStr::checked),
                            text: ReasonText::new(&snapshot, &reason),
                            text_plain: snapshot.attributes().title_is_json_plain(n as u32),
                        },
                        contributions: explain.then(|| Contributions {
                            collaborative: *score,
                            ..Contributions::default()
                        }),
                    }
                })
                .collect();
            let body = RecommendationsResponse {
                request_id: JsonStr::checked(&request_id),
                model_version: ModelVersion(version),
                touchpoint: Touchpoint::ALL[touchpoint],
                variant: &variant,
                items,
                unknown_items: &unknown,
            };
            let ours = body.to_json().unwrap();
            let theirs = serde_json::to_vec(&body).unwrap();
            prop_assert_eq!(String::from_utf8(ours).unwrap(), String::from_utf8(theirs).unwrap());
        }
    }
}
