//! Judging what the viewers got against the budget.
//!
//! The judged frames are the video frames the publisher sent in the measured window (frame numbers
//! `first..end`). For each viewer and judged frame:
//!
//! - **on time**: it arrived within the budget of its send stamp (the publisher stamps each frame as it writes
//!   it, at the frame's capture time on the real-time schedule);
//! - **undecodable**: it arrived although a reference it needs did not (an earlier key or P frame of its GOP,
//!   in decode order; B frames are referenced by nothing). A relay must never deliver one;
//! - **shown**: a player with a fixed playout delay of the budget shows it: it and every reference it needs
//!   arrived within the budget. Every frame not shown is one frame interval (1/30 s) in which the player had
//!   nothing new to show, so the stall ratio is the share of judged frames not shown.

use super::stream::FrameKind;
use super::viewer::Arrival;
use std::collections::HashMap;

/// One viewer's counts over the judged frames.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ViewerVerdict {
    /// Frames that arrived within the budget.
    pub on_time: u64,
    /// Frames that arrived at all (before the viewer stopped).
    pub delivered: u64,
    /// Frames that arrived although a reference they need did not.
    pub undecodable: u64,
    /// Frames a player at a fixed playout delay of the budget could show.
    pub shown: u64,
}

/// Judges one viewer's arrivals: frames `first..end` are judged; `kind_of` gives a frame's kind by number
/// (for frames that never arrived); `budget_us` is the budget.
pub fn judge_viewer(
    arrivals: &[Arrival],
    first: u32,
    end: u32,
    budget_us: u64,
    kind_of: impl Fn(u32) -> FrameKind,
) -> ViewerVerdict {
    let mut by_seq: HashMap<u32, &Arrival> = HashMap::with_capacity(arrivals.len());
    for a in arrivals {
        by_seq.entry(a.seq).or_insert(a);
    }
    let mut verdict = ViewerVerdict::default();
    // Decoding starts at the viewer's first keyframe; before it nothing can be shown.
    let Some(start) = arrivals
        .iter()
        .filter(|a| a.kind == FrameKind::Key && a.seq < end)
        .map(|a| a.seq)
        .min()
    else {
        return verdict;
    };
    // Whether a reference of the current GOP is missing: at all / within the budget.
    let mut broken = false;
    let mut broken_late = false;
    for seq in start.min(first)..end {
        let arrival = by_seq.get(&seq);
        let arrived = arrival.is_some() && seq >= start;
        let on_time = arrival.is_some_and(|a| a.arrival_us.saturating_sub(a.send_us) <= budget_us);
        let kind = arrival.map_or_else(|| kind_of(seq), |a| a.kind);
        let (decodable, showable) = match kind {
            FrameKind::Key => (arrived, on_time && arrived),
            _ => (arrived && !broken, on_time && arrived && !broken_late),
        };
        if seq >= first {
            verdict.delivered += u64::from(arrival.is_some());
            verdict.on_time += u64::from(on_time);
            verdict.undecodable += u64::from(arrival.is_some() && !decodable);
            verdict.shown += u64::from(showable);
        }
        match kind {
            FrameKind::Key => {
                broken = !arrived;
                broken_late = !(arrived && on_time);
            }
            FrameKind::Reference => {
                broken |= !arrived;
                broken_late |= !(arrived && on_time);
            }
            FrameKind::Disposable => {}
        }
    }
    verdict
}

/// Replaces each arrival's send stamp by its frame's capture time: the publisher's schedule
/// (`start + due_ms(seq)`), where `start` is the earliest `send_us - due` over every arrival (a send is
/// never early, only late when its socket blocks). Judging from the schedule keeps a publisher that fell
/// behind, because a relay stopped reading, from hiding that delay.
pub fn to_capture_times(logs: &mut [Vec<Arrival>], due_us: impl Fn(u32) -> u64) {
    let Some(start) = logs
        .iter()
        .flatten()
        .map(|a| a.send_us.saturating_sub(due_us(a.seq)))
        .min()
    else {
        return;
    };
    for a in logs.iter_mut().flatten() {
        a.send_us = start + due_us(a.seq);
    }
}

/// Latencies (send stamp to arrival, milliseconds) of the judged frames, over every viewer. A frame a viewer
/// never got counts as `missing_ms`: the viewers listen that long past the last judged frame's capture
/// before they stop, so it is a lower bound of that frame's latency (leaving lost frames out would make a
/// variant that loses frames look faster than one that delivers them late).
pub fn latencies_ms(logs: &[&[Arrival]], first: u32, end: u32, missing_ms: f64) -> Vec<f64> {
    let mut out = Vec::new();
    for arrivals in logs {
        let mut got = std::collections::HashSet::new();
        for a in arrivals.iter().filter(|a| (first..end).contains(&a.seq)) {
            if got.insert(a.seq) {
                out.push(a.arrival_us.saturating_sub(a.send_us) as f64 / 1e3);
            }
        }
        let missing = (end.saturating_sub(first) as usize).saturating_sub(got.len());
        out.extend(std::iter::repeat_n(missing_ms, missing));
    }
    out
}

/// The `p`-th percentile (0..=100) of `samples`, nearest rank; `None` when empty.
pub fn percentile(samples: &mut [f64], p: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples.get(rank.clamp(1, samples.len()) - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use FrameKind::{Disposable as B, Key as I, Reference as P};

    /// GOP of 6 in decode order: I P B B P B.
    fn kind(seq: u32) -> FrameKind {
        [I, P, B, B, P, B][(seq % 6) as usize]
    }

    fn arrive(seq: u32, late_ms: u64) -> Arrival {
        Arrival {
            seq,
            kind: kind(seq),
            send_us: u64::from(seq) * 33_000,
            arrival_us: u64::from(seq) * 33_000 + late_ms * 1000,
        }
    }

    #[test]
    fn a_lost_reference_makes_the_rest_of_its_gop_undecodable_but_a_lost_b_frame_does_not() {
        let budget = 100_000;
        // Frames 0..12 (two GOPs); frame 3 (B) and frame 7 (P) lost; frame 10 (B) late.
        let arrivals: Vec<Arrival> = (0..12)
            .filter(|s| ![3, 7].contains(s))
            .map(|s| arrive(s, if s == 10 { 300 } else { 20 }))
            .collect();
        let v = judge_viewer(&arrivals, 0, 12, budget, kind);
        assert_eq!(v.delivered, 10);
        assert_eq!(v.on_time, 9);
        // After P 7 is lost: 8, 9, 10, 11 arrive but cannot be decoded.
        assert_eq!(v.undecodable, 4);
        // Shown: 0..6 but 3 (5 frames), 6 (the key): 6 of 12.
        assert_eq!(v.shown, 6);
    }

    #[test]
    fn a_late_reference_stalls_the_player_without_being_undecodable() {
        let arrivals: Vec<Arrival> = (0..6).map(|s| arrive(s, if s == 1 { 500 } else { 10 })).collect();
        let v = judge_viewer(&arrivals, 0, 6, 100_000, kind);
        assert_eq!((v.delivered, v.on_time, v.undecodable, v.shown), (6, 5, 0, 1));
    }

    #[test]
    fn frames_before_the_viewer_s_first_keyframe_count_as_not_shown() {
        let arrivals: Vec<Arrival> = (2..12).map(|s| arrive(s, 10)).collect();
        let v = judge_viewer(&arrivals, 0, 12, 100_000, kind);
        assert_eq!(v.on_time, 10);
        assert_eq!(v.shown, 6);
        assert_eq!(v.undecodable, 4, "2..6 arrive with no keyframe before them");
        assert_eq!(judge_viewer(&[], 0, 12, 100_000, kind), ViewerVerdict::default());
    }

    #[test]
    fn capture_times_follow_the_publisher_s_schedule() {
        // Frame 2 was written 50 ms late: judged from its due time.
        let mut logs = vec![vec![
            arrive(1, 10),
            Arrival {
                send_us: 2 * 33_000 + 50_000,
                ..arrive(2, 60)
            },
        ]];
        to_capture_times(&mut logs, |seq| u64::from(seq) * 33_000);
        assert_eq!(logs[0][1].send_us, 66_000);
        assert_eq!(logs[0][1].arrival_us - logs[0][1].send_us, 60_000);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&mut s, 50.0), Some(50.0));
        assert_eq!(percentile(&mut s, 99.0), Some(99.0));
        assert_eq!(percentile(&mut [], 50.0), None);
        let logs = [arrive(1, 40), arrive(2, 60), arrive(20, 1)];
        let mut all = latencies_ms(&[&logs], 0, 10, 780.0);
        assert_eq!(all[..2], [40.0, 60.0]);
        assert_eq!(all.len(), 10, "the 8 frames that never came count too");
        assert_eq!(percentile(&mut all, 50.0), Some(780.0));
    }
}
