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
            cart.iter().copied().max_by(|&a, &b| {
                dot(e, snapshot.embedding_slice(a)).total_cmp(&dot(e, snapshot.embedding_slice(b)))
            })
        }
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
    let anchor = reason.anchor.map(|a| snapshot.catalogue().title(a));
    match (reason.kind, anchor) {
        (ReasonKind::BoughtTogether, Some(title)) => format!("Often bought with {title}"),
        (ReasonKind::SimilarTo, Some(title)) => format!("Goes well with {title}"),
        (ReasonKind::ViewedTogether, Some(title)) => {
            format!("Often bought with {title}, which you viewed")
        }
        _ => "Popular with shoppers right now".to_string(),
    }
}
