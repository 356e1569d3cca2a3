//! Parsing and validating the fields of a recommendation request, from a query string
//! (`GET`) or a JSON body (`POST`), into a [`Request`] for the pipeline.

use serde::Deserialize;

use super::error::{ErrorCode, RequestError};
use crate::domain::{validate_id, Touchpoint};
use crate::pipeline::{Request, MAX_K};

/// Most cart items one request may carry: a wholesale order runs to hundreds of lines (Online
/// Retail's largest holds 1,110 items), and every cart item must be kept out of the list.
pub const MAX_CART_ITEMS: usize = 2000;
/// Most viewed items one request may carry.
pub const MAX_VIEWED_ITEMS: usize = 50;
pub use crate::pipeline::MAX_PURCHASED_SENT;
/// Most excluded categories one request may carry.
pub const MAX_EXCLUDED_CATEGORIES: usize = 50;

/// The query string of `GET /recommendations`, before validation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecommendationRequestQuery {
    cart: Option<String>,
    viewed: Option<String>,
    purchased: Option<String>,
    user: Option<String>,
    session: Option<String>,
    touchpoint: Option<String>,
    k: Option<String>,
    max_price: Option<String>,
    exclude_categories: Option<String>,
    personalize: Option<String>,
    explain: Option<String>,
    variant: Option<String>,
}

/// The JSON body of `POST /recommendations`, before validation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecommendationRequestJson {
    #[serde(default)]
    cart: Vec<String>,
    #[serde(default)]
    viewed: Vec<String>,
    #[serde(default)]
    purchased: Vec<String>,
    user: Option<String>,
    session: Option<String>,
    touchpoint: Option<String>,
    k: Option<u64>,
    max_price: Option<f64>,
    #[serde(default)]
    exclude_categories: Vec<String>,
    personalize: Option<bool>,
    explain: Option<bool>,
    variant: Option<String>,
}

/// Splits a comma-separated list, ignoring empty entries (so `cart=` and trailing commas work).
fn split_list(value: Option<&str>) -> Vec<String> {
    value
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn parse_bool(
    field: &'static str,
    value: Option<&str>,
    default: bool,
) -> Result<bool, RequestError> {
    match value.map(str::trim) {
        None | Some("") => Ok(default),
        Some("true" | "1" | "yes") => Ok(true),
        Some("false" | "0" | "no") => Ok(false),
        Some(other) => Err(RequestError::new(
            ErrorCode::InvalidQuery,
            format!("{field} must be true or false, not {:?}", shorten(other)),
        )),
    }
}

fn shorten(value: &str) -> String {
    const SHOWN: usize = 40;
    if value.chars().count() <= SHOWN {
        value.to_string()
    } else {
        let mut s: String = value.chars().take(SHOWN).collect();
        s.push('…');
        s
    }
}

fn check_ids(code: ErrorCode, field: &str, ids: &[String], max: usize) -> Result<(), RequestError> {
    if ids.len() > max {
        return Err(RequestError::new(
            code,
            format!(
                "{field} has {} items, more than the limit of {max}",
                ids.len()
            ),
        ));
    }
    for id in ids {
        validate_id(id)
            .map_err(|e| RequestError::new(code, format!("{field} item {:?}: {e}", shorten(id))))?;
    }
    Ok(())
}

fn check_shopper(
    field: &'static str,
    value: Option<String>,
) -> Result<Option<String>, RequestError> {
    match value {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => {
            validate_id(&v).map_err(|e| {
                RequestError::new(ErrorCode::InvalidShopper, format!("{field}: {e}"))
            })?;
            Ok(Some(v))
        }
    }
}

fn check_k(k: Option<u64>, default_k: usize) -> Result<usize, RequestError> {
    match k {
        None => Ok(default_k),
        Some(k) if (1..=MAX_K as u64).contains(&k) => Ok(k as usize),
        Some(k) => Err(RequestError::new(
            ErrorCode::InvalidK,
            format!("k must be between 1 and {MAX_K}, not {k}"),
        )),
    }
}

fn check_touchpoint(value: Option<&str>) -> Result<Touchpoint, RequestError> {
    match value {
        None | Some("") => Ok(Touchpoint::default()),
        Some(name) => name.parse().map_err(|()| {
            RequestError::new(
                ErrorCode::InvalidTouchpoint,
                format!(
                    "touchpoint must be checkout, cart or product, not {:?}",
                    shorten(name)
                ),
            )
        }),
    }
}

fn check_max_price(value: Option<f64>) -> Result<Option<f32>, RequestError> {
    match value {
        None => Ok(None),
        Some(p) if p.is_finite() && p >= 0.0 => Ok(Some(p as f32)),
        Some(p) => Err(RequestError::new(
            ErrorCode::InvalidMaxPrice,
            format!("max_price must be a non-negative number, not {p}"),
        )),
    }
}

/// The list fields of a request, before validation.
struct Lists {
    cart: Vec<String>,
    viewed: Vec<String>,
    purchased: Vec<String>,
    exclude_categories: Vec<String>,
}

fn finish(lists: Lists, fields: Fields) -> Result<Request, RequestError> {
    let Lists {
        cart,
        viewed,
        purchased,
        exclude_categories,
    } = lists;
    check_ids(ErrorCode::InvalidCart, "cart", &cart, MAX_CART_ITEMS)?;
    check_ids(
        ErrorCode::InvalidViewed,
        "viewed",
        &viewed,
        MAX_VIEWED_ITEMS,
    )?;
    check_ids(
        ErrorCode::InvalidPurchased,
        "purchased",
        &purchased,
        MAX_PURCHASED_SENT,
    )?;
    if exclude_categories.len() > MAX_EXCLUDED_CATEGORIES {
        return Err(RequestError::new(
            ErrorCode::InvalidQuery,
            format!(
                "exclude_categories has {} entries, more than the limit of {MAX_EXCLUDED_CATEGORIES}",
                exclude_categories.len()
            ),
        ));
    }
    Ok(Request {
        cart,
        viewed,
        purchased,
        user: fields.user,
        session: fields.session,
        touchpoint: fields.touchpoint,
        k: fields.k,
        max_price: fields.max_price,
        exclude_categories,
        personalize: fields.personalize,
        explain: fields.explain,
    })
}

/// The scalar fields shared by both request forms, once validated.
struct Fields {
    user: Option<String>,
    session: Option<String>,
    touchpoint: Touchpoint,
    k: usize,
    max_price: Option<f32>,
    personalize: bool,
    explain: bool,
}

/// A non-empty variant label, trimmed.
fn forced_variant(value: Option<String>) -> Option<String> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

impl RecommendationRequestQuery {
    /// Takes the experiment variant the request asks to be served with (admin only; the
    /// caller checks the token), leaving the other fields.
    pub fn take_variant(&mut self) -> Option<String> {
        forced_variant(self.variant.take())
    }

    /// Parses a raw query string (already known to be within the size limit).
    pub fn parse(query: Option<&str>) -> Result<Self, RequestError> {
        serde_urlencoded::from_str(query.unwrap_or("")).map_err(|e| {
            RequestError::new(
                ErrorCode::InvalidQuery,
                format!("malformed query string: {e}"),
            )
        })
    }

    /// Validates every field into a pipeline request.
    pub fn into_request(self, default_k: usize) -> Result<Request, RequestError> {
        let k = match self.k.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(raw) => Some(raw.parse::<u64>().map_err(|_| {
                RequestError::new(
                    ErrorCode::InvalidK,
                    format!(
                        "k must be a whole number between 1 and {MAX_K}, not {:?}",
                        shorten(raw)
                    ),
                )
            })?),
        };
        let max_price = match self.max_price.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(raw) => Some(raw.parse::<f64>().map_err(|_| {
                RequestError::new(
                    ErrorCode::InvalidMaxPrice,
                    format!("max_price must be a number, not {:?}", shorten(raw)),
                )
            })?),
        };
        let fields = Fields {
            user: check_shopper("user", self.user)?,
            session: check_shopper("session", self.session)?,
            touchpoint: check_touchpoint(self.touchpoint.as_deref())?,
            k: check_k(k, default_k)?,
            max_price: check_max_price(max_price)?,
            personalize: parse_bool("personalize", self.personalize.as_deref(), true)?,
            explain: parse_bool("explain", self.explain.as_deref(), false)?,
        };
        let lists = Lists {
            cart: split_list(self.cart.as_deref()),
            viewed: split_list(self.viewed.as_deref()),
            purchased: split_list(self.purchased.as_deref()),
            exclude_categories: split_list(self.exclude_categories.as_deref()),
        };
        finish(lists, fields)
    }
}

impl RecommendationRequestJson {
    /// Parses a JSON body.
    pub fn parse(body: &[u8]) -> Result<Self, RequestError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        serde_json::from_slice(body).map_err(|e| {
            RequestError::new(ErrorCode::InvalidBody, format!("malformed JSON body: {e}"))
        })
    }

    /// Takes the experiment variant the request asks to be served with (admin only; the
    /// caller checks the token), leaving the other fields.
    pub fn take_variant(&mut self) -> Option<String> {
        forced_variant(self.variant.take())
    }

    /// Validates every field into a pipeline request.
    pub fn into_request(self, default_k: usize) -> Result<Request, RequestError> {
        let fields = Fields {
            user: check_shopper("user", self.user)?,
            session: check_shopper("session", self.session)?,
            touchpoint: check_touchpoint(self.touchpoint.as_deref())?,
            k: check_k(self.k, default_k)?,
            max_price: check_max_price(self.max_price)?,
            personalize: self.personalize.unwrap_or(true),
            explain: self.explain.unwrap_or(false),
        };
        let lists = Lists {
            cart: self.cart,
            viewed: self.viewed,
            purchased: self.purchased,
            exclude_categories: self.exclude_categories,
        };
        finish(lists, fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &str) -> Result<Request, RequestError> {
        RecommendationRequestQuery::parse(Some(query))?.into_request(10)
    }

    #[test]
    fn a_full_query_is_parsed_into_a_request() {
        let r = parse(
            "cart=85099B,%2022386,&viewed=1&purchased=2,3,2&user=u1&touchpoint=cart&k=5&max_price=9.5\
             &exclude_categories=a,b&personalize=false&explain=1",
        )
        .unwrap();
        assert_eq!(r.cart, ["85099B", "22386"]);
        assert_eq!(r.viewed, ["1"]);
        assert_eq!(r.purchased, ["2", "3", "2"]);
        assert_eq!(r.user.as_deref(), Some("u1"));
        assert_eq!(r.touchpoint, Touchpoint::Cart);
        assert_eq!((r.k, r.max_price), (5, Some(9.5)));
        assert_eq!(r.exclude_categories, ["a", "b"]);
        assert!(!r.personalize && r.explain);
    }

    #[test]
    fn an_empty_query_gets_the_defaults() {
        let r = RecommendationRequestQuery::parse(None)
            .unwrap()
            .into_request(7)
            .unwrap();
        assert_eq!(
            (r.k, r.touchpoint, r.personalize),
            (7, Touchpoint::Checkout, true)
        );
        assert!(r.cart.is_empty());
    }

    #[test]
    fn each_bad_field_gets_its_own_code() {
        let cases = [
            ("k=0", ErrorCode::InvalidK),
            ("k=51", ErrorCode::InvalidK),
            ("k=ten", ErrorCode::InvalidK),
            ("touchpoint=basket", ErrorCode::InvalidTouchpoint),
            ("max_price=-1", ErrorCode::InvalidMaxPrice),
            ("max_price=NaN", ErrorCode::InvalidMaxPrice),
            ("personalize=maybe", ErrorCode::InvalidQuery),
            ("colour=red", ErrorCode::InvalidQuery),
            ("k=1&k=2", ErrorCode::InvalidQuery),
            ("user=a%0Ab", ErrorCode::InvalidShopper),
        ];
        for (query, code) in cases {
            assert_eq!(parse(query).unwrap_err().code, code, "{query}");
        }
        let long_id = format!("cart={}", "x".repeat(129));
        assert_eq!(parse(&long_id).unwrap_err().code, ErrorCode::InvalidCart);
        let many = format!("cart={}", vec!["a"; MAX_CART_ITEMS + 1].join(","));
        let err = parse(&many).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidCart);
        assert!(err.message.contains("2001"), "{}", err.message);
    }

    #[test]
    fn json_bodies_use_the_same_rules() {
        let ok =
            RecommendationRequestJson::parse(br#"{"cart": ["a", "b"], "k": 3, "explain": true}"#)
                .unwrap()
                .into_request(10)
                .unwrap();
        assert_eq!((ok.cart.len(), ok.k, ok.explain), (2, 3, true));
        assert_eq!(
            RecommendationRequestJson::parse(b"{").unwrap_err().code,
            ErrorCode::InvalidBody
        );
        assert_eq!(
            RecommendationRequestJson::parse(br#"{"k": 99}"#)
                .unwrap()
                .into_request(10)
                .unwrap_err()
                .code,
            ErrorCode::InvalidK
        );
        assert_eq!(
            RecommendationRequestJson::parse(br#"{"cart": [""]}"#)
                .unwrap()
                .into_request(10)
                .unwrap_err()
                .code,
            ErrorCode::InvalidCart
        );
    }
}
