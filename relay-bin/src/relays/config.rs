//! The `[relays]` section: static pushes of streams published here to other RTMP servers, and static pulls
//! of streams from an RTMP origin, each checked at start ([`RelaysConfig::check`]).

use serde::{Deserialize, Serialize};

use crate::stream_key::StreamKey;

/// Static relays: `[[relays.push]]` and `[[relays.pull]]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RelaysConfig {
    /// Streams published on this node, re-published to other RTMP servers (nginx-rtmp, SRS, another
    /// popline, any RTMP ingest) while their publisher is live.
    pub push: Vec<PushConfig>,
    /// Streams played from an RTMP origin and published on this node under a local name, for as long as the
    /// node runs (reconnecting with a backoff).
    pub pull: Vec<PullConfig>,
}

/// One static push.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    /// The app whose streams are pushed.
    pub app: String,
    /// Only this stream of the app (default: every stream of the app).
    #[serde(default)]
    pub stream: Option<String>,
    /// Where to: `rtmp://HOST[:PORT]/APP`; the stream's name is appended.
    pub url: String,
}

/// One static pull.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PullConfig {
    /// The origin's stream: `rtmp://HOST[:PORT]/APP/STREAM`.
    pub url: String,
    /// The local name it is published under: `app/stream`.
    pub stream: String,
}

/// An RTMP URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtmpUrl {
    /// `HOST:PORT` (port 1935 when the URL has none).
    pub authority: String,
    /// The RTMP app.
    pub app: String,
    /// The stream name, when the URL has one.
    pub stream: Option<String>,
}

impl RtmpUrl {
    /// Parses `rtmp://HOST[:PORT]/APP[/STREAM]`.
    pub fn parse(url: &str) -> Result<RtmpUrl, String> {
        let rest = url
            .strip_prefix("rtmp://")
            .ok_or_else(|| format!("{url:?} is not an rtmp:// URL"))?;
        let (authority, path) = rest
            .split_once('/')
            .ok_or_else(|| format!("{url:?} has no app (rtmp://HOST[:PORT]/APP)"))?;
        if authority.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        let authority = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            && !authority.ends_with(']')
        {
            authority.to_string()
        } else {
            format!("{authority}:1935")
        };
        let (app, stream) = match path.split_once('/') {
            Some((app, stream)) if !stream.is_empty() => (app, Some(stream.to_string())),
            Some((app, _)) => (app, None),
            None => (path, None),
        };
        if app.is_empty() {
            return Err(format!("{url:?} has no app (rtmp://HOST[:PORT]/APP)"));
        }
        Ok(RtmpUrl {
            authority,
            app: app.to_string(),
            stream,
        })
    }
}

impl PushConfig {
    /// Whether `key`, published here, is pushed by this rule.
    pub fn matches(&self, key: &StreamKey) -> bool {
        key.app() == self.app && self.stream.as_deref().is_none_or(|s| s == key.stream())
    }
}

impl RelaysConfig {
    /// Checks every URL and name; the error names the entry.
    pub fn check(&self) -> Result<(), String> {
        for (i, push) in self.push.iter().enumerate() {
            let url = RtmpUrl::parse(&push.url).map_err(|e| format!("relays.push[{i}].url: {e}"))?;
            if url.stream.is_some() {
                return Err(format!(
                    "relays.push[{i}].url: give rtmp://HOST[:PORT]/APP only: the stream's name is appended"
                ));
            }
            let name = push.stream.as_deref().unwrap_or("x");
            StreamKey::new(&push.app, name).map_err(|e| format!("relays.push[{i}]: {e}"))?;
        }
        for (i, pull) in self.pull.iter().enumerate() {
            let url = RtmpUrl::parse(&pull.url).map_err(|e| format!("relays.pull[{i}].url: {e}"))?;
            if url.stream.is_none() {
                return Err(format!(
                    "relays.pull[{i}].url: name the stream: rtmp://HOST[:PORT]/APP/STREAM"
                ));
            }
            StreamKey::parse(&pull.stream).map_err(|e| format!("relays.pull[{i}].stream: {e}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls_parse_with_and_without_port_and_stream() {
        let u = RtmpUrl::parse("rtmp://origin.example/live/cam1").unwrap();
        assert_eq!(
            u,
            RtmpUrl {
                authority: "origin.example:1935".into(),
                app: "live".into(),
                stream: Some("cam1".into())
            }
        );
        let u = RtmpUrl::parse("rtmp://127.0.0.1:19350/live").unwrap();
        assert_eq!((u.authority.as_str(), u.stream), ("127.0.0.1:19350", None));
        for bad in [
            "http://x/live",
            "rtmp://",
            "rtmp://host",
            "rtmp:///live",
            "rtmp://host/",
        ] {
            assert!(RtmpUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_push_url_with_a_stream_and_a_pull_url_without_one_are_refused() {
        let push = |url: &str| RelaysConfig {
            push: vec![PushConfig {
                app: "live".into(),
                stream: None,
                url: url.into(),
            }],
            pull: vec![],
        };
        assert!(push("rtmp://h/live").check().is_ok());
        assert!(push("rtmp://h/live/x")
            .check()
            .unwrap_err()
            .contains("relays.push[0].url"));
        let pull = RelaysConfig {
            push: vec![],
            pull: vec![PullConfig {
                url: "rtmp://h/live".into(),
                stream: "live/x".into(),
            }],
        };
        assert!(pull.check().unwrap_err().contains("relays.pull[0].url"));
    }
}
