//! Glass-to-playlist latency from the playlists a poller reads, sans-IO: when a segment (or an LL-HLS part)
//! first appears in a playlist read at time T, the capture time C of its newest frame comes from the
//! publisher's [`SendLog`], and the sample is T - C.
//!
//! Placing a segment on the publisher's media timeline: the first segment seen is anchored ([`Anchor`]), and
//! every later one starts where the one before it ended, by the durations the playlist gives (`EXTINF` for a
//! segment, `EXT-X-PART` durations within one): servers cut at frames, so a segment's end is the media time
//! of the frame that closed it, and its newest frame is the last one the publisher sent before that. The
//! anchor is nginx-rtmp's first fragment (number 0 starts at the stream's first keyframe, media time 0: the
//! poller starts before the publisher's first GOP is complete) or, for popline, the first segment's
//! `EXT-X-PROGRAM-DATE-TIME` (the capture time of its first frame): the keyframe the publisher sent nearest
//! it. Every later segment's `EXT-X-PROGRAM-DATE-TIME` is checked against the send time of the frame the
//! accumulated durations say it starts with (`program_date_time_offsets_us`).
//!
//! The newest frame is the newest by media time before the end, audio or video, as the media timeline says
//! the segment holds it. nginx-rtmp buffers audio (`hls_max_audio_delay`) and writes what it holds at a cut
//! into the next fragment, so its fragment may end with older audio than that: the sample then starts later
//! than the fragment's true newest frame, which shortens nginx-rtmp's latency by up to a video frame
//! interval (in the baseline's favour).
//!
//! Each read also notes the newest unit it lists and the capture time of that unit's newest frame
//! ([`GlassTracker::newest_seen`]), for freshness ([`super::freshness`]): how old the newest media a player
//! can fetch is, over time.
//!
//! Only what appears after the first playlist is sampled (what the first one lists appeared before the
//! poller looked). A sample can never be negative (a server lists a segment only after the frame that ends it
//! arrived, which was sent after the segment's newest frame); one that is means the placement is wrong, and
//! the tracker stops with that error rather than report numbers from a wrong mapping.

use super::freshness::NewestSeen;
use super::playlist::MediaPlaylist;
use crate::fanout::clock;
use crate::fanout::send_log::SendLog;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Largest distance between a first segment's `EXT-X-PROGRAM-DATE-TIME` and the keyframe it is taken to be,
/// in microseconds (keyframes are seconds apart; the node stamps a frame when it arrives, within a
/// millisecond of its sending on loopback).
pub const MAX_ANCHOR_OFFSET_US: u64 = 250_000;

/// What a tracker samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Complete segments (plain HLS).
    Segment,
    /// LL-HLS parts.
    Part,
}

impl Unit {
    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Unit::Segment => "segment",
            Unit::Part => "part",
        }
    }
}

/// Where the first segment a tracker sees starts on the publisher's media timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    /// Segment `msn` starts at media time `start_ms`.
    Msn {
        /// The segment's media sequence number.
        msn: u64,
        /// Its start, in ms of media time.
        start_ms: u64,
    },
    /// The first segment's `EXT-X-PROGRAM-DATE-TIME` is the capture time of its first frame: it starts at
    /// the keyframe the publisher sent nearest that time.
    ProgramDateTime,
}

/// One latency sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// The segment's media sequence number.
    pub msn: u64,
    /// The part's index in it, for a part.
    pub part: Option<usize>,
    /// Media time of its end, in ms.
    pub end_ms: u64,
    /// Media time of its newest frame, in ms.
    pub newest_ms: u64,
    /// First seen in a playlist minus the newest frame's send time, in microseconds.
    pub latency_us: u64,
    /// A lower bound of the latency: when the last read that did not list it was requested, minus the newest
    /// frame's send time, in microseconds (0 when that was before the frame was sent; `None` without such a
    /// read). The true latency is between this and `latency_us`.
    pub lower_us: Option<u64>,
}

/// The latency samples of one playlist's poller.
#[derive(Debug)]
pub struct GlassTracker {
    unit: Unit,
    anchor: Anchor,
    log: Arc<SendLog>,
    /// Media time at which each segment known starts (the next one's included).
    starts: BTreeMap<u64, u64>,
    /// The segment the anchor placed.
    anchor_msn: u64,
    /// Whether the first playlist has been read.
    started: bool,
    /// The newest complete segment already seen.
    seen_segment: Option<u64>,
    /// The newest part already seen.
    seen_part: Option<(u64, usize)>,
    samples: Vec<Sample>,
    pdt_offsets_us: Vec<i64>,
    durations_ms: Vec<u64>,
    playlists: u64,
    /// Per read: the newest unit listed, placed (for freshness).
    newest_seen: Vec<NewestSeen>,
}

impl GlassTracker {
    /// A tracker of `unit`s placed by `anchor` on the timeline of the publisher that logged `log`.
    pub fn new(unit: Unit, anchor: Anchor, log: Arc<SendLog>) -> Self {
        Self {
            unit,
            anchor,
            log,
            starts: BTreeMap::new(),
            anchor_msn: 0,
            started: false,
            seen_segment: None,
            seen_part: None,
            samples: Vec::new(),
            pdt_offsets_us: Vec::new(),
            durations_ms: Vec::new(),
            playlists: 0,
            newest_seen: Vec::new(),
        }
    }

    /// The samples so far.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// For each complete segment that appeared after the first playlist and carried an
    /// `EXT-X-PROGRAM-DATE-TIME`: that time minus the send time of the frame the durations say it starts with,
    /// in microseconds (about 0 when the accumulated durations and the server's clock agree).
    pub fn program_date_time_offsets_us(&self) -> &[i64] {
        &self.pdt_offsets_us
    }

    /// Durations of the units sampled, in ms.
    pub fn durations_ms(&self) -> &[u64] {
        &self.durations_ms
    }

    /// Playlists read.
    pub fn playlists(&self) -> u64 {
        self.playlists
    }

    /// For each read that listed a unit it could place: when it arrived, and the capture time of the newest
    /// frame of the newest unit it listed (complete segment, or for [`Unit::Part`] part or segment).
    pub fn newest_seen(&self) -> &[NewestSeen] {
        &self.newest_seen
    }

    /// Reads one playlist, received whole at `seen_us` (on [`clock`]); `not_before_us` is when the previous
    /// playlist read was requested (what this one lists anew was not there yet then).
    pub fn observe(
        &mut self,
        playlist: &MediaPlaylist,
        seen_us: u64,
        not_before_us: Option<u64>,
    ) -> Result<()> {
        let seen = (seen_us, not_before_us);
        self.playlists += 1;
        let Some(first) = playlist.segments.first() else {
            return Ok(());
        };
        if self.starts.is_empty() {
            let (msn, start_ms) = self.anchor_of(first)?;
            self.anchor_msn = msn;
            self.starts.insert(msn, start_ms);
        }
        // nginx-rtmp marks its first fragment a discontinuity; one after the anchor is a restart.
        if let Some(s) = playlist
            .segments
            .iter()
            .find(|s| s.discontinuity && s.msn > self.anchor_msn)
        {
            bail!(
                "segment {} follows a discontinuity: the stream restarted and its media times no longer \
                 follow the publisher's",
                s.msn
            );
        }
        let first_playlist = !self.started;
        self.started = true;
        let oldest_known = self.starts.keys().next().copied().unwrap_or(0);
        // The media time at which the newest unit a player can fetch from this playlist ends.
        let mut newest_end: Option<u64> = None;
        for segment in &playlist.segments {
            let Some(&start) = self.starts.get(&segment.msn) else {
                if segment.msn < oldest_known {
                    continue; // before the anchor: never sampled
                }
                bail!(
                    "segment {} cannot be placed: segment {} was never seen complete (polled too rarely?)",
                    segment.msn,
                    segment.msn.saturating_sub(1)
                );
            };
            let mut part_end = start;
            for (index, part) in segment.parts.iter().enumerate() {
                part_end += part.duration_ms;
                if self.unit == Unit::Part {
                    newest_end = newest_end.max(Some(part_end));
                }
                let id = (segment.msn, index);
                if self.seen_part.is_some_and(|seen| id <= seen) {
                    continue;
                }
                self.seen_part = Some(id);
                if self.unit == Unit::Part && !first_playlist {
                    self.sample(segment.msn, Some(index), part_end, seen)?;
                    self.durations_ms.push(part.duration_ms);
                }
            }
            let Some(duration) = segment.duration_ms else {
                continue;
            };
            let end = start + duration;
            newest_end = newest_end.max(Some(end));
            self.starts.insert(segment.msn + 1, end);
            if self.seen_segment.is_some_and(|seen| segment.msn <= seen) {
                continue;
            }
            self.seen_segment = Some(segment.msn);
            if first_playlist {
                continue;
            }
            if self.unit == Unit::Segment {
                self.sample(segment.msn, None, end, seen)?;
                self.durations_ms.push(duration);
            }
            if let (Some(pdt), Some(first)) = (segment.program_date_time_ms, self.log.first_at(start)) {
                let offset = i128::from(clock::at_unix_ms(pdt)) - i128::from(first.send_us);
                self.pdt_offsets_us
                    .push(offset.clamp(i64::MIN.into(), i64::MAX.into()) as i64);
            }
        }
        // Starts of segments that slid out of every playlist are no longer needed.
        self.starts = self.starts.split_off(&first.msn);
        if let Some(newest) = newest_end.and_then(|end| self.log.newest_before(end)) {
            self.newest_seen.push(NewestSeen {
                seen_us,
                capture_us: newest.send_us,
            });
        }
        Ok(())
    }

    /// The anchor's segment and start, for a first playlist beginning with `first`.
    fn anchor_of(&self, first: &super::playlist::Segment) -> Result<(u64, u64)> {
        match self.anchor {
            Anchor::Msn { msn, start_ms } => {
                if first.msn > msn {
                    bail!(
                        "the first playlist read starts at segment {}: segment {msn}, whose start is known, \
                         had already left it",
                        first.msn
                    );
                }
                Ok((msn, start_ms))
            }
            Anchor::ProgramDateTime => {
                let pdt = first.program_date_time_ms.with_context(|| {
                    format!(
                        "segment {} has no EXT-X-PROGRAM-DATE-TIME to place it by",
                        first.msn
                    )
                })?;
                let at_us = clock::at_unix_ms(pdt);
                let (key, offset_us) = self
                    .log
                    .keyframe_nearest(at_us)
                    .context("the publisher has sent no keyframe to place the first segment by")?;
                if offset_us > MAX_ANCHOR_OFFSET_US {
                    bail!(
                        "segment {}'s EXT-X-PROGRAM-DATE-TIME is {:.0} ms from the nearest keyframe sent: it \
                         cannot be placed on the publisher's timeline",
                        first.msn,
                        offset_us as f64 / 1e3
                    );
                }
                Ok((first.msn, key.ts_ms))
            }
        }
    }

    fn sample(&mut self, msn: u64, part: Option<usize>, end_ms: u64, seen: (u64, Option<u64>)) -> Result<()> {
        let (seen_us, not_before_us) = seen;
        let what = match part {
            Some(index) => format!("part {msn}.{index}"),
            None => format!("segment {msn}"),
        };
        let newest = self.log.newest_before(end_ms).with_context(|| {
            format!(
                "{what} ends at media time {end_ms} ms, which the publisher has not sent: the server's timeline \
                 and the publisher's disagree"
            )
        })?;
        if seen_us < newest.send_us {
            bail!(
                "{what} appeared {:.1} ms before its newest frame (media time {} ms) was sent: it is placed \
                 wrong on the publisher's timeline",
                (newest.send_us - seen_us) as f64 / 1e3,
                newest.ts_ms
            );
        }
        self.samples.push(Sample {
            msn,
            part,
            end_ms,
            newest_ms: newest.ts_ms,
            latency_us: seen_us - newest.send_us,
            lower_us: not_before_us.map(|t| t.saturating_sub(newest.send_us)),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::playlist::parse;
    use crate::fanout::send_log::Sent;

    /// A publisher's log: 25 fps video (keyframe every 2 s) and audio every 23 ms, media time t sent at
    /// clock time 10 s + t (+ 100 us).
    fn log(until_ms: u64) -> Arc<SendLog> {
        let log = SendLog::new();
        let mut video = 0;
        let mut audio = 0;
        while video.min(audio) < until_ms {
            let (ts_ms, keyframe) = if video <= audio {
                video += 40;
                (video - 40, (video - 40) % 2000 == 0)
            } else {
                audio += 23;
                (audio - 23, false)
            };
            log.record(Sent {
                ts_ms,
                send_us: 10_000_000 + ts_ms * 1000 + 100,
                keyframe,
            });
        }
        Arc::new(log)
    }

    fn nginx(first: u64, durations: &[&str]) -> String {
        let mut p =
            format!("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-MEDIA-SEQUENCE:{first}\n#EXT-X-TARGETDURATION:2\n");
        for (i, d) in durations.iter().enumerate() {
            p.push_str(&format!("#EXTINF:{d},\nglass-{}.ts\n", first + i as u64));
        }
        p
    }

    #[test]
    fn samples_new_segments_from_an_anchored_first_fragment() {
        let log = log(20_000);
        let mut t = GlassTracker::new(Unit::Segment, Anchor::Msn { msn: 0, start_ms: 0 }, log);
        // The first playlist: segment 0 [0, 2000) was there already: not sampled.
        t.observe(&parse(&nginx(0, &["2.000"])).unwrap(), 12_030_000, None)
            .unwrap();
        assert!(t.samples().is_empty());
        // Segment 1 [2000, 4040) appears at 14.060 s; its newest frame is the audio at 4025, sent at 14.0251 s.
        t.observe(
            &parse(&nginx(0, &["2.000", "2.040"])).unwrap(),
            14_060_000,
            Some(14_010_000),
        )
        .unwrap();
        // Read again: nothing new.
        t.observe(&parse(&nginx(0, &["2.000", "2.040"])).unwrap(), 14_110_000, None)
            .unwrap();
        // The window slid: segment 2 [4040, 6000).
        t.observe(&parse(&nginx(1, &["2.040", "1.960"])).unwrap(), 16_010_000, None)
            .unwrap();
        let s = t.samples();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].msn, s[0].end_ms, s[0].newest_ms), (1, 4040, 4025));
        assert_eq!(s[0].latency_us, 14_060_000 - 14_025_100);
        assert_eq!(
            s[0].lower_us,
            Some(0),
            "the read before was requested before the newest frame was sent"
        );
        assert_eq!((s[1].msn, s[1].end_ms, s[1].newest_ms), (2, 6000, 5980));
        assert_eq!(s[1].latency_us, 16_010_000 - 15_980_100);
        assert_eq!(s[1].lower_us, None);
        assert_eq!(t.durations_ms(), &[2040, 1960]);
        assert_eq!(t.playlists(), 4);
        // Freshness: each read's newest complete segment and its newest frame's send time (segment 0 ends at
        // 2000: audio at 1978; segment 1 at 4040: audio at 4025; segment 2 at 6000: video at 5960 and audio
        // at 5980).
        let newest: Vec<(u64, u64)> = t
            .newest_seen()
            .iter()
            .map(|n| (n.seen_us, n.capture_us))
            .collect();
        assert_eq!(
            newest,
            vec![
                (12_030_000, 11_978_100),
                (14_060_000, 14_025_100),
                (14_110_000, 14_025_100),
                (16_010_000, 15_980_100),
            ]
        );
        assert!(
            t.program_date_time_offsets_us().is_empty(),
            "nginx-rtmp writes none"
        );
    }

    #[test]
    fn a_wrong_placement_is_an_error_not_a_number() {
        // Anchored a GOP too late, segment 1 would end at media time 6000, sent after it was listed.
        let mut t = GlassTracker::new(
            Unit::Segment,
            Anchor::Msn {
                msn: 0,
                start_ms: 2000,
            },
            log(20_000),
        );
        t.observe(&parse(&nginx(0, &["2.000"])).unwrap(), 12_030_000, None)
            .unwrap();
        let err = t
            .observe(&parse(&nginx(0, &["2.000", "2.000"])).unwrap(), 14_060_000, None)
            .unwrap_err();
        assert!(err.to_string().contains("before its newest frame"), "{err}");
        // A segment that ends past what the publisher sent.
        let mut t = GlassTracker::new(Unit::Segment, Anchor::Msn { msn: 0, start_ms: 0 }, log(3_000));
        t.observe(&parse(&nginx(0, &["2.000"])).unwrap(), 12_030_000, None)
            .unwrap();
        let err = t
            .observe(&parse(&nginx(0, &["2.000", "2.000"])).unwrap(), 14_060_000, None)
            .unwrap_err();
        assert!(err.to_string().contains("has not sent"), "{err}");
        // The anchor's segment had left the playlist before the first read.
        let mut t = GlassTracker::new(Unit::Segment, Anchor::Msn { msn: 0, start_ms: 0 }, log(20_000));
        assert!(t
            .observe(&parse(&nginx(3, &["2.000"])).unwrap(), 20_000_000, None)
            .is_err());
        // A gap: segment 1 never seen complete.
        let mut t = GlassTracker::new(Unit::Segment, Anchor::Msn { msn: 0, start_ms: 0 }, log(20_000));
        t.observe(&parse(&nginx(0, &["2.000"])).unwrap(), 12_030_000, None)
            .unwrap();
        assert!(t
            .observe(&parse(&nginx(2, &["2.000"])).unwrap(), 16_030_000, None)
            .is_err());
        // A discontinuity after the first segment (nginx-rtmp marks its first fragment one: that is fine).
        let mut t = GlassTracker::new(Unit::Segment, Anchor::Msn { msn: 0, start_ms: 0 }, log(20_000));
        let first = "#EXTM3U\n#EXT-X-DISCONTINUITY\n#EXTINF:2,\na.ts\n";
        t.observe(&parse(first).unwrap(), 12_010_000, None).unwrap();
        let restarted =
            "#EXTM3U\n#EXT-X-DISCONTINUITY\n#EXTINF:2,\na.ts\n#EXT-X-DISCONTINUITY\n#EXTINF:2,\nb.ts\n";
        let err = t
            .observe(&parse(restarted).unwrap(), 14_000_000, None)
            .unwrap_err();
        assert!(err.to_string().contains("discontinuity"), "{err}");
    }

    /// An LL-HLS playlist as popline writes it: segments starting at `first` of `segments` parts each
    /// (480 ms, 480 ms, ... as given), the last one open with `open` parts, each segment's
    /// PROGRAM-DATE-TIME at `pdt0_ms` plus its start.
    fn ll(first: u64, segments: &[&[u64]], open: &[u64], start_ms: u64, pdt0_ms: u64) -> String {
        let mut p = format!("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:{first}\n#EXT-X-PART-INF:PART-TARGET=0.500\n");
        let mut at = start_ms;
        let pdt = |at: u64| relay::bans::rfc3339_ms(pdt0_ms + at);
        for (i, parts) in segments.iter().enumerate() {
            p.push_str(&format!("#EXT-X-PROGRAM-DATE-TIME:{}\n", pdt(at)));
            let msn = first + i as u64;
            for (j, d) in parts.iter().enumerate() {
                p.push_str(&format!(
                    "#EXT-X-PART:DURATION={:.3},URI=\"part-{msn}.{j}.m4s\"\n",
                    *d as f64 / 1e3
                ));
            }
            let total: u64 = parts.iter().sum();
            p.push_str(&format!("#EXTINF:{:.3},\nseg-{msn}.m4s\n", total as f64 / 1e3));
            at += total;
        }
        if !open.is_empty() {
            let msn = first + segments.len() as u64;
            p.push_str(&format!("#EXT-X-PROGRAM-DATE-TIME:{}\n", pdt(at)));
            for (j, d) in open.iter().enumerate() {
                p.push_str(&format!(
                    "#EXT-X-PART:DURATION={:.3},URI=\"part-{msn}.{j}.m4s\"\n",
                    *d as f64 / 1e3
                ));
            }
        }
        p
    }

    #[test]
    fn samples_ll_hls_parts_placed_by_program_date_time() {
        clock::epoch();
        let sent = log(20_000);
        // The wall time of media time 0: its send time on the clock, in Unix ms.
        let pdt0_ms = clock::unix_us(10_000_000) / 1000;
        let gop: &[u64] = &[480, 480, 480, 480, 80];
        let mut t = GlassTracker::new(Unit::Part, Anchor::ProgramDateTime, sent);
        // First read: segment 3 [6000, 8000) complete, segment 4 open with one part: nothing sampled.
        t.observe(
            &parse(&ll(3, &[gop], &[480], 6000, pdt0_ms)).unwrap(),
            18_600_000,
            None,
        )
        .unwrap();
        assert!(t.samples().is_empty());
        // Part 4.1 [8480, 8960) appears at 19.0 s; its newest frame is the audio at 8947.
        t.observe(
            &parse(&ll(3, &[gop], &[480, 480], 6000, pdt0_ms)).unwrap(),
            19_000_000,
            None,
        )
        .unwrap();
        // Parts 4.2 to 4.4 and the segment's completion in one read.
        t.observe(
            &parse(&ll(3, &[gop, gop], &[], 6000, pdt0_ms)).unwrap(),
            20_050_000,
            None,
        )
        .unwrap();
        let s = t.samples();
        assert_eq!(s.len(), 4);
        assert_eq!(
            (s[0].msn, s[0].part, s[0].end_ms, s[0].newest_ms),
            (4, Some(1), 8960, 8947)
        );
        assert_eq!(s[0].latency_us, 19_000_000 - 18_947_100);
        assert_eq!(s[0].lower_us, None);
        assert_eq!((s[3].part, s[3].end_ms), (Some(4), 10_000));
        assert_eq!(t.durations_ms(), &[480, 480, 480, 80]);
        // Freshness follows the newest part: 4.0 (ends 8480: audio at 8464), 4.1 (8960: audio at 8947),
        // then the part that completed segment 4 (10 000: audio at 9982).
        let captures: Vec<u64> = t.newest_seen().iter().map(|n| n.capture_us).collect();
        assert_eq!(captures, vec![18_464_100, 18_947_100, 19_982_100]);
        // Segment 4's PROGRAM-DATE-TIME matches the send time of its first frame (to the millisecond the
        // playlist writes, and the 0.1 ms the log adds).
        let offsets = t.program_date_time_offsets_us();
        assert_eq!(offsets.len(), 1);
        assert!(offsets[0].abs() < 1_100, "{offsets:?}");
        // Placed by PDT on a timeline where no keyframe is near: refused.
        let mut t = GlassTracker::new(Unit::Part, Anchor::ProgramDateTime, log(20_000));
        assert!(t
            .observe(
                &parse(&ll(3, &[gop], &[], 6000, pdt0_ms + 1000)).unwrap(),
                18_600_000,
                None
            )
            .is_err());
    }
}
