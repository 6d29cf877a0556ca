//! [`StreamKey`]: the name of a live stream on this node, `app/stream`.

use std::fmt;
use std::sync::Arc;

/// The most bytes an app or stream name may hold; longer names are refused.
pub const MAX_NAME_BYTES: usize = 256;

/// A stream's identity: the RTMP app and stream name, without any query string (`?token=...`).
///
/// Cheap to clone (one `Arc`), hashed to choose the core that owns the stream.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey(Arc<str>);

/// Why a name cannot be a stream key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamKeyError {
    /// The app or the stream name is empty.
    #[error("empty {0} name")]
    Empty(&'static str),
    /// The app or the stream name is longer than [`MAX_NAME_BYTES`].
    #[error("{0} name longer than {MAX_NAME_BYTES} bytes")]
    TooLong(&'static str),
    /// The app or stream name holds a control character, a space or a `/` where none may be.
    #[error("{0} name holds a character that is not allowed (control, space, '/', '?', '#', '%')")]
    BadCharacter(&'static str),
}

impl StreamKey {
    /// Builds the key of `app`/`stream` (any `?query` already removed), checking both names.
    pub fn new(app: &str, stream: &str) -> Result<StreamKey, StreamKeyError> {
        check_name("app", app)?;
        check_name("stream", stream)?;
        Ok(StreamKey(Arc::from(format!("{app}/{stream}"))))
    }

    /// Parses `app/stream`.
    pub fn parse(text: &str) -> Result<StreamKey, StreamKeyError> {
        let (app, stream) = text.split_once('/').ok_or(StreamKeyError::Empty("stream"))?;
        StreamKey::new(app, stream)
    }

    /// `app/stream`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The app part.
    pub fn app(&self) -> &str {
        self.0.split_once('/').map_or("", |(app, _)| app)
    }

    /// The stream-name part.
    pub fn stream(&self) -> &str {
        self.0.split_once('/').map_or("", |(_, stream)| stream)
    }
}

/// Splits an RTMP stream name as a publisher or player sends it (`name?query`) into name and query.
pub fn split_query(raw: &str) -> (&str, Option<&str>) {
    match raw.split_once('?') {
        Some((name, query)) => (name, Some(query)),
        None => (raw, None),
    }
}

fn check_name(what: &'static str, name: &str) -> Result<(), StreamKeyError> {
    if name.is_empty() {
        return Err(StreamKeyError::Empty(what));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(StreamKeyError::TooLong(what));
    }
    if name
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '/' | '?' | '#' | '%'))
    {
        return Err(StreamKeyError::BadCharacter(what));
    }
    Ok(())
}

impl fmt::Display for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamKey({})", self.0)
    }
}

impl serde::Serialize for StreamKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for StreamKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<StreamKey, D::Error> {
        let text = String::deserialize(deserializer)?;
        StreamKey::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trips_and_splits() {
        let key = StreamKey::new("live", "shop-42").unwrap();
        assert_eq!(key.as_str(), "live/shop-42");
        assert_eq!(key.app(), "live");
        assert_eq!(key.stream(), "shop-42");
        assert_eq!(StreamKey::parse("live/shop-42").unwrap(), key);
    }

    #[test]
    fn bad_names_are_refused() {
        assert_eq!(StreamKey::new("", "a"), Err(StreamKeyError::Empty("app")));
        assert_eq!(
            StreamKey::new("a", "b/c"),
            Err(StreamKeyError::BadCharacter("stream"))
        );
        assert_eq!(
            StreamKey::new("a", &"x".repeat(300)),
            Err(StreamKeyError::TooLong("stream"))
        );
        assert!(StreamKey::parse("nosep").is_err());
    }

    #[test]
    fn query_is_split_off() {
        assert_eq!(split_query("cam?token=abc"), ("cam", Some("token=abc")));
        assert_eq!(split_query("cam"), ("cam", None));
    }
}
