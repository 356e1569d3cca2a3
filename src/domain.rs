//! Ids and small value types shared by every layer (a leaf: depends on nothing in the crate).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest item, user or session id accepted anywhere, in bytes.
pub const MAX_ID_BYTES: usize = 128;

/// A model version number as stored in `model_versions.version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ModelVersion(pub i64);

impl fmt::Display for ModelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Dense index of an item inside one snapshot (valid only for that snapshot).
pub type ItemIndex = u32;

/// Where on the storefront a recommendation is shown; selects weights and limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Touchpoint {
    /// The checkout page (default): complements, never substitutes.
    #[default]
    Checkout,
    /// The cart page or mini-cart.
    Cart,
    /// A product detail page.
    Product,
}

impl Touchpoint {
    /// Every touchpoint, for iteration over configuration and metrics.
    pub const ALL: [Touchpoint; 3] = [Touchpoint::Checkout, Touchpoint::Cart, Touchpoint::Product];

    /// The name used in the API, configuration and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Touchpoint::Checkout => "checkout",
            Touchpoint::Cart => "cart",
            Touchpoint::Product => "product",
        }
    }
}

impl std::str::FromStr for Touchpoint {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Touchpoint::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or(())
    }
}

/// Why an item id was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The id is the empty string.
    #[error("id is empty")]
    Empty,
    /// The id is longer than [`MAX_ID_BYTES`].
    #[error("id is {0} bytes long, more than the limit of {MAX_ID_BYTES}")]
    TooLong(usize),
    /// The id contains a control character.
    #[error("id contains a control character")]
    ControlCharacter,
}

/// Checks that `id` can be an item, user or session id.
pub fn validate_id(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    if id.len() > MAX_ID_BYTES {
        return Err(IdError::TooLong(id.len()));
    }
    if id.chars().any(char::is_control) {
        return Err(IdError::ControlCharacter);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touchpoints_round_trip_through_their_names() {
        for t in Touchpoint::ALL {
            assert_eq!(t.as_str().parse::<Touchpoint>(), Ok(t));
        }
        assert!("basket".parse::<Touchpoint>().is_err());
    }

    #[test]
    fn ids_are_checked_for_length_and_control_characters() {
        assert_eq!(validate_id("85099B"), Ok(()));
        assert_eq!(validate_id(""), Err(IdError::Empty));
        assert_eq!(validate_id(&"x".repeat(129)), Err(IdError::TooLong(129)));
        assert_eq!(validate_id(&"x".repeat(128)), Ok(()));
        assert_eq!(validate_id("a\nb"), Err(IdError::ControlCharacter));
    }
}
