//! Reasons in words: the text shown beside a recommended item.

use super::{Reason, ReasonKind};
use crate::model::Snapshot;

/// The shopper-facing sentence for `reason`, naming the anchor item by its title.
pub fn reason_text(snapshot: &Snapshot, reason: &Reason) -> String {
    let anchor = reason.anchor.map(|a| snapshot.catalogue().title(a));
    match (reason.kind, anchor) {
        (ReasonKind::BoughtTogether, Some(title)) => format!("Often bought with {title}"),
        (ReasonKind::SimilarTo, Some(title)) => format!("Goes well with {title}"),
        (ReasonKind::ViewedTogether, Some(title)) => {
            format!("Shoppers who viewed {title} also bought this")
        }
        _ => "Popular with shoppers right now".to_string(),
    }
}
