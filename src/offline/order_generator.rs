//! Synthetic order histories of any size, for scale tests and benchmarks (`tandem generate
//! --orders FILE`). They have the shape of a shop's history, not its signal: figures of time
//! and memory come from them, quality claims only from real data.
//!
//! The model:
//! - **Catalogue.** Items come in *complementary groups* (a themed range: a product and its
//!   accessories, `WOODLAND ROBIN TEA CUP`, `... SAUCER`, `... TEAPOT`) of 3 to 40 items in
//!   one department. Titles are the group's two theme words and a kind of thing from the
//!   department (the kind becomes the derived category), so titles share words within a
//!   group and kinds across groups. About one product in eight comes in 2 to 4 colour
//!   *variants* (`85099A`, `85099B`: one digit stem, letters after it); every code starts
//!   with a digit, so the default Online Retail rule reads each one as a product.
//! - **Popularity.** Items get Zipf-Mandelbrot weights `(rank + 100)^-1.4` over a random
//!   order of ranks: a few hundred items sell often (the top one in a few % of the baskets),
//!   most are a long tail.
//! - **Baskets.** Sizes are log-normal (default mean 16 lines, capped at 400). A basket is
//!   anchored on the group of a popular item (and on a second group a third of the time).
//!   About one line per item of the catalogue comes from a *discovery* walk over all items in
//!   a random order, so every item sells at least once when there are enough lines; of the
//!   other lines, 25 % of a returning customer's re-buy one of their earlier items, 60 % of
//!   the rest come from an anchor group (within it by the items' weights, so an item's share
//!   of the lines stays its popularity) and the others by global popularity. A basket never
//!   holds an item twice, so basket lines equal order lines.
//! - **Customers.** A fifth of the baskets have no customer id; the rest belong to customers
//!   of Zipf-like activity (exponent 0.9; by default one customer per five baskets), so
//!   many shop once and a few every week. A returning customer's basket is anchored on the
//!   group of one of their earlier items 30 % of the time.
//! - **Time.** Baskets are spread evenly over a year from 2010-12-01, 08:00 to 20:00 each day,
//!   in time order with increasing invoice numbers (`536365`, ...).
//!
//! Output is the UCI Online Retail layout (`InvoiceNo,StockCode,Description,Quantity,
//! InvoiceDate,UnitPrice,CustomerID,Country`), written line by line: memory is the catalogue
//! and the customers' recent items, never the lines. One ChaCha8 stream per concern makes the
//! output a function of the spec alone.

use std::io::{self, Write};

use chrono::{Duration, NaiveDate};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// The CSV header written first (UCI Online Retail).
pub const HEADER: &str =
    "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n";

/// First invoice number (the first of the Online Retail file).
const FIRST_INVOICE: u64 = 536_365;
/// First customer id (the lowest of the Online Retail file).
const FIRST_CUSTOMER: u64 = 12_346;
/// First stock-code stem: every code has at least five digits.
const FIRST_STEM: u64 = 10_002;
/// Most earlier items remembered per customer for re-buys.
const REMEMBERED_ITEMS: usize = 32;
/// Largest basket.
const MAX_BASKET: usize = 400;

/// Shape of a synthetic order history.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OrderSpec {
    /// Catalogue size.
    pub items: usize,
    /// Order lines (each a distinct item of its basket).
    pub lines: u64,
    /// Seed of every random choice.
    pub seed: u64,
    /// Customers with an id (`None`: one per five expected baskets).
    pub customers: Option<usize>,
    /// Mean basket size in lines.
    pub mean_basket: f64,
    /// Zipf exponent of item popularity.
    pub popularity_exponent: f64,
    /// Rank offset of item popularity (weights `(rank + offset)^-exponent`): flattens the head.
    pub popularity_offset: f64,
    /// Zipf exponent of customer activity.
    pub customer_exponent: f64,
    /// Share of a basket's lines drawn from its anchor groups.
    pub group_share: f64,
    /// Share of baskets with a second anchor group.
    pub second_group_share: f64,
    /// Share of baskets without a customer id.
    pub anonymous_share: f64,
    /// Share of a returning customer's lines that re-buy one of their earlier items.
    pub repeat_share: f64,
    /// Share of a returning customer's baskets anchored on one of their earlier groups.
    pub loyal_anchor_share: f64,
    /// Days the history spans.
    pub days: u32,
}

impl Default for OrderSpec {
    fn default() -> Self {
        Self {
            items: 62_000,
            lines: 1_200_000,
            seed: 42,
            customers: None,
            mean_basket: 16.0,
            popularity_exponent: 1.4,
            popularity_offset: 100.0,
            customer_exponent: 0.9,
            group_share: 0.6,
            second_group_share: 0.35,
            anonymous_share: 0.2,
            repeat_share: 0.25,
            loyal_anchor_share: 0.3,
            days: 365,
        }
    }
}

/// What a generated history holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OrderReport {
    /// Catalogue size.
    pub items: usize,
    /// Items in at least one basket.
    pub items_sold: usize,
    /// Items in at least five baskets.
    pub items_with_5_baskets: usize,
    /// Baskets (orders).
    pub baskets: u64,
    /// Lines.
    pub lines: u64,
    /// Baskets without a customer id.
    pub anonymous_baskets: u64,
    /// Distinct customers with at least one basket.
    pub customers: usize,
    /// Customers with at least two baskets.
    pub returning_customers: usize,
    /// Baskets of a customer who had shopped before.
    pub returning_baskets: u64,
    /// Lines re-buying an item the same customer bought before (among the last 32 they
    /// remember).
    pub repeat_lines: u64,
    /// Items that are one of several variants of a product.
    pub variant_items: usize,
    /// Bytes of CSV written (uncompressed).
    pub bytes: u64,
}

/// Departments: the kinds of thing their groups hold.
const DEPARTMENTS: &[&[&str]] = &[
    &[
        "TEA CUP",
        "SAUCER",
        "TEAPOT",
        "MUG",
        "PLATE",
        "BOWL",
        "JUG",
        "CAKE STAND",
        "SUGAR POT",
        "MILK JUG",
        "EGG CUP",
        "COASTER",
    ],
    &[
        "NOTEBOOK",
        "PENCIL",
        "ERASER",
        "RULER",
        "PENCIL CASE",
        "SHARPENER",
        "STICKER SHEET",
        "GREETING CARD",
        "ENVELOPE",
        "WRAPPING PAPER",
        "GIFT TAG",
        "JOURNAL",
    ],
    &[
        "LUNCH BOX",
        "WATER BOTTLE",
        "SNACK BOX",
        "CUTLERY",
        "NAPKIN",
        "PICNIC BASKET",
        "TABLECLOTH",
        "BEAKER",
        "FOOD CONTAINER",
        "STRAW",
    ],
    &[
        "SHOPPER",
        "TOTE",
        "PURSE",
        "WASHBAG",
        "KEYRING",
        "BACKPACK",
        "COIN HOLDER",
        "LUGGAGE TAG",
        "PASSPORT COVER",
        "UMBRELLA",
    ],
    &[
        "CANDLE",
        "T-LIGHT HOLDER",
        "LANTERN",
        "VASE",
        "PHOTO FRAME",
        "CUSHION COVER",
        "CLOCK",
        "MIRROR",
        "DOORSTOP",
        "WALL SIGN",
        "BUNTING",
        "GARLAND",
    ],
    &[
        "CAKE CASES",
        "BAKING MOULD",
        "COOKIE CUTTER",
        "APRON",
        "OVEN GLOVE",
        "TEA TOWEL",
        "STORAGE TIN",
        "ROLLING PIN",
        "MEASURING SPOON",
        "PIE DISH",
    ],
    &[
        "PLANT POT",
        "WATERING CAN",
        "BIRD FEEDER",
        "TROWEL",
        "SEED TIN",
        "HOSE GUIDE",
        "PLANT MARKER",
        "KNEELER",
        "GLOVES",
        "WIND CHIME",
    ],
    &[
        "PARTY BAG",
        "BALLOON",
        "PAPER CUP",
        "PAPER PLATE",
        "PARTY HAT",
        "CANDLE SET",
        "PARTY NAPKIN",
        "BANNER",
        "PINATA",
        "CONFETTI",
    ],
    &[
        "JIGSAW",
        "SPINNING TOP",
        "SKIPPING ROPE",
        "COLOURING BOOK",
        "PLAYING CARDS",
        "DOMINOES",
        "KNITTING KIT",
        "CRAYONS",
        "MARBLES",
        "SOFT TOY",
    ],
    &[
        "HAND WARMER",
        "HOT WATER BOTTLE",
        "SLIPPERS",
        "BLANKET",
        "SCARF",
        "BEANIE",
        "EAR MUFFS",
        "THROW",
        "BED SOCKS",
        "EYE MASK",
    ],
    &[
        "ORNAMENT",
        "BAUBLE",
        "STOCKING",
        "ADVENT CALENDAR",
        "TREE TOPPER",
        "WREATH",
        "GIFT BOX",
        "CRACKER",
        "NATIVITY",
        "SNOW GLOBE",
    ],
    &[
        "SOAP DISH",
        "TOOTHBRUSH HOLDER",
        "TOWEL",
        "BATH MAT",
        "LAUNDRY BAG",
        "PEG BAG",
        "HOOK",
        "SHELF",
        "SOAP",
        "BATH SALTS",
    ],
];

/// First theme word of a group (style).
const STYLES: &[&str] = &[
    "VINTAGE",
    "RUSTIC",
    "NORDIC",
    "WOODLAND",
    "REGENCY",
    "RETRO",
    "CLASSIC",
    "COUNTRY",
    "SEASIDE",
    "BOTANICAL",
    "TROPICAL",
    "ALPINE",
    "PARISIAN",
    "VICTORIAN",
    "ART DECO",
    "BOHO",
    "SCANDI",
    "COTTAGE",
    "URBAN",
    "MEADOW",
    "ORCHARD",
    "MOROCCAN",
    "KYOTO",
    "TUSCAN",
    "HIGHLAND",
    "HARBOUR",
    "MIDNIGHT",
    "SUNSHINE",
    "CANDY",
    "PASTEL",
    "MONOCHROME",
    "GINGHAM",
    "TARTAN",
    "PAISLEY",
    "POLKADOT",
    "STRIPED",
    "FOLK",
    "HERITAGE",
    "MODERN",
    "WILD",
];

/// Second theme word of a group (motif).
const MOTIFS: &[&str] = &[
    "ROBIN",
    "OWL",
    "FOX",
    "HEDGEHOG",
    "SQUIRREL",
    "RABBIT",
    "DEER",
    "BADGER",
    "HARE",
    "WREN",
    "SPARROW",
    "SWALLOW",
    "PUFFIN",
    "PENGUIN",
    "ELEPHANT",
    "GIRAFFE",
    "ZEBRA",
    "LION",
    "TIGER",
    "PANDA",
    "KOALA",
    "WHALE",
    "DOLPHIN",
    "OCTOPUS",
    "STARFISH",
    "SEAHORSE",
    "ANCHOR",
    "LIGHTHOUSE",
    "SAILBOAT",
    "BICYCLE",
    "CAMPERVAN",
    "ROCKET",
    "ROBOT",
    "DINOSAUR",
    "UNICORN",
    "DRAGON",
    "MERMAID",
    "FAIRY",
    "PIRATE",
    "KNIGHT",
    "CASTLE",
    "COTTAGE",
    "WINDMILL",
    "TEAPOT",
    "CUPCAKE",
    "LEMON",
    "CHERRY",
    "STRAWBERRY",
    "PEAR",
    "PINEAPPLE",
    "WATERMELON",
    "MUSHROOM",
    "ACORN",
    "OAK",
    "FERN",
    "IVY",
    "HOLLY",
    "MISTLETOE",
    "SNOWFLAKE",
    "REINDEER",
    "SNOWMAN",
    "ANGEL",
    "ROSE",
    "DAISY",
    "TULIP",
    "POPPY",
    "LAVENDER",
    "SUNFLOWER",
    "BLOSSOM",
    "LILY",
    "CACTUS",
    "PALM",
    "BAMBOO",
    "FEATHER",
    "BUTTERFLY",
    "BEE",
    "LADYBIRD",
    "DRAGONFLY",
    "MOON",
    "STAR",
    "CLOUD",
    "RAINBOW",
    "HEART",
    "CROWN",
    "KEY",
    "COMPASS",
    "MAP",
    "GLOBE",
    "CAMERA",
    "TYPEWRITER",
    "RECORD",
    "GUITAR",
    "BALLERINA",
    "CIRCUS",
    "CAROUSEL",
    "KITE",
    "BALLOON",
    "TRAIN",
    "TRACTOR",
    "BUS",
];

/// Colours of variants (descriptive words: the derived category stays the kind).
const COLOURS: &[&str] = &[
    "RED",
    "PINK",
    "BLUE",
    "GREEN",
    "WHITE",
    "BLACK",
    "IVORY",
    "GOLD",
    "SILVER",
    "PURPLE",
    "YELLOW",
    "ORANGE",
    "GREY",
    "LILAC",
    "TURQUOISE",
];

/// Sizes of a kind repeated within a group.
const SIZES: &[&str] = &["SMALL", "LARGE", "MINI", "JUMBO", "SET OF 3", "SET OF 6"];

/// Countries of customers (most are in the United Kingdom, as in Online Retail).
const COUNTRIES: &[&str] = &[
    "Germany",
    "France",
    "EIRE",
    "Spain",
    "Netherlands",
    "Belgium",
    "Switzerland",
    "Portugal",
    "Australia",
    "Norway",
];

/// Quantities of a line and their weights.
const QUANTITIES: &[(&str, u32)] = &[
    ("1", 30),
    ("2", 18),
    ("3", 8),
    ("4", 10),
    ("6", 12),
    ("8", 4),
    ("10", 4),
    ("12", 10),
    ("24", 4),
];

/// The catalogue: items numbered group by group.
struct Catalogue {
    /// `code,title,` of each item (the middle of its CSV lines).
    heads: Vec<Box<str>>,
    /// Unit price of each item, formatted.
    prices: Vec<Box<str>>,
    /// Group of each item.
    group_of: Vec<u32>,
    /// First item of each group, and the item count as the last entry.
    group_starts: Vec<u32>,
    /// Cumulative within-group weights, aligned with the items.
    group_cumulative: Vec<f32>,
    /// Item of each popularity rank.
    by_rank: Vec<u32>,
    /// Items that are one of several variants.
    variant_items: usize,
}

fn stream(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// A standard normal draw (Box-Muller).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u: f64 = 1.0 - rng.random::<f64>();
    let v: f64 = rng.random();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// A rank in `0..n` with probability close to `(rank + offset)^-s` normalised (Zipf-Mandelbrot;
/// the inverse of the continuous distribution, so O(1)).
fn zipf_rank(rng: &mut ChaCha8Rng, n: usize, s: f64, offset: f64) -> usize {
    let u: f64 = rng.random();
    let (low, high) = (offset, n as f64 + offset);
    let x = if (s - 1.0).abs() < 1e-9 {
        low * (high / low).powf(u)
    } else {
        let e = 1.0 - s;
        (low.powf(e) + u * (high.powf(e) - low.powf(e))).powf(1.0 / e)
    } - offset;
    (x.max(0.0) as usize).min(n - 1)
}

fn shuffle(values: &mut [u32], rng: &mut ChaCha8Rng) {
    for i in (1..values.len()).rev() {
        let j = rng.random_range(0..=i);
        values.swap(i, j);
    }
}

impl Catalogue {
    fn new(spec: &OrderSpec) -> Self {
        let n = spec.items;
        let mut rng = stream(spec.seed, 1);
        let mut heads = Vec::with_capacity(n);
        let mut prices = Vec::with_capacity(n);
        let mut group_of = Vec::with_capacity(n);
        let mut group_starts = Vec::with_capacity(n / 8 + 2);
        let mut stem = FIRST_STEM;
        let mut variant_items = 0;
        while heads.len() < n {
            let group = group_starts.len() as u32;
            group_starts.push(heads.len() as u32);
            let size = (3.0 + (-(1.0 - rng.random::<f64>()).ln()) * 9.0) as usize;
            let size = size.min(40).min(n - heads.len());
            let department = DEPARTMENTS[rng.random_range(0..DEPARTMENTS.len())];
            let theme = format!(
                "{} {}",
                STYLES[rng.random_range(0..STYLES.len())],
                MOTIFS[rng.random_range(0..MOTIFS.len())]
            );
            let base_price = (1.0 + normal(&mut rng) * 0.6).exp() * 1.5;
            let first_kind = rng.random_range(0..department.len());
            let end = heads.len() + size;
            let mut product = 0;
            while heads.len() < end {
                let kind = department[(first_kind + product) % department.len()];
                let size_word = (product >= department.len())
                    .then(|| SIZES[(product / department.len() - 1) % SIZES.len()]);
                let title = match size_word {
                    Some(size) => format!("{theme} {size} {kind}"),
                    None => format!("{theme} {kind}"),
                };
                let price = (base_price * (normal(&mut rng) * 0.4).exp()).max(0.19);
                let price: Box<str> = format!("{price:.2}").into();
                let variants = if rng.random_bool(0.12) {
                    rng.random_range(2..=4usize).min(end - heads.len())
                } else {
                    1
                };
                if variants > 1 {
                    let first_colour = rng.random_range(0..COLOURS.len());
                    for v in 0..variants {
                        let letter = (b'A' + v as u8) as char;
                        let colour = COLOURS[(first_colour + v) % COLOURS.len()];
                        heads.push(format!("{stem}{letter},{title} {colour},").into());
                        prices.push(price.clone());
                        group_of.push(group);
                    }
                    variant_items += variants;
                } else {
                    heads.push(format!("{stem},{title},").into());
                    prices.push(price);
                    group_of.push(group);
                }
                stem += 1;
                product += 1;
            }
        }
        group_starts.push(n as u32);

        let mut by_rank: Vec<u32> = (0..n as u32).collect();
        shuffle(&mut by_rank, &mut rng);
        let mut rank_of = vec![0u32; n];
        for (rank, &item) in by_rank.iter().enumerate() {
            rank_of[item as usize] = rank as u32;
        }
        let (exponent, offset) = (spec.popularity_exponent, spec.popularity_offset);
        let mut group_cumulative = vec![0f32; n];
        for g in group_starts.windows(2) {
            let mut total = 0f32;
            for i in g[0] as usize..g[1] as usize {
                total += (f64::from(rank_of[i]) + offset).powf(-exponent) as f32;
                group_cumulative[i] = total;
            }
        }
        Self {
            heads,
            prices,
            group_of,
            group_starts,
            group_cumulative,
            by_rank,
            variant_items,
        }
    }

    /// An item of group `g`, by its within-group weight.
    fn in_group(&self, g: u32, rng: &mut ChaCha8Rng) -> u32 {
        let (start, end) = (
            self.group_starts[g as usize] as usize,
            self.group_starts[g as usize + 1] as usize,
        );
        let cumulative = &self.group_cumulative[start..end];
        let target = rng.random::<f32>() * cumulative[cumulative.len() - 1];
        let at = cumulative
            .iter()
            .position(|&c| c > target)
            .unwrap_or(cumulative.len() - 1);
        (start + at) as u32
    }
}

/// A customer's recent items.
#[derive(Default)]
struct Customer {
    baskets: u32,
    items: Vec<u32>,
}

/// Appends `value` in decimal.
fn push_number(out: &mut Vec<u8>, value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut v = value;
    loop {
        at -= 1;
        digits[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// A hash of `value` (SplitMix64's finaliser), for choices that need no stream.
fn mix(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Writes the history of `spec` as CSV to `out` and reports what it holds.
pub fn write_orders(spec: &OrderSpec, mut out: impl Write) -> io::Result<OrderReport> {
    out.write_all(HEADER.as_bytes())?;
    let mut report = OrderReport {
        items: spec.items,
        bytes: HEADER.len() as u64,
        ..OrderReport::default()
    };
    if spec.lines == 0 {
        return Ok(report);
    }
    if spec.items == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a history with lines needs at least one item",
        ));
    }
    let catalogue = Catalogue::new(spec);
    report.variant_items = catalogue.variant_items;
    let n = spec.items;
    let expected_baskets = (spec.lines as f64 / spec.mean_basket.max(1.0)).ceil() as usize;
    let customer_count = spec
        .customers
        .unwrap_or(expected_baskets / 5)
        .max(1)
        .min(u32::MAX as usize - 1);
    let mut customers: Vec<Customer> = Vec::new();
    customers.resize_with(customer_count, Customer::default);
    let mut baskets_of_item = vec![0u32; n];

    let mut rng = stream(spec.seed, 2);
    let popular = |rng: &mut ChaCha8Rng| {
        catalogue.by_rank[zipf_rank(rng, n, spec.popularity_exponent, spec.popularity_offset)]
    };
    let sigma: f64 = 0.8;
    let mu = spec.mean_basket.max(1.0).ln() - sigma * sigma / 2.0;
    let max_basket = MAX_BASKET.min(n);
    // Discovery lines: enough for every item to sell once (1.05 per item), at most half.
    let discovery_share = (1.05 * n as f64 / spec.lines as f64).min(0.5);
    let mut discovery_order: Vec<u32> = (0..n as u32).collect();
    shuffle(&mut discovery_order, &mut stream(spec.seed, 3));
    let mut discovery = 0usize;

    let start = NaiveDate::from_ymd_opt(2010, 12, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .expect("a valid date");
    let day_span = f64::from(spec.days.max(1));
    let mut basket: Vec<u32> = Vec::with_capacity(max_basket);
    let mut buffer: Vec<u8> = Vec::with_capacity(1 << 16);
    let mut prefix: Vec<u8> = Vec::with_capacity(32);
    let mut suffix: Vec<u8> = Vec::with_capacity(64);
    let mut country_suffix: Vec<u8> = Vec::with_capacity(32);
    let mut written = 0u64;

    while written < spec.lines {
        // Time: the share of lines written so far, along the span; shops open 08:00-20:00.
        let at_day = written as f64 / spec.lines as f64 * day_span;
        let day = at_day.floor();
        let seconds = 8.0 * 3600.0 + (at_day - day) * 12.0 * 3600.0;
        let time = start + Duration::days(day as i64) + Duration::seconds(seconds as i64);

        let size = (mu + sigma * normal(&mut rng)).exp().round() as usize;
        let size = (size.clamp(1, max_basket) as u64).min(spec.lines - written) as usize;

        let customer = if rng.random_bool(spec.anonymous_share) {
            None
        } else {
            Some(zipf_rank(
                &mut rng,
                customer_count,
                spec.customer_exponent,
                1.0,
            ))
        };
        let returning = customer.is_some_and(|c| customers[c].baskets > 0);
        let remembered: &[u32] = match customer {
            Some(c) if returning => &customers[c].items,
            _ => &[],
        };

        let mut anchors = [u32::MAX; 2];
        anchors[0] = if !remembered.is_empty() && rng.random_bool(spec.loyal_anchor_share) {
            catalogue.group_of[remembered[rng.random_range(0..remembered.len())] as usize]
        } else {
            let item = popular(&mut rng);
            catalogue.group_of[item as usize]
        };
        let anchor_count = if rng.random_bool(spec.second_group_share) {
            let item = popular(&mut rng);
            anchors[1] = catalogue.group_of[item as usize];
            2
        } else {
            1
        };

        basket.clear();
        while basket.len() < size {
            let repeat_share = if remembered.is_empty() {
                0.0
            } else {
                spec.repeat_share
            };
            let walk = discovery_order[discovery % n];
            let mut item = if rng.random_bool(discovery_share) && !basket.contains(&walk) {
                // The walk waits while its item is in the basket: it misses no item.
                discovery += 1;
                walk
            } else {
                let u: f64 = rng.random();
                if u < repeat_share {
                    remembered[rng.random_range(0..remembered.len())]
                } else if u < repeat_share + (1.0 - repeat_share) * spec.group_share {
                    let g = anchors[rng.random_range(0..anchor_count)];
                    catalogue.in_group(g, &mut rng)
                } else {
                    popular(&mut rng)
                }
            };
            let mut tries = 0;
            while basket.contains(&item) {
                tries += 1;
                item = if tries < 8 {
                    popular(&mut rng)
                } else {
                    // A basket holds fewer than `n` items: some item is free.
                    let from = rng.random_range(0..n);
                    (0..n)
                        .map(|k| ((from + k) % n) as u32)
                        .find(|i| !basket.contains(i))
                        .expect("a basket is smaller than the catalogue")
                };
            }
            basket.push(item);
        }

        // Write the basket.
        let invoice = FIRST_INVOICE + report.baskets;
        prefix.clear();
        push_number(&mut prefix, invoice);
        prefix.push(b',');
        suffix.clear();
        suffix.push(b',');
        suffix.extend_from_slice(time.format("%Y-%m-%d %H:%M:%S").to_string().as_bytes());
        suffix.push(b',');
        country_suffix.clear();
        country_suffix.push(b',');
        match customer {
            Some(c) => {
                push_number(&mut country_suffix, FIRST_CUSTOMER + c as u64);
                country_suffix.extend_from_slice(b".0,");
                let h = mix(spec.seed ^ c as u64);
                let country = if h % 100 < 88 {
                    "United Kingdom"
                } else {
                    COUNTRIES[(h >> 8) as usize % COUNTRIES.len()]
                };
                country_suffix.extend_from_slice(country.as_bytes());
            }
            None => country_suffix.extend_from_slice(b",United Kingdom"),
        }
        country_suffix.push(b'\n');
        for &item in &basket {
            buffer.extend_from_slice(&prefix);
            buffer.extend_from_slice(catalogue.heads[item as usize].as_bytes());
            let mut pick = rng.random_range(0..100u32);
            let quantity = QUANTITIES
                .iter()
                .find(|(_, w)| {
                    let hit = pick < *w;
                    pick = pick.saturating_sub(*w);
                    hit
                })
                .map_or("1", |(q, _)| q);
            buffer.extend_from_slice(quantity.as_bytes());
            buffer.extend_from_slice(&suffix);
            buffer.extend_from_slice(catalogue.prices[item as usize].as_bytes());
            buffer.extend_from_slice(&country_suffix);
            baskets_of_item[item as usize] += 1;
        }
        if buffer.len() >= 1 << 16 {
            out.write_all(&buffer)?;
            report.bytes += buffer.len() as u64;
            buffer.clear();
        }

        // Remember the customer's items.
        if let Some(c) = customer {
            let customer = &mut customers[c];
            if customer.baskets > 0 {
                report.returning_baskets += 1;
            }
            customer.baskets += 1;
            for &item in &basket {
                if customer.items.contains(&item) {
                    report.repeat_lines += 1;
                    continue;
                }
                if customer.items.len() < REMEMBERED_ITEMS {
                    customer.items.push(item);
                } else {
                    let at = rng.random_range(0..REMEMBERED_ITEMS);
                    customer.items[at] = item;
                }
            }
        } else {
            report.anonymous_baskets += 1;
        }
        report.baskets += 1;
        written += size as u64;
    }
    out.write_all(&buffer)?;
    report.bytes += buffer.len() as u64;
    out.flush()?;

    report.lines = written;
    report.items_sold = baskets_of_item.iter().filter(|&&b| b > 0).count();
    report.items_with_5_baskets = baskets_of_item.iter().filter(|&&b| b >= 5).count();
    report.customers = customers.iter().filter(|c| c.baskets > 0).count();
    report.returning_customers = customers.iter().filter(|c| c.baskets > 1).count();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use foldhash::{HashMap, HashMapExt, HashSet};

    use super::*;
    use crate::offline::estimators::variant_groups;
    use crate::offline::history::{History, NO_CUSTOMER};
    use crate::offline::orders::{is_product_code, ReadOptions};

    fn spec(items: usize, lines: u64, seed: u64) -> OrderSpec {
        OrderSpec {
            items,
            lines,
            seed,
            ..OrderSpec::default()
        }
    }

    fn generate(spec: &OrderSpec) -> (Vec<u8>, OrderReport) {
        let mut out = Vec::new();
        let report = write_orders(spec, &mut out).unwrap();
        (out, report)
    }

    #[test]
    fn the_output_is_a_function_of_the_spec() {
        let (a, report) = generate(&spec(500, 5_000, 7));
        let (b, _) = generate(&spec(500, 5_000, 7));
        let (c, _) = generate(&spec(500, 5_000, 8));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(report.bytes, a.len() as u64);
    }

    #[test]
    fn the_history_reads_back_with_every_line_a_product_in_a_basket() {
        let spec = spec(2_000, 30_000, 1);
        let (csv, report) = generate(&spec);
        let text = std::str::from_utf8(&csv).unwrap();
        assert!(text.starts_with(HEADER));
        let (history, rows) = History::read(csv.as_slice(), &ReadOptions::default()).unwrap();
        assert_eq!(rows.rows, 30_000);
        assert_eq!(rows.basket_lines, 30_000, "{rows:?}");
        assert_eq!(rows.bad_rows, 0, "{:?}", rows.first_bad_rows);
        assert_eq!(report.lines, 30_000);
        assert_eq!(history.lines(), 30_000, "no item twice in a basket");
        assert_eq!(history.len() as u64, report.baskets);
        assert_eq!(history.items.len(), report.items_sold);
        assert_eq!(
            report.items_sold, 2_000,
            "the discovery walk sells every item"
        );
        assert!(history.items.iter().all(|i| is_product_code(&i.id)));
        let mean = report.lines as f64 / report.baskets as f64;
        assert!((10.0..=20.0).contains(&mean), "mean basket {mean}");
        let (first, last) = history.time_range().unwrap();
        assert!(last - first > 300 * 86_400, "about a year: {first}..{last}");
        // In time order in the file already: invoice numbers rise with time.
        let mut previous = (0i64, 0u64);
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields.len(), 8, "{line}");
            let at = crate::offline::orders::parse_timestamp(fields[4]).unwrap();
            let invoice: u64 = fields[0].parse().unwrap();
            assert!((at, invoice) >= previous, "{line}");
            previous = (at, invoice);
        }
    }

    #[test]
    fn variants_share_a_stem_and_titles_share_words_within_a_group() {
        let (csv, report) = generate(&spec(3_000, 60_000, 2));
        let (history, _) = History::read(csv.as_slice(), &ReadOptions::default()).unwrap();
        let groups = variant_groups(history.items.iter().map(|i| i.id.as_str()));
        let mut sizes: HashMap<u32, usize> = HashMap::new();
        for &g in groups.iter().filter(|&&g| g != u32::MAX) {
            *sizes.entry(g).or_default() += 1;
        }
        let families = sizes.values().filter(|&&n| n > 1).count();
        assert!(families > 50, "{families} variant families");
        assert!(report.variant_items > 100);
        let catalogue = Catalogue::new(&spec(3_000, 60_000, 2));
        let words = |i: usize| -> HashSet<String> {
            let head = &catalogue.heads[i];
            let title = head.split(',').nth(1).unwrap();
            title.split(' ').map(str::to_string).collect()
        };
        for g in catalogue.group_starts.windows(2).take(50) {
            let first = words(g[0] as usize);
            for i in g[0] as usize + 1..g[1] as usize {
                assert!(words(i).intersection(&first).count() >= 2, "group {g:?}");
            }
        }
        assert!(history.items.iter().all(|i| i.category.is_some()));
    }

    #[test]
    fn popularity_has_a_long_tail() {
        let (csv, report) = generate(&spec(5_000, 60_000, 3));
        let (history, _) = History::read(csv.as_slice(), &ReadOptions::default()).unwrap();
        let mut baskets = vec![0u32; history.items.len()];
        for b in 0..history.len() {
            for &i in history.basket(b) {
                baskets[i as usize] += 1;
            }
        }
        let at_least_5 = baskets.iter().filter(|&&n| n >= 5).count();
        let fewer = baskets.len() - at_least_5;
        assert_eq!(at_least_5, report.items_with_5_baskets);
        assert!(at_least_5 > 500, "{at_least_5} items with >= 5 baskets");
        assert!(
            fewer > baskets.len() / 3,
            "{fewer} items with fewer than 5 baskets"
        );
        let top = *baskets.iter().max().unwrap();
        assert!(top > 200, "the most popular item is in {top} baskets");
    }

    #[test]
    fn customers_come_back_and_buy_again() {
        let (csv, report) = generate(&spec(2_000, 40_000, 4));
        let (history, _) = History::read(csv.as_slice(), &ReadOptions::default()).unwrap();
        let anonymous = (0..history.len())
            .filter(|&b| history.customer(b) == NO_CUSTOMER)
            .count();
        assert_eq!(anonymous as u64, report.anonymous_baskets);
        let share = anonymous as f64 / history.len() as f64;
        assert!((0.1..0.3).contains(&share), "anonymous share {share}");
        let mut bought: HashMap<u32, HashSet<u32>> = HashMap::new();
        let mut rebuys = 0;
        for b in 0..history.len() {
            let c = history.customer(b);
            if c == NO_CUSTOMER {
                continue;
            }
            let earlier = bought.entry(c).or_default();
            rebuys += history
                .basket(b)
                .iter()
                .filter(|i| earlier.contains(i))
                .count();
            earlier.extend(history.basket(b));
        }
        assert!(report.returning_customers > 100, "{report:?}");
        assert!(report.returning_baskets > report.baskets / 3, "{report:?}");
        assert!(
            rebuys as u64 >= report.repeat_lines,
            "{rebuys} re-bought lines"
        );
        assert!(report.repeat_lines > report.lines / 20, "{report:?}");
    }

    #[test]
    fn gzip_output_reads_back_and_edge_sizes_work() {
        use flate2::write::GzEncoder;
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let report = write_orders(&spec(50, 1_000, 5), &mut gz).unwrap();
        let bytes = gz.finish().unwrap();
        let (history, _) = History::read(bytes.as_slice(), &ReadOptions::default()).unwrap();
        assert_eq!(history.lines(), 1_000);
        assert_eq!(history.len() as u64, report.baskets);

        let (one, _) = generate(&spec(1, 3, 5));
        let (history, _) = History::read(one.as_slice(), &ReadOptions::default()).unwrap();
        assert_eq!(
            (history.len(), history.lines()),
            (3, 3),
            "one item, one a basket"
        );
        let (empty, report) = generate(&spec(10, 0, 5));
        assert_eq!(empty, HEADER.as_bytes());
        assert_eq!(report.baskets, 0);
        assert!(write_orders(&spec(0, 5, 5), Vec::new()).is_err());
    }

    #[test]
    fn zipf_ranks_favour_the_top() {
        let mut rng = stream(9, 0);
        let mut counts = [0u32; 100];
        for _ in 0..100_000 {
            counts[zipf_rank(&mut rng, 100, 1.0, 1.0)] += 1;
        }
        assert!(counts[0] > 5 * counts[20], "{counts:?}");
        assert!(counts.iter().all(|&c| c > 0));
    }
}
