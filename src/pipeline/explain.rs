//! Explain: the reason shown beside an item is the signal that contributed most to its score
//! and the cart or session item behind it, named by title.

use super::candidates::{Candidate, NO_ANCHOR};
use super::vector::dot;
use super::{Contributions, Reason, ReasonKind};
use crate::domain::ItemIndex;
use crate::model::Snapshot;

/// The dominant signal of `candidate` and its anchor.
pub(super) fn reason(
    snapshot: &Snapshot,
    cart: &[ItemIndex],
    candidate: &Candidate,
    parts: &Contributions,
) -> Reason {
    let signals = [
        (ReasonKind::BoughtTogether, parts.collaborative),
        (ReasonKind::SimilarTo, parts.content),
        (ReasonKind::ViewedTogether, parts.session),
        (ReasonKind::BoughtBefore, parts.purchased),
        (ReasonKind::Popular, parts.popularity),
    ];
    let (kind, value) = signals
        .into_iter()
        .fold((ReasonKind::Popular, 0.0f32), |best, s| {
            if s.1 > best.1 {
                s
            } else {
                best
            }
        });
    if value <= 0.0 {
        return Reason {
            kind: ReasonKind::Popular,
            anchor: None,
        };
    }
    let anchor = match kind {
        ReasonKind::BoughtTogether => Some(candidate.collaborative_anchor),
        ReasonKind::ViewedTogether => Some(candidate.session_anchor),
        ReasonKind::SimilarTo if candidate.content_anchor != NO_ANCHOR => {
            Some(candidate.content_anchor)
        }
        ReasonKind::SimilarTo => {
            let e = snapshot.embedding_slice(candidate.item);
            // One dot product per cart item (a wholesale cart holds hundreds).
            cart.iter()
                .map(|&a| (dot(e, snapshot.embedding_slice(a)), a))
                .max_by(|x, y| x.0.total_cmp(&y.0))
                .map(|(_, a)| a)
        }
        // The item itself is what the shopper bought: no other item to name.
        ReasonKind::BoughtBefore => return Reason { kind, anchor: None },
        ReasonKind::Popular => None,
    };
    match anchor.filter(|&a| a != NO_ANCHOR) {
        Some(anchor) => Reason {
            kind,
            anchor: Some(anchor),
        },
        None => Reason {
            kind: ReasonKind::Popular,
            anchor: None,
        },
    }
}

/// The shopper-facing sentence for `reason`, naming the anchor item by its title.
pub fn reason_text(snapshot: &Snapshot, reason: &Reason) -> String {
    ReasonText::new(snapshot, reason).to_string()
}

/// The shopper-facing sentence for a reason, written straight into a response (no `String`
/// per item on the request path).
#[derive(Debug, Clone, Copy)]
pub struct ReasonText<'a> {
    kind: ReasonKind,
    anchor_title: Option<&'a str>,
}

impl<'a> ReasonText<'a> {
    /// The sentence for `reason`, naming its anchor by the title in `snapshot`.
    pub fn new(snapshot: &'a Snapshot, reason: &Reason) -> Self {
        Self {
            kind: reason.kind,
            anchor_title: reason.anchor.map(|a| snapshot.attributes().title(a)),
        }
    }

    /// The sentence as the text before the anchor's title, the title, and the text after it
    /// (no title: the whole sentence is the first part).
    pub fn parts(&self) -> (&'static str, Option<&'a str>, &'static str) {
        match (self.kind, self.anchor_title) {
            (ReasonKind::BoughtTogether, Some(title)) => ("Often bought with ", Some(title), ""),
            (ReasonKind::SimilarTo, Some(title)) => ("Goes well with ", Some(title), ""),
            (ReasonKind::ViewedTogether, Some(title)) => {
                ("Often bought with ", Some(title), ", which you viewed")
            }
            (ReasonKind::BoughtBefore, _) => ("You bought this before", None, ""),
            _ => ("Popular with shoppers right now", None, ""),
        }
    }
}

impl std::fmt::Display for ReasonText<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (before, title, after) = self.parts();
        f.write_str(before)?;
        if let Some(title) = title {
            f.write_str(title)?;
        }
        f.write_str(after)
    }
}

impl serde::Serialize for ReasonText<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}
