//! The front end's files (`<site-root>/pkg`) and response compression.
//!
//! `scripts/build-frontend.sh` names the bundle after a hash of its content
//! (`switchyard-<16 hex>.js`, `_bg.wasm`, `.css`), writes `.br` and `.gz` copies next to each, and
//! records the name in `pkg/assets.json`. The server reads that name once at start
//! ([`output_name`]) for the pages' script and stylesheet links, serves `/pkg` with the
//! precompressed copy the client accepts, and marks fingerprinted files immutable (a new build
//! has new names, so a cached one is never stale). Everything else the server answers is
//! compressed on the fly (gzip or br, as the client accepts), except streams: the event stream
//! and followed logs must reach the client line by line.
use std::path::Path;

use axum::{
    Router,
    extract::Request,
    http::{HeaderValue, header},
    middleware::{self, Next},
    response::Response,
};
use tower_http::{
    compression::{
        CompressionLayer, Predicate,
        predicate::{DefaultPredicate, NotForContentType},
    },
    services::ServeDir,
};

/// The bundle's name when no `assets.json` is there (a front end built by an older script, or
/// none at all, as in the API tests).
pub const DEFAULT_OUTPUT_NAME: &str = "switchyard";

/// `Cache-Control` of files whose name carries their content's hash.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// `Cache-Control` of the other files under `/pkg`: reuse only after revalidating.
const REVALIDATE: &str = "no-cache";

/// The bundle's name from `<site_root>/pkg/assets.json` (`{"outputName": "switchyard-<hash>"}`).
pub fn output_name(site_root: &Path) -> String {
    let manifest = site_root.join("pkg").join("assets.json");
    std::fs::read_to_string(&manifest)
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|v| v.get("outputName")?.as_str().map(str::to_string))
        .filter(|name| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
        .unwrap_or_else(|| DEFAULT_OUTPUT_NAME.to_string())
}

/// Whether a `/pkg` file name carries a content hash: `switchyard-<16 hex>` then an extension.
pub fn is_fingerprinted(file: &str) -> bool {
    let Some(rest) = file.strip_prefix("switchyard-") else {
        return false;
    };
    let hash: String = rest.chars().take_while(char::is_ascii_hexdigit).collect();
    hash.len() == 16 && rest[16..].starts_with(['.', '_'])
}

async fn cache_headers(req: Request, next: Next) -> Response {
    let file = req
        .uri()
        .path()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let mut res = next.run(req).await;
    if res.status().is_success() || res.status() == axum::http::StatusCode::NOT_MODIFIED {
        let value = if is_fingerprinted(&file) {
            IMMUTABLE
        } else {
            REVALIDATE
        };
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static(value));
    }
    res
}

/// `/pkg`: the bundle's files, precompressed copies preferred, with cache headers.
pub fn pkg_routes<S: Clone + Send + Sync + 'static>(site_root: &Path) -> Router<S> {
    let files = ServeDir::new(site_root.join("pkg"))
        .precompressed_br()
        .precompressed_gzip();
    Router::new()
        .fallback_service(files)
        .layer(middleware::from_fn(cache_headers))
}

/// Responses that are not compressed on the fly: streams (event stream, followed logs, which
/// say `Cache-Control: no-transform`), images and tiny bodies.
#[derive(Clone, Copy)]
pub struct Compressible;

impl Predicate for Compressible {
    fn should_compress<B>(&self, response: &axum::http::Response<B>) -> bool
    where
        B: axum::body::HttpBody,
    {
        let no_transform = response
            .headers()
            .get_all(header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.to_ascii_lowercase().contains("no-transform"));
        !no_transform
            && DefaultPredicate::new()
                .and(NotForContentType::const_new("application/wasm"))
                .should_compress(response)
    }
}

/// gzip or br, as the client accepts, for what [`Compressible`] admits.
pub fn compression() -> CompressionLayer<Compressible> {
    CompressionLayer::new().compress_when(Compressible)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprinted_names() {
        assert!(is_fingerprinted("switchyard-0123456789abcdef.js"));
        assert!(is_fingerprinted("switchyard-0123456789abcdef_bg.wasm"));
        assert!(is_fingerprinted("switchyard-0123456789abcdef.css.br"));
        assert!(!is_fingerprinted("switchyard.js"));
        assert!(!is_fingerprinted("switchyard-0123.js"));
        assert!(!is_fingerprinted("switchyard-0123456789abcdefgh.js"));
        assert!(!is_fingerprinted("assets.json"));
    }

    #[test]
    fn the_output_name_comes_from_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(output_name(dir.path()), DEFAULT_OUTPUT_NAME);
        std::fs::create_dir_all(dir.path().join("pkg")).unwrap();
        std::fs::write(
            dir.path().join("pkg/assets.json"),
            r#"{"outputName": "switchyard-0123456789abcdef"}"#,
        )
        .unwrap();
        assert_eq!(output_name(dir.path()), "switchyard-0123456789abcdef");
        // Nothing that could break out of a path or an attribute.
        std::fs::write(
            dir.path().join("pkg/assets.json"),
            r#"{"outputName": "../x\"><script>"}"#,
        )
        .unwrap();
        assert_eq!(output_name(dir.path()), DEFAULT_OUTPUT_NAME);
    }
}
