//! Static files compiled into the binary: the storefront widget, the explorer page, and the
//! sample storefront page. Each is served with its content type, an `ETag` (a hash of its
//! bytes, so a new build is a new tag) and a cache policy, gzip-compressed when the client
//! takes it (compressed once, on first use).

use std::io::Write;
use std::sync::LazyLock;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use flate2::write::GzEncoder;
use flate2::Compression;
use sha2::{Digest, Sha256};

/// One embedded file, with what serving it needs.
pub struct Asset {
    body: &'static [u8],
    gzipped: Option<Vec<u8>>,
    content_type: &'static str,
    cache_control: &'static str,
    etag: HeaderValue,
    csp: Option<&'static str>,
}

/// Shops embed the widget: a few minutes of caching, then a cheap revalidation, so a new
/// release reaches their pages the same day.
const SHORT_CACHE: &str = "public, max-age=300";
/// Pages are revalidated on every load (a 304 when unchanged).
const REVALIDATE: &str = "no-cache";
/// The explorer loads only its own files and talks only to this server.
const EXPLORER_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' https: data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

impl Asset {
    fn new(
        body: &'static str,
        content_type: &'static str,
        cache_control: &'static str,
        csp: Option<&'static str>,
    ) -> Self {
        let digest = Sha256::digest(body.as_bytes());
        let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        let etag = HeaderValue::from_str(&format!("\"{hex}\""))
            .unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
        let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
        // Compression into a Vec cannot fail short of memory; without it the file goes plain.
        let gzipped = encoder
            .write_all(body.as_bytes())
            .ok()
            .and_then(|()| encoder.finish().ok())
            .filter(|gz| gz.len() < body.len());
        Self {
            body: body.as_bytes(),
            gzipped,
            content_type,
            cache_control,
            etag,
            csp,
        }
    }

    /// The file as the answer to a request with `headers`: 304 when its `If-None-Match` names
    /// this version, else the body, gzipped when accepted.
    pub fn serve(&'static self, headers: &HeaderMap) -> Response {
        let unchanged = headers
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|tag| tag.trim().trim_start_matches("W/"))
            .any(|tag| tag == "*" || tag.as_bytes() == self.etag.as_bytes());
        let mut response = if unchanged {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            let gzip = self.gzipped.as_deref().filter(|_| accepts_gzip(headers));
            let mut response = match gzip {
                Some(bytes) => bytes.into_response(),
                None => self.body.into_response(),
            };
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(self.content_type),
            );
            if gzip.is_some() {
                headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            response
        };
        let headers = response.headers_mut();
        headers.insert(header::ETAG, self.etag.clone());
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(self.cache_control),
        );
        headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        if let Some(csp) = self.csp {
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(csp),
            );
        }
        response
    }
}

/// Whether `Accept-Encoding` takes gzip (a `q=0` refuses it).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let refused = parts.any(|p| matches!(p, "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

/// `GET /widget.js`: the storefront widget.
pub static WIDGET_JS: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_str!("assets/widget.js"),
        "text/javascript; charset=utf-8",
        SHORT_CACHE,
        None,
    )
});

/// `GET /explore`: the explorer page.
pub static EXPLORE_HTML: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_str!("assets/explore.html"),
        "text/html; charset=utf-8",
        REVALIDATE,
        Some(EXPLORER_CSP),
    )
});

/// `GET /explore/explore.js`: the explorer's script.
pub static EXPLORE_JS: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_str!("assets/explore.js"),
        "text/javascript; charset=utf-8",
        REVALIDATE,
        None,
    )
});

/// `GET /explore/explore.css`: the explorer's styles.
pub static EXPLORE_CSS: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_str!("assets/explore.css"),
        "text/css; charset=utf-8",
        REVALIDATE,
        None,
    )
});

/// `GET /examples/storefront`: the sample storefront page (`examples/storefront.html`).
pub static STOREFRONT_HTML: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_str!("../../examples/storefront.html"),
        "text/html; charset=utf-8",
        REVALIDATE,
        None,
    )
});

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn the_widget_stays_small() {
        assert!(
            include_str!("assets/widget.js").len() < 15 * 1024,
            "widget.js must stay under 15 KB unminified"
        );
    }

    #[test]
    fn a_known_etag_gets_304_and_gzip_only_when_accepted() {
        let asset = &*WIDGET_JS;
        let plain = asset.serve(&HeaderMap::new());
        assert_eq!(plain.status(), StatusCode::OK);
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        let etag = plain.headers()[header::ETAG].to_str().unwrap().to_owned();
        let gz = asset.serve(&headers(&[(header::ACCEPT_ENCODING, "br, gzip;q=0.8")]));
        assert_eq!(gz.headers()[header::CONTENT_ENCODING], "gzip");
        let refused = asset.serve(&headers(&[(header::ACCEPT_ENCODING, "gzip;q=0")]));
        assert!(refused.headers().get(header::CONTENT_ENCODING).is_none());
        let mut again = HeaderMap::new();
        again.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"other\", {etag}")).unwrap(),
        );
        assert_eq!(asset.serve(&again).status(), StatusCode::NOT_MODIFIED);
    }
}
