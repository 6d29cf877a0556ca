//! The moderation console: a web page served by the admin API at `/console` (its files are in the binary:
//! `relay-bin/console/`, and hls.js 1.7.4's light build, Apache-2.0, vendored beside them), and the one API
//! call made for it, `GET /api/v1/console` (where the node's HTTP egress is, for the player).
//!
//! The page's files need no token (they hold no data); everything they show comes from the token-protected
//! API, with the token the moderator signs in with (kept in the tab's `sessionStorage`). The page is on the
//! admin port, not the media port: it is an admin tool behind the admin token, and the egress port carries
//! media to the public.

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::api::ApiState;

const INDEX: &str = include_str!("../../console/index.html");
const SCRIPT: &str = include_str!("../../console/console.js");
const STYLE: &str = include_str!("../../console/console.css");
const HLS_JS: &str = include_str!("../../console/vendor/hls.light.min.js");

/// What the page may load: its own files, snapshots as blobs, and media and playlists from the egress port
/// (another origin), hls.js's worker as a blob.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: http: https:; \
     connect-src 'self' http: https:; worker-src 'self' blob:; style-src 'self'; script-src 'self'; \
     frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

/// `GET /console`.
pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

/// `GET /console/console.js`.
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /console/console.css`.
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

/// `GET /console/hls.light.min.js`.
pub async fn hls_js() -> Response {
    asset("text/javascript; charset=utf-8", HLS_JS)
}

/// The answer to `GET /api/v1/console`.
#[derive(Debug, Serialize)]
pub struct ConsoleInfo {
    /// The HTTP egress port (HLS, HTTP-FLV), when egress is on.
    pub egress_port: Option<u16>,
    /// The egress host when it listens on one address (else the page uses the host it was loaded from).
    pub egress_host: Option<String>,
    /// popline's version.
    pub version: &'static str,
}

/// `GET /api/v1/console` (token-protected): what the console needs to know about the node.
pub async fn info(State(state): State<ApiState>) -> Json<ConsoleInfo> {
    let egress: Option<SocketAddr> = state.egress;
    Json(ConsoleInfo {
        egress_port: egress.map(|a| a.port()),
        egress_host: egress
            .filter(|a| !a.ip().is_unspecified() && !a.ip().is_loopback())
            .map(|a| a.ip().to_string()),
        version: env!("CARGO_PKG_VERSION"),
    })
}
