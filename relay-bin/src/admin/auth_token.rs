//! [`BearerToken`]: the admin API's shared secret (`http.token`), and the middleware that demands it.
//!
//! The comparison is constant-time and does not leak the token's length: the configured token is kept only
//! as an HMAC under a random per-process key, and a presented token is checked with `ring::hmac::verify`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ring::hmac;
use ring::rand::SystemRandom;

use super::error::ApiError;

/// The admin token, held as an HMAC tag under a random key (the token itself is not kept).
pub struct BearerToken {
    key: hmac::Key,
    tag: hmac::Tag,
}

/// Why a token cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The configured token is empty (it would accept `Authorization: Bearer `).
    #[error("http.token is empty: set a token or leave it out")]
    Empty,
    /// The system random generator failed.
    #[error("cannot draw a random key to hold the admin token")]
    Random,
}

impl BearerToken {
    /// Holds `token` for constant-time checks.
    pub fn new(token: &str) -> Result<BearerToken, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Empty);
        }
        let key =
            hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new()).map_err(|_| TokenError::Random)?;
        let tag = hmac::sign(&key, token.as_bytes());
        Ok(BearerToken { key, tag })
    }

    /// Whether `presented` is the token (constant time).
    pub fn matches(&self, presented: &[u8]) -> bool {
        hmac::verify(&self.key, presented, self.tag.as_ref()).is_ok()
    }

    /// Whether `headers` carry `Authorization: Bearer <the token>` (scheme case-insensitive).
    pub fn authorises(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return false;
        };
        let value = value.as_bytes();
        let Some((scheme, token)) = value.split_at_checked(6) else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(b"bearer") || token.first() != Some(&b' ') {
            return false;
        }
        self.matches(token[1..].trim_ascii())
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(..)")
    }
}

/// Middleware: passes the request on when no token is configured or the request carries it; answers 401
/// (JSON, with `WWW-Authenticate: Bearer`) otherwise.
pub async fn require_token(
    State(token): State<Option<Arc<BearerToken>>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = token else {
        return next.run(request).await;
    };
    if token.authorises(request.headers()) {
        return next.run(request).await;
    }
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.to_string())
        .unwrap_or_default();
    tracing::warn!(%peer, method = %request.method(), path = %request.uri().path(), "admin: request without a valid bearer token refused");
    let mut response = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "missing or wrong bearer token (Authorization: Bearer <http.token>)",
    )
    .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"popline\""),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn only_the_token_matches() {
        let token = BearerToken::new("hunter2").unwrap();
        assert!(token.matches(b"hunter2"));
        assert!(!token.matches(b"hunter"));
        assert!(!token.matches(b"hunter22"));
        assert!(!token.matches(b""));
        assert!(token.authorises(&headers("Bearer hunter2")));
        assert!(token.authorises(&headers("bearer  hunter2 ")));
        assert!(!token.authorises(&headers("Bearer hunter3")));
        assert!(!token.authorises(&headers("Basic hunter2")));
        assert!(!token.authorises(&headers("Bearerhunter2")));
        assert!(!token.authorises(&headers("Bearer")));
        assert!(!token.authorises(&HeaderMap::new()));
        assert_eq!(BearerToken::new("").unwrap_err(), TokenError::Empty);
    }
}
