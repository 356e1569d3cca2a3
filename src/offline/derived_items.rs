//! Item rows derived from order history: an item's title, price and category, for items the
//! shop's catalogue does not describe.
//!
//! - title: the most frequent non-empty description on the item's basket lines (ties go to
//!   the alphabetically first), else on any of its lines, else the item id;
//! - price: the median unit price of its basket lines (the mean of the middle two when even);
//! - category: the files carry none, so it is derived from the title: the right-most word
//!   that names a kind of thing rather than a colour, size, pattern, theme or material
//!   (`JUMBO BAG RED RETROSPOT` -> `bag`, `SET OF 3 CAKE TINS PANTRY DESIGN` -> `tin`),
//!   lower-cased and made singular. It is a heuristic for English product titles, good
//!   enough for the guard rails' substitute detection (two bags in one category); shops with
//!   a real taxonomy should write `items.category` themselves.

use foldhash::{HashMap, HashMapExt};

/// Title words that describe rather than name the product.
const DESCRIPTIVE: &[&str] = &[
    "RED",
    "PINK",
    "BLUE",
    "GREEN",
    "WHITE",
    "BLACK",
    "CREAM",
    "IVORY",
    "GOLD",
    "SILVER",
    "PURPLE",
    "YELLOW",
    "ORANGE",
    "BROWN",
    "GREY",
    "GRAY",
    "LILAC",
    "TURQUOISE",
    "NATURAL",
    "PASTEL",
    "COLOUR",
    "COLOURED",
    "ASSORTED",
    "LARGE",
    "SMALL",
    "MEDIUM",
    "MINI",
    "JUMBO",
    "BIG",
    "GIANT",
    "TINY",
    "SIZE",
    "DESIGN",
    "DESIGNS",
    "RETROSPOT",
    "POLKADOT",
    "PAISLEY",
    "SPOT",
    "SPOTS",
    "STRIPE",
    "STRIPES",
    "FLORAL",
    "VINTAGE",
    "RETRO",
    "CHRISTMAS",
    "XMAS",
    "LONDON",
    "SPACEBOY",
    "WOODLAND",
    "GARDEN",
    "HOME",
    "METAL",
    "ZINC",
    "GLASS",
    "WOOD",
    "WOODEN",
    "CERAMIC",
    "ENAMEL",
    "FELT",
    "PAPER",
    "PLASTIC",
    "PORCELAIN",
    "SET",
    "OF",
    "AND",
    "WITH",
    "IN",
    "THE",
    "FOR",
    "TO",
    "ON",
    "A",
    "DOLLY",
    "GIRL",
    "BOY",
    "PANTRY",
    "REGENCY",
    "SKULL",
    "SKULLS",
    "HEART",
    "HEARTS",
    "FLOWER",
    "FLOWERS",
    "STAR",
    "STARS",
    "LOVE",
    "BIRD",
    "BIRDS",
    "ROSE",
    "ROSES",
    "LEAF",
    "PARADE",
    "CIRCUS",
    "APPLE",
    "APPLES",
    "CHERRY",
    "STRAWBERRY",
    "LACE",
    "FLOCK",
    "DOTS",
    "GINGHAM",
    "ANTIQUE",
    "FRENCH",
    "ENGLISH",
    "ORIENTAL",
    "BAROQUE",
    "HANGING",
    "DECORATIVE",
    "NEW",
    "TRADITIONAL",
    "PARTY",
];

/// Derives a coarse category from a product title (see the module doc); `None` when no
/// word qualifies.
pub fn derive_category(title: &str) -> Option<String> {
    title
        .split(|c: char| c.is_whitespace() || c == ',' || c == '/' || c == '+' || c == '&')
        .rev()
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()))
        .find(|w| {
            w.chars().filter(|c| c.is_alphabetic()).count() >= 3
                && w.chars()
                    .all(|c| c.is_alphabetic() || c == '-' || c == '\'')
                && !DESCRIPTIVE.iter().any(|d| d.eq_ignore_ascii_case(w))
        })
        .map(|w| singular(&w.to_lowercase()))
}

fn singular(word: &str) -> String {
    let stem = if let Some(stem) = word.strip_suffix("ies") {
        return format!("{stem}y");
    } else if ["xes", "ches", "shes", "sses"]
        .iter()
        .any(|s| word.ends_with(s))
    {
        &word[..word.len() - 2]
    } else if word.ends_with('s')
        && !word.ends_with("ss")
        && !word.ends_with("us")
        && word.len() > 3
    {
        &word[..word.len() - 1]
    } else {
        word
    };
    stem.to_string()
}

/// The catalogue row of one item, as derived from its history.
#[derive(Debug, Clone, PartialEq)]
pub struct DerivedItem {
    /// Item id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Derived category.
    pub category: Option<String>,
    /// Median unit price of its basket lines.
    pub price: Option<f32>,
}

#[derive(Debug, Default)]
struct ItemTally {
    basket_descriptions: HashMap<Box<str>, u32>,
    other_descriptions: HashMap<Box<str>, u32>,
    prices: Vec<f32>,
}

/// Tallies descriptions and prices per item while lines stream past.
#[derive(Debug, Default)]
pub struct DerivedItems {
    index: HashMap<Box<str>, u32>,
    ids: Vec<Box<str>>,
    tallies: Vec<ItemTally>,
}

fn tally(map: &mut HashMap<Box<str>, u32>, description: &str) {
    if description.is_empty() {
        return;
    }
    match map.get_mut(description) {
        Some(n) => *n += 1,
        None => {
            map.insert(description.into(), 1);
        }
    }
}

fn most_frequent(map: &HashMap<Box<str>, u32>) -> Option<&str> {
    map.iter()
        .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
        .map(|(d, _)| &**d)
}

impl DerivedItems {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self {
            index: HashMap::with_capacity(4096),
            ..Self::default()
        }
    }

    /// Dense number of `item_id`, added on first sight.
    pub fn intern(&mut self, item_id: &str) -> u32 {
        if let Some(&i) = self.index.get(item_id) {
            return i;
        }
        let i = self.ids.len() as u32;
        self.index.insert(item_id.into(), i);
        self.ids.push(item_id.into());
        self.tallies.push(ItemTally::default());
        i
    }

    /// Records one line of `item_id`; `in_basket` says whether it counts as a sale.
    pub fn add(
        &mut self,
        item_id: &str,
        description: &str,
        unit_price: Option<f32>,
        in_basket: bool,
    ) -> u32 {
        let i = self.intern(item_id);
        let t = &mut self.tallies[i as usize];
        if in_basket {
            tally(&mut t.basket_descriptions, description);
            if let Some(p) = unit_price {
                t.prices.push(p);
            }
        } else {
            tally(&mut t.other_descriptions, description);
        }
        i
    }

    /// Number of items seen.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no item was seen.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The derived catalogue rows, in the order items were first seen.
    pub fn finish(self) -> Vec<DerivedItem> {
        self.ids
            .into_iter()
            .zip(self.tallies)
            .map(|(id, mut t)| {
                let title = most_frequent(&t.basket_descriptions)
                    .or_else(|| most_frequent(&t.other_descriptions))
                    .unwrap_or(&id)
                    .to_string();
                t.prices.sort_unstable_by(f32::total_cmp);
                let n = t.prices.len();
                let price = (n > 0).then(|| {
                    if n % 2 == 1 {
                        t.prices[n / 2]
                    } else {
                        (t.prices[n / 2 - 1] + t.prices[n / 2]) / 2.0
                    }
                });
                DerivedItem {
                    category: derive_category(&title),
                    id: id.into(),
                    title,
                    price,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_name_the_kind_of_thing() {
        for (title, category) in [
            ("JUMBO BAG RED RETROSPOT", Some("bag")),
            ("WHITE HANGING HEART T-LIGHT HOLDER", Some("holder")),
            ("SET OF 3 CAKE TINS PANTRY DESIGN", Some("tin")),
            ("ASSORTED COLOUR BIRD ORNAMENT", Some("ornament")),
            ("PACK OF 72 RETROSPOT CAKE CASES", Some("case")),
            ("HAND WARMER, UNION JACK", Some("jack")),
            ("SET 7 BABUSHKA NESTING BOXES", Some("box")),
            ("PAPER CHAIN KIT 50'S CHRISTMAS", Some("kit")),
            ("LUNCH BOX WITH CUTLERY", Some("cutlery")),
            ("RED 3", None),
            ("", None),
        ] {
            assert_eq!(derive_category(title).as_deref(), category, "{title}");
        }
    }

    #[test]
    fn title_is_the_most_frequent_basket_description_and_price_the_median() {
        let mut acc = DerivedItems::new();
        for (d, p, basket) in [
            ("WHITE HEART", 2.55, true),
            ("WHITE HEART HOLDER", 2.95, true),
            ("WHITE HEART HOLDER", 2.55, true),
            ("damaged", 0.0, false),
            ("damaged", 0.0, false),
            ("damaged", 0.0, false),
            ("", 3.25, true),
        ] {
            acc.add("85123A", d, Some(p), basket);
        }
        acc.add("22139", "", None, false);
        acc.add("22140", "?", Some(0.0), false);
        let items = acc.finish();
        assert_eq!(items[0].title, "WHITE HEART HOLDER");
        assert_eq!(items[0].price, Some(2.75));
        assert_eq!(items[0].category.as_deref(), Some("holder"));
        assert_eq!(items[1].title, "22139");
        assert_eq!(items[1].price, None);
        assert_eq!(items[2].title, "?");
    }
}
