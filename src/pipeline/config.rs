//! The pipeline's tunables: signal weights and diversity per touchpoint, pool sizes, decays
//! and penalties, from the `[pipeline]` section of the settings (experiments vary them).

use serde::{Deserialize, Serialize};

use super::MAX_K;
use crate::domain::Touchpoint;

/// Weights and diversity of one touchpoint.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TouchpointConfig {
    /// Weight of co-purchase with the cart.
    pub collaborative: f32,
    /// Weight of content (embedding) similarity to the cart.
    pub content: f32,
    /// Weight of co-purchase with this session's viewed items.
    pub session: f32,
    /// Weight of the shopper's earlier purchases ("buy again"); 0 when a config predates it.
    /// With [`PipelineConfig::restock_scaling`] it is scaled by the cart's restock share.
    #[serde(default)]
    pub purchased: f32,
    /// Weight of the popularity prior.
    pub popularity: f32,
    /// DPP trade-off: 1 = plain ranking by score, lower = more diverse.
    pub theta: f32,
    /// Whether substitutes of cart items are demoted (at checkout a second camera is not a
    /// cross-sell for a camera; on a product page an alternative may be welcome).
    pub demote_substitutes: bool,
}

impl TouchpointConfig {
    /// The default weights of the checkout and cart pages.
    pub(super) const CHECKOUT: Self = Self {
        collaborative: 1.0,
        content: 0.3,
        session: 0.3,
        purchased: 1.25,
        popularity: 0.02,
        theta: 0.9,
        demote_substitutes: true,
    };
    /// The default weights of the product page: substitutes welcome, more content.
    const PRODUCT: Self = Self {
        demote_substitutes: false,
        content: 0.5,
        theta: 0.9,
        ..Self::CHECKOUT
    };
}

/// Tunables of the pipeline, from the `[pipeline]` section of the settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Number of recommendations when a request does not say.
    pub default_k: usize,
    /// Most candidates scored per request (bounds the work of a request with a large cart).
    pub candidate_pool: usize,
    /// Co-purchase neighbours taken from each cart or viewed item.
    pub neighbours_per_anchor: usize,
    /// Content (embedding) neighbours taken from each cart item.
    pub content_neighbours_per_anchor: usize,
    /// Popular items added as fallback candidates.
    pub popular_candidates: usize,
    /// Best-scored candidates the DPP chooses from.
    pub diversity_pool: usize,
    /// Share of the best candidate's score a candidate needs for the DPP to pick it for
    /// diversity (below it, items only fill a short list, in score order).
    pub diversity_min_quality: f32,
    /// Viewed items lose half their weight every this many newer views.
    pub session_half_life: f32,
    /// Earlier purchases lose half their weight every this many newer purchases (an item's
    /// signal is `ln(1 + sum)` of its purchases' weights: sublinear, so a staple bought every
    /// week does not drown the rest).
    pub purchased_half_life: f32,
    /// Whether the `purchased` weight is scaled by the cart's restock share, `(cart items the
    /// shopper bought before + 1) / (cart items + 2)`: a cart of repeat purchases makes the
    /// shopper's other past purchases the likely completions, a cart of new items makes
    /// co-purchase the better guide.
    pub restock_scaling: bool,
    /// Weight, within an earlier purchase's signal, of its having been bought on a line near
    /// an item now in the cart (within `purchased_beside_lines` of it in `purchased`, closer
    /// lines counting more), beside `ln(1 + sum)` of its purchases: a shop's regulars restock
    /// what they bought together before. 0 = off.
    pub purchased_beside_cart: f32,
    /// How many purchases either side of a cart item in `purchased` count as bought beside it.
    pub purchased_beside_lines: usize,
    /// Cosine at or above which a same-category item counts as a substitute of a cart item.
    pub substitute_similarity: f32,
    /// Factor applied to a substitute's score when its touchpoint demotes substitutes.
    pub substitute_penalty: f32,
    /// Score added to promoted items (bounded merchandising boost).
    pub promoted_boost: f32,
    /// Score added per unit of margin (margin in [0, 1]).
    pub margin_boost: f32,
    /// Cosine at or above which an item counts as close to one the shopper dismissed.
    pub dismissed_neighbour_similarity: f32,
    /// Factor applied to the score of an item close to a dismissed one.
    pub dismissed_neighbour_penalty: f32,
    /// Checkout page.
    pub checkout: TouchpointConfig,
    /// Cart page.
    pub cart: TouchpointConfig,
    /// Product page.
    pub product: TouchpointConfig,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            default_k: 10,
            candidate_pool: 2000,
            neighbours_per_anchor: 40,
            content_neighbours_per_anchor: 5,
            popular_candidates: 20,
            diversity_pool: 30,
            diversity_min_quality: 0.15,
            session_half_life: 3.0,
            purchased_half_life: 300.0,
            restock_scaling: true,
            purchased_beside_cart: 0.0,
            purchased_beside_lines: 3,
            substitute_similarity: 0.9,
            substitute_penalty: 0.5,
            promoted_boost: 0.0,
            margin_boost: 0.0,
            dismissed_neighbour_similarity: 0.8,
            dismissed_neighbour_penalty: 0.5,
            checkout: TouchpointConfig::CHECKOUT,
            cart: TouchpointConfig::CHECKOUT,
            product: TouchpointConfig::PRODUCT,
        }
    }
}

impl PipelineConfig {
    /// The weights of `touchpoint`.
    pub fn touchpoint(&self, touchpoint: Touchpoint) -> &TouchpointConfig {
        match touchpoint {
            Touchpoint::Checkout => &self.checkout,
            Touchpoint::Cart => &self.cart,
            Touchpoint::Product => &self.product,
        }
    }

    /// Checks ranges serde cannot express; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_K).contains(&self.default_k) {
            return Err(format!("pipeline.default_k must be between 1 and {MAX_K}"));
        }
        if self.candidate_pool == 0 || self.diversity_pool == 0 {
            return Err("pipeline.candidate_pool and diversity_pool must be positive".into());
        }
        if !(0.0..=1.0).contains(&self.diversity_min_quality) {
            return Err("pipeline.diversity_min_quality must be in [0, 1]".into());
        }
        let finite_non_negative = [
            ("session_half_life", self.session_half_life),
            ("purchased_half_life", self.purchased_half_life),
            ("purchased_beside_cart", self.purchased_beside_cart),
            ("substitute_penalty", self.substitute_penalty),
            ("promoted_boost", self.promoted_boost),
            ("margin_boost", self.margin_boost),
            (
                "dismissed_neighbour_penalty",
                self.dismissed_neighbour_penalty,
            ),
        ];
        for (key, value) in finite_non_negative {
            if !value.is_finite() || value < 0.0 {
                return Err(format!("pipeline.{key} must be a non-negative number"));
            }
        }
        if self.session_half_life == 0.0 || self.purchased_half_life == 0.0 {
            return Err(
                "pipeline.session_half_life and purchased_half_life must be positive".into(),
            );
        }
        for touchpoint in Touchpoint::ALL {
            let t = self.touchpoint(touchpoint);
            let weights = [
                t.collaborative,
                t.content,
                t.session,
                t.purchased,
                t.popularity,
            ];
            if weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
                return Err(format!(
                    "pipeline.{}: weights must be non-negative numbers",
                    touchpoint.as_str()
                ));
            }
            if !(0.0..=1.0).contains(&t.theta) {
                return Err(format!(
                    "pipeline.{}.theta must be in [0, 1]",
                    touchpoint.as_str()
                ));
            }
        }
        Ok(())
    }
}
