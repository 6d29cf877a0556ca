//! A reader of live HLS media playlists (RFC 8216 and its LL-HLS revision, 8216bis): the tags the latency
//! measurement needs, as popline and nginx-rtmp write them.
//!
//! Read: `EXT-X-MEDIA-SEQUENCE`, `EXT-X-DISCONTINUITY-SEQUENCE`, `EXTINF` and the segment URI after it,
//! `EXT-X-PROGRAM-DATE-TIME`, `EXT-X-DISCONTINUITY`, `EXT-X-PART` (LL-HLS parts; those after the last segment
//! URI are the open segment's), `EXT-X-PRELOAD-HINT`, `EXT-X-ENDLIST`; every other tag is skipped. Written by
//! hand: `m3u8-rs` does not model LL-HLS parts. Durations are read to the millisecond (both servers write
//! three decimals).

use anyhow::{bail, Context, Result};

/// One LL-HLS part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// `DURATION`, in ms.
    pub duration_ms: u64,
    /// `URI`.
    pub uri: String,
    /// `INDEPENDENT=YES`: it starts with a keyframe.
    pub independent: bool,
}

/// One media segment, complete or (LL-HLS) still open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Its media sequence number.
    pub msn: u64,
    /// `EXTINF`, in ms; `None` for the open segment of an LL-HLS playlist (parts only, no URI yet).
    pub duration_ms: Option<u64>,
    /// Its URI (`None` while open).
    pub uri: Option<String>,
    /// `EXT-X-PROGRAM-DATE-TIME`: the wall-clock time of its first sample, in Unix ms.
    pub program_date_time_ms: Option<u64>,
    /// An `EXT-X-DISCONTINUITY` comes before it.
    pub discontinuity: bool,
    /// Its parts, in order (LL-HLS lists them for the last segments only).
    pub parts: Vec<Part>,
}

impl Segment {
    /// Whether it is complete (has a duration and a URI).
    pub fn is_complete(&self) -> bool {
        self.duration_ms.is_some()
    }
}

/// A media playlist.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MediaPlaylist {
    /// `EXT-X-MEDIA-SEQUENCE`: the first segment's number.
    pub media_sequence: u64,
    /// `EXT-X-DISCONTINUITY-SEQUENCE`.
    pub discontinuity_sequence: u64,
    /// The segments in order, the open one (if any) last.
    pub segments: Vec<Segment>,
    /// `EXT-X-PRELOAD-HINT`'s URI.
    pub preload_hint: Option<String>,
    /// `EXT-X-ENDLIST`: the stream ended.
    pub ended: bool,
}

impl MediaPlaylist {
    /// The part a blocking playlist reload asks for next (`_HLS_msn`, `_HLS_part`): the one after the last
    /// part listed (RFC 8216bis, 6.2.5.2); `None` without parts.
    pub fn next_part(&self) -> Option<(u64, usize)> {
        let last = self.segments.iter().rev().find(|s| !s.parts.is_empty())?;
        Some(if last.is_complete() {
            (last.msn + 1, 0)
        } else {
            (last.msn, last.parts.len())
        })
    }
}

/// Parses a media playlist.
pub fn parse(text: &str) -> Result<MediaPlaylist> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    if lines.next() != Some("#EXTM3U") {
        bail!("not a playlist (no #EXTM3U first)");
    }
    let mut playlist = MediaPlaylist::default();
    let mut duration_ms: Option<u64> = None;
    let mut pdt: Option<u64> = None;
    let mut discontinuity = false;
    let mut parts: Vec<Part> = Vec::new();
    let mut complete = 0u64;
    for line in lines {
        let Some(tag) = line.strip_prefix('#') else {
            let Some(duration) = duration_ms.take() else {
                bail!("segment URI {line:?} without #EXTINF");
            };
            playlist.segments.push(Segment {
                msn: playlist.media_sequence + complete,
                duration_ms: Some(duration),
                uri: Some(line.to_string()),
                program_date_time_ms: pdt.take(),
                discontinuity: std::mem::take(&mut discontinuity),
                parts: std::mem::take(&mut parts),
            });
            complete += 1;
            continue;
        };
        let (name, value) = tag.split_once(':').unwrap_or((tag, ""));
        match name {
            "EXT-X-MEDIA-SEQUENCE" => {
                playlist.media_sequence = value.parse().context("EXT-X-MEDIA-SEQUENCE")?;
            }
            "EXT-X-DISCONTINUITY-SEQUENCE" => {
                playlist.discontinuity_sequence = value.parse().context("EXT-X-DISCONTINUITY-SEQUENCE")?;
            }
            "EXTINF" => {
                let seconds = value.split(',').next().unwrap_or("");
                duration_ms = Some(seconds_to_ms(seconds).context("EXTINF")?);
            }
            "EXT-X-PROGRAM-DATE-TIME" => pdt = Some(parse_rfc3339_ms(value)?),
            "EXT-X-DISCONTINUITY" => discontinuity = true,
            "EXT-X-PART" => {
                let attrs = attributes(value);
                let get = |key: &str| attrs.iter().find(|(k, _)| *k == key).map(|(_, v)| v.as_str());
                parts.push(Part {
                    duration_ms: seconds_to_ms(get("DURATION").context("EXT-X-PART without DURATION")?)
                        .context("EXT-X-PART DURATION")?,
                    uri: get("URI").context("EXT-X-PART without URI")?.to_string(),
                    independent: get("INDEPENDENT") == Some("YES"),
                });
            }
            "EXT-X-PRELOAD-HINT" => {
                let attrs = attributes(value);
                playlist.preload_hint = attrs.into_iter().find(|(k, _)| *k == "URI").map(|(_, v)| v);
            }
            "EXT-X-ENDLIST" => playlist.ended = true,
            _ => {}
        }
    }
    if !parts.is_empty() {
        playlist.segments.push(Segment {
            msn: playlist.media_sequence + complete,
            duration_ms: None,
            uri: None,
            program_date_time_ms: pdt,
            discontinuity,
            parts,
        });
    }
    Ok(playlist)
}

/// A decimal number of seconds (`2.000`, `0.5`, `6`) in ms, rounded.
fn seconds_to_ms(text: &str) -> Result<u64> {
    let seconds: f64 = text
        .trim()
        .parse()
        .with_context(|| format!("{text:?} is not a number"))?;
    if !(seconds.is_finite() && seconds >= 0.0) {
        bail!("{text:?} is not a duration");
    }
    Ok((seconds * 1000.0).round() as u64)
}

/// An attribute list (`KEY=VALUE,KEY="quoted, value"`), quotes removed.
fn attributes(list: &str) -> Vec<(&str, String)> {
    let mut out = Vec::new();
    let mut rest = list;
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            let next = quoted.get(end + 1..).unwrap_or("");
            (quoted[..end].to_string(), next.strip_prefix(',').unwrap_or(next))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].to_string(), after.get(end + 1..).unwrap_or(""))
        };
        out.push((key.trim(), value));
        rest = next;
    }
    out
}

/// An RFC 3339 date-time (`2024-05-06T07:08:09.123Z`, `...+02:00`) in Unix ms.
pub fn parse_rfc3339_ms(text: &str) -> Result<u64> {
    let bad = || format!("{text:?} is not an RFC 3339 date-time");
    let t = text.trim();
    let num = |range: std::ops::Range<usize>| -> Result<i64> {
        t.get(range)
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .with_context(bad)
    };
    if t.len() < 20
        || t.as_bytes()[4] != b'-'
        || t.as_bytes()[7] != b'-'
        || !matches!(t.as_bytes()[10], b'T' | b't' | b' ')
    {
        bail!(bad());
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        bail!(bad());
    }
    let mut rest = &t[19..];
    let mut millis = 0i64;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            bail!(bad());
        }
        let padded = format!("{:0<3}", &fraction[..digits.min(3)]);
        millis = padded.parse().with_context(bad)?;
        rest = &fraction[digits..];
    }
    let offset_minutes = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && matches!(rest.as_bytes()[0], b'+' | b'-') && rest.as_bytes()[3] == b':' => {
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            let h: i64 = rest[1..3].parse().with_context(bad)?;
            let m: i64 = rest[4..6].parse().with_context(bad)?;
            sign * (h * 60 + m)
        }
        _ => bail!(bad()),
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60;
    u64::try_from(seconds * 1000 + millis).with_context(|| format!("{text:?} is before 1970"))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What popline writes for an LL-HLS app (its playlist.rs), two complete segments and an open one.
    const POPLINE_LL: &str = "#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:7
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.500
#EXT-X-PART-INF:PART-TARGET=0.500
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MAP:URI=\"init-0.mp4?session=ab\"
#EXT-X-PROGRAM-DATE-TIME:2024-05-06T07:08:09.123Z
#EXT-X-PART:DURATION=0.480,URI=\"part-7.0.m4s?session=ab\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.480,URI=\"part-7.1.m4s?session=ab\"
#EXT-X-PART:DURATION=0.480,URI=\"part-7.2.m4s?session=ab\"
#EXT-X-PART:DURATION=0.480,URI=\"part-7.3.m4s?session=ab\"
#EXT-X-PART:DURATION=0.080,URI=\"part-7.4.m4s?session=ab\"
#EXTINF:2.000,
seg-7.m4s?session=ab
#EXT-X-PROGRAM-DATE-TIME:2024-05-06T07:08:11.123Z
#EXTINF:2.000,
seg-8.m4s?session=ab
#EXT-X-PROGRAM-DATE-TIME:2024-05-06T07:08:13.123Z
#EXT-X-PART:DURATION=0.480,URI=\"part-9.0.m4s?session=ab\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.480,URI=\"part-9.1.m4s?session=ab\"
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-9.2.m4s?session=ab\"
";

    /// What nginx-rtmp writes (ngx_rtmp_hls_write_playlist).
    const NGINX: &str = "#EXTM3U
#EXT-X-VERSION:3
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-TARGETDURATION:2
#EXTINF:2.000,
glass-0.ts
#EXTINF:2.040,
glass-1.ts
";

    #[test]
    fn reads_popline_s_ll_hls_playlist() {
        let p = parse(POPLINE_LL).unwrap();
        assert_eq!(p.media_sequence, 7);
        assert_eq!(p.segments.len(), 3);
        let s = &p.segments[0];
        assert_eq!(
            (s.msn, s.duration_ms, s.uri.as_deref()),
            (7, Some(2000), Some("seg-7.m4s?session=ab"))
        );
        assert_eq!(s.parts.len(), 5);
        assert_eq!(s.parts.iter().map(|p| p.duration_ms).sum::<u64>(), 2000);
        assert!(s.parts[0].independent && !s.parts[1].independent);
        assert_eq!(s.parts[4].uri, "part-7.4.m4s?session=ab");
        assert_eq!(s.program_date_time_ms, Some(1_714_979_289_123));
        assert!(p.segments[1].parts.is_empty());
        let open = &p.segments[2];
        assert_eq!((open.msn, open.duration_ms, open.uri.as_deref()), (9, None, None));
        assert!(!open.is_complete());
        assert_eq!(open.parts.len(), 2);
        assert_eq!(open.program_date_time_ms, Some(1_714_979_293_123));
        assert_eq!(p.preload_hint.as_deref(), Some("part-9.2.m4s?session=ab"));
        assert_eq!(p.next_part(), Some((9, 2)));
        assert!(!p.ended);
    }

    #[test]
    fn reads_nginx_rtmp_s_playlist() {
        let p = parse(NGINX).unwrap();
        assert_eq!(p.media_sequence, 0);
        let d: Vec<_> = p
            .segments
            .iter()
            .map(|s| (s.msn, s.duration_ms.unwrap()))
            .collect();
        assert_eq!(d, vec![(0, 2000), (1, 2040)]);
        assert!(p
            .segments
            .iter()
            .all(|s| s.parts.is_empty() && s.program_date_time_ms.is_none()));
        assert_eq!(p.next_part(), None);
    }

    #[test]
    fn the_next_part_after_a_completed_segment_is_the_next_segment_s_first() {
        let text = "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:3\n#EXT-X-PART:DURATION=0.5,URI=\"a\"\n#EXTINF:0.5,\ns\n\
                    #EXT-X-DISCONTINUITY\n#EXTINF:1,\nt\n#EXT-X-ENDLIST\n";
        let p = parse(text).unwrap();
        assert_eq!(p.next_part(), Some((4, 0)));
        assert!(p.segments[1].discontinuity && !p.segments[0].discontinuity);
        assert!(p.ended);
    }

    #[test]
    fn refuses_what_is_not_a_media_playlist() {
        assert!(parse("<html>").is_err());
        assert!(parse("#EXTM3U\nseg.ts\n").is_err(), "a URI without EXTINF");
        assert!(parse("#EXTM3U\n#EXTINF:abc,\nseg.ts\n").is_err());
        assert!(parse("#EXTM3U\n#EXT-X-PART:URI=\"a\"\n").is_err());
        assert!(parse("#EXTM3U\n#EXT-X-PROGRAM-DATE-TIME:yesterday\n").is_err());
    }

    #[test]
    fn reads_rfc3339_as_popline_writes_it() {
        for unix_ms in [0u64, 1_000, 951_782_400_000, 1_714_979_289_123, 4_102_444_799_999] {
            let text = relay::bans::rfc3339_ms(unix_ms);
            assert_eq!(parse_rfc3339_ms(&text).unwrap(), unix_ms, "{text}");
        }
        assert_eq!(
            parse_rfc3339_ms("2024-05-06T09:08:09.1+02:00").unwrap(),
            1_714_979_289_100
        );
        assert_eq!(
            parse_rfc3339_ms("2024-05-06T07:08:09Z").unwrap(),
            1_714_979_289_000
        );
        assert_eq!(
            parse_rfc3339_ms("2024-05-06T07:08:09.123456Z").unwrap(),
            1_714_979_289_123
        );
        for bad in [
            "2024-05-06",
            "2024-13-06T07:08:09Z",
            "2024-05-06T07:08:09",
            "2024-05-06T07:08:09.Z",
        ] {
            assert!(parse_rfc3339_ms(bad).is_err(), "{bad}");
        }
    }
}
