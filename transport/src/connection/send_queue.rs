//! The sender's frames: fragmentation, the priority scheduler, deadline-limited repair and whole-frame drops.
//!
//! Scheduling is strict priority by [`MediaKind::priority`]: within a class, repairs go before new
//! fragments, oldest frame first. So when the path cannot carry everything, the lowest classes starve and
//! reach their deadlines first: disposable frames are dropped before inter frames, and audio and sequence
//! headers last. A dropped key or inter frame takes the rest of its GOP with it (the sender stops spending
//! bandwidth on frames the receiver could not decode), and every drop is announced to the receiver with a
//! `DROPPED` notice so it never waits for a frame that will not come.

use super::recovery::Chunk;
use crate::media::{DropReason, MediaFrame, MediaKind};
use crate::wire::frame::{DroppedNotice, FragmentHeader};
use bytes::Bytes;
use foldhash::{HashMap, HashSet};
use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

/// Identifies a frame on the sending side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrameId {
    /// Stream id.
    pub stream: u32,
    /// Sequence number in the stream.
    pub seq: u64,
}

/// What the scheduler needs to know about the path to judge deadlines.
#[derive(Debug, Clone, Copy)]
pub struct PathTiming {
    /// Estimated one-way delay to the receiver.
    pub one_way: Duration,
    /// Time from sending a packet to learning it was lost and having its repair leave.
    pub repair_round: Duration,
}

/// Per-kind counters of the sending side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindCounters {
    /// Frames handed to `send_frame`.
    pub queued: u64,
    /// Frames fully acknowledged.
    pub acked: u64,
    /// Frames dropped because they could no longer meet their deadline.
    pub dropped_deadline: u64,
    /// Frames dropped because a frame they depend on was dropped.
    pub dropped_dependency: u64,
    /// Frames dropped because the send queue was full.
    pub dropped_queue_full: u64,
}

/// Send-side stats.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendStats {
    /// Counters indexed by `MediaKind::code()`.
    pub by_kind: [KindCounters; 6],
    /// Payload bytes sent for the first time.
    pub payload_bytes_first: u64,
    /// Payload bytes sent again (repairs, and the second copy of last-chance repairs).
    pub payload_bytes_repair: u64,
    /// Last-chance repairs sent twice.
    pub duplicated_repairs: u64,
    /// Frames whose deadline passed while still unacknowledged (including dropped ones).
    pub deadline_misses: u64,
}

#[derive(Debug)]
struct OutFrame {
    kind: MediaKind,
    bytes: Bytes,
    capture: Instant,
    deadline: Option<Instant>,
    budget_us: Option<u64>,
    frag_size: u32,
    n_frags: u32,
    next_new: u32,
    acked: Vec<u64>,
    acked_count: u32,
}

impl OutFrame {
    fn frag_range(&self, index: u32) -> (usize, usize) {
        let start = index as usize * self.frag_size as usize;
        let end = (start + self.frag_size as usize).min(self.bytes.len());
        (start, end)
    }

    /// Fragment `index` of frame `id` as it would leave `now`: its header and its byte range.
    fn fragment(
        &self,
        id: FrameId,
        index: u32,
        now: Instant,
        timing: PathTiming,
    ) -> (FragmentHeader, std::ops::Range<usize>) {
        let (start, end) = self.frag_range(index);
        let age = now.saturating_duration_since(self.capture) + timing.one_way;
        let header = FragmentHeader {
            stream: id.stream,
            seq: id.seq,
            kind: self.kind,
            frame_len: self.bytes.len() as u32,
            offset: start as u32,
            age_us: age.as_micros() as u64,
            budget_us: self.budget_us,
        };
        (header, start..end)
    }

    /// The instant by which this frame must be able to arrive, or be dropped and announced. Unsent data must
    /// make the deadline itself. A key or inter frame already sent whole gets one repair round of grace
    /// (its ACK may be on the way, and dropping it would drop the rest of its GOP); anything else is
    /// announced at the deadline, so the receiver stops holding later frames for it.
    fn give_up_limit(&self, deadline: Instant, timing: PathTiming) -> Instant {
        if self.next_new >= self.n_frags && self.kind.breaks_gop_when_lost() {
            deadline + timing.repair_round
        } else {
            deadline
        }
    }

    fn is_acked(&self, index: u32) -> bool {
        self.acked
            .get(index as usize / 64)
            .is_some_and(|w| w & (1 << (index % 64)) != 0)
    }

    fn set_acked(&mut self, index: u32) -> bool {
        match self.acked.get_mut(index as usize / 64) {
            Some(w) if *w & (1 << (index % 64)) == 0 => {
                *w |= 1 << (index % 64);
                self.acked_count += 1;
                true
            }
            _ => false,
        }
    }
}

#[derive(Debug, Default)]
struct StreamSend {
    stats: SendStats,
    next_seq: u64,
    /// True after a key/inter frame was dropped: video frames wait for the next keyframe.
    broken: bool,
    /// Sequence number of the newest keyframe queued (a drop before it cannot break what follows it).
    last_key_seq: Option<u64>,
    live: BTreeSet<u64>,
}

/// The chunk a packet records for fragment `index` of frame `id`.
fn fragment_chunk(id: FrameId, index: u32) -> Chunk {
    Chunk::Fragment {
        stream: id.stream,
        seq: id.seq,
        index,
    }
}

/// A fragment chosen for the next packet.
#[derive(Debug, Clone)]
pub struct Emit {
    /// Its header.
    pub header: FragmentHeader,
    /// Its bytes (a slice of the frame's `Bytes`, no copy).
    pub data: Bytes,
    /// What to record in the packet's chunks.
    pub chunk: Chunk,
    /// True if this is a repair (or its duplicate).
    pub repair: bool,
}

/// Why `push` refused a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The frame is larger than the protocol carries.
    #[error("frame of {0} bytes exceeds the maximum frame size")]
    TooLarge(usize),
    /// A frame without a deadline did not fit under the queue bound; try again after some is sent.
    #[error("send queue full ({0} bytes unsent)")]
    QueueFull(u64),
}

/// How a frame is cut into fragments when it is queued (the cut holds for every send of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FragmentSizing {
    /// The same payload bytes for every frame.
    Fixed(u32),
    /// Each fragment, header included, fills this many bytes: the data is the room less the most the
    /// frame's fragment header can take. Full packets then all have the same size, which GSO needs to send
    /// them in one batch, and carry as much data as fits.
    FillRoom(u32),
}

/// All frames a connection is sending.
#[derive(Debug)]
pub struct SendQueue {
    frames: HashMap<FrameId, OutFrame>,
    new_q: [VecDeque<FrameId>; MediaKind::PRIORITY_CLASSES],
    /// Repairs: (frame, fragment, is the second copy of a last-chance repair).
    retx_q: [VecDeque<(FrameId, u32, bool)>; MediaKind::PRIORITY_CLASSES],
    /// First copies of repairs now in `retx_q`, so a repeated loss report does not queue a fragment twice
    /// (a set, not a scan: a peer's ACK pattern must not make this quadratic).
    retx_queued: HashSet<(FrameId, u32)>,
    /// Frames with a deadline, in the order they were queued (for the expiry sweep).
    watch: VecDeque<FrameId>,
    streams: HashMap<u32, StreamSend>,
    notices: VecDeque<DroppedNotice>,
    sizing: FragmentSizing,
    unsent_bytes: u64,
    max_unsent_bytes: u64,
    /// Counters.
    pub stats: SendStats,
}

impl SendQueue {
    /// `frag_size`: payload bytes per fragment; `max_unsent_bytes`: bound on bytes queued but never sent.
    pub fn new(frag_size: u32, max_unsent_bytes: u64) -> Self {
        Self::with_sizing(FragmentSizing::Fixed(frag_size.max(1)), max_unsent_bytes)
    }

    /// Fragments sized so that each one, header included, fills `room` bytes (a packet's payload room, as
    /// [`Self::next_fragment`] will be offered it); `max_unsent_bytes`: bound on bytes queued but never sent.
    pub fn filling(room: u32, max_unsent_bytes: u64) -> Self {
        Self::with_sizing(FragmentSizing::FillRoom(room), max_unsent_bytes)
    }

    fn with_sizing(sizing: FragmentSizing, max_unsent_bytes: u64) -> Self {
        SendQueue {
            frames: HashMap::default(),
            new_q: Default::default(),
            retx_q: Default::default(),
            retx_queued: HashSet::default(),
            watch: VecDeque::new(),
            streams: HashMap::default(),
            notices: VecDeque::new(),
            sizing,
            unsent_bytes: 0,
            max_unsent_bytes,
            stats: SendStats::default(),
        }
    }

    /// Bytes queued and not yet sent once.
    pub fn unsent_bytes(&self) -> u64 {
        self.unsent_bytes
    }

    /// Frames not yet acknowledged or dropped.
    pub fn live_frames(&self) -> usize {
        self.frames.len()
    }

    /// True if anything (data, repairs, notices) waits to be sent.
    pub fn has_pending(&self) -> bool {
        !self.notices.is_empty()
            || self.retx_q.iter().any(|q| !q.is_empty())
            || self.new_q.iter().any(|q| !q.is_empty())
    }

    /// Queues a frame; returns its sequence number. A video frame that depends on a dropped frame is dropped
    /// at once (and announced), but still gets its sequence number.
    pub fn push(&mut self, stream: u32, frame: MediaFrame) -> Result<u64, PushError> {
        let len = frame.bytes.len();
        if len > crate::wire::frame::MAX_FRAME_LEN as usize {
            return Err(PushError::TooLarge(len));
        }
        if frame.deadline().is_none() && self.unsent_bytes + len as u64 > self.max_unsent_bytes {
            return Err(PushError::QueueFull(self.unsent_bytes));
        }
        let st = self.streams.entry(stream).or_default();
        let seq = st.next_seq;
        st.next_seq += 1;
        let kind = frame.kind;
        if kind == MediaKind::Key {
            st.broken = false;
            st.last_key_seq = Some(seq);
        }
        let broken = st.broken;
        self.account(stream, |s| s.by_kind[kind.code() as usize].queued += 1);
        let id = FrameId { stream, seq };
        if kind.is_video() && kind != MediaKind::Key && broken {
            self.announce_drop(stream, seq, kind, DropReason::Dependency);
            return Ok(seq);
        }
        if self.unsent_bytes + len as u64 > self.max_unsent_bytes && frame.deadline().is_some() {
            // Over the bound: this frame is the one dropped (newest, so older frames keep their chance).
            if kind.breaks_gop_when_lost() {
                if let Some(st) = self.streams.get_mut(&stream) {
                    st.broken = true;
                }
            }
            self.announce_drop(stream, seq, kind, DropReason::QueueFull);
            return Ok(seq);
        }
        if let Some(st) = self.streams.get_mut(&stream) {
            st.live.insert(seq);
        }
        let budget_us = frame.budget.map(|b| b.as_micros() as u64);
        let frag_size = self.frag_size(stream, seq, len as u32, budget_us);
        let n_frags = (len as u64).div_ceil(u64::from(frag_size)).max(1) as u32;
        let out = OutFrame {
            kind,
            deadline: frame.deadline(),
            budget_us,
            capture: frame.capture,
            bytes: frame.bytes,
            frag_size,
            n_frags,
            next_new: 0,
            acked: vec![0; (n_frags as usize).div_ceil(64)],
            acked_count: 0,
        };
        if out.deadline.is_some() {
            self.watch.push_back(id);
        }
        self.unsent_bytes += len as u64;
        self.frames.insert(id, out);
        self.new_q[kind.priority()].push_back(id);
        Ok(seq)
    }

    /// Payload bytes per fragment of a frame (at least 1).
    fn frag_size(&self, stream: u32, seq: u64, frame_len: u32, budget_us: Option<u64>) -> u32 {
        match self.sizing {
            FragmentSizing::Fixed(n) => n,
            FragmentSizing::FillRoom(room) => {
                let header =
                    FragmentHeader::max_encoded_len(stream, seq, frame_len, budget_us, room as usize);
                room.saturating_sub(header as u32).max(1)
            }
        }
    }

    /// Applies a counter update to the connection's stats and to the stream's.
    fn account(&mut self, stream: u32, update: impl Fn(&mut SendStats)) {
        update(&mut self.stats);
        if let Some(st) = self.streams.get_mut(&stream) {
            update(&mut st.stats);
        }
    }

    /// Counts a dropped frame and queues its `DROPPED` notice for the receiver.
    fn announce_drop(&mut self, stream: u32, seq: u64, kind: MediaKind, reason: DropReason) {
        self.count_drop(stream, kind, reason);
        self.notices.push_back(DroppedNotice {
            stream,
            seq,
            kind,
            reason,
        });
    }

    fn count_drop(&mut self, stream: u32, kind: MediaKind, reason: DropReason) {
        self.account(stream, |s| {
            let c = &mut s.by_kind[kind.code() as usize];
            match reason {
                DropReason::Deadline => c.dropped_deadline += 1,
                DropReason::Dependency => c.dropped_dependency += 1,
                DropReason::QueueFull => c.dropped_queue_full += 1,
            }
        });
    }

    /// One stream's send-side counters (frames by kind and drop reason, payload and repair bytes).
    pub fn stream_stats(&self, stream: u32) -> Option<&SendStats> {
        self.streams.get(&stream).map(|s| &s.stats)
    }

    /// Drops a frame whole, announces it, and drops the video frames that depend on it.
    fn drop_frame(&mut self, id: FrameId, reason: DropReason) {
        let Some(f) = self.frames.remove(&id) else { return };
        self.unsent_bytes = self.unsent_bytes.saturating_sub(
            f.bytes
                .len()
                .saturating_sub(f.next_new as usize * f.frag_size as usize) as u64,
        );
        self.account(id.stream, |s| s.deadline_misses += 1);
        self.announce_drop(id.stream, id.seq, f.kind, reason);
        let mut dependents = Vec::new();
        if let Some(st) = self.streams.get_mut(&id.stream) {
            st.live.remove(&id.seq);
            if f.kind.breaks_gop_when_lost() {
                // Only this frame's own GOP breaks: frames from the next keyframe on (queued, sent or already
                // acknowledged) do not depend on it.
                let next_key = st.last_key_seq.filter(|&k| k > id.seq);
                if next_key.is_none() {
                    st.broken = true;
                }
                let end = next_key.unwrap_or(u64::MAX);
                for &seq in st.live.range(id.seq + 1..end) {
                    match self
                        .frames
                        .get(&FrameId {
                            stream: id.stream,
                            seq,
                        })
                        .map(|f| f.kind)
                    {
                        Some(MediaKind::Key) => break,
                        Some(MediaKind::Inter | MediaKind::Disposable) => dependents.push(seq),
                        _ => {}
                    }
                }
            }
        }
        for seq in dependents {
            let dep = FrameId {
                stream: id.stream,
                seq,
            };
            if let Some(f) = self.frames.remove(&dep) {
                self.unsent_bytes = self.unsent_bytes.saturating_sub(
                    f.bytes
                        .len()
                        .saturating_sub(f.next_new as usize * f.frag_size as usize)
                        as u64,
                );
                self.announce_drop(id.stream, seq, f.kind, DropReason::Dependency);
                if let Some(st) = self.streams.get_mut(&id.stream) {
                    st.live.remove(&seq);
                }
            }
        }
    }

    fn finish_frame(&mut self, id: FrameId) {
        if let Some(f) = self.frames.remove(&id) {
            let kind = f.kind;
            self.account(id.stream, |s| s.by_kind[kind.code() as usize].acked += 1);
            if let Some(st) = self.streams.get_mut(&id.stream) {
                st.live.remove(&id.seq);
            }
        }
    }

    /// Drops frames that can no longer arrive in time (see `give_up_limit`), oldest first.
    pub fn expire(&mut self, now: Instant, timing: PathTiming) {
        if self.watch.is_empty() {
            return; // nothing with a deadline (bulk): this runs for every packet
        }
        // Limits are not in queue order (budgets differ, sent frames get grace), so every watched frame is
        // checked; the watch holds only frames still in play, a few dozen for a live stream.
        let frames = &self.frames;
        let mut expired = Vec::new();
        self.watch.retain(|id| {
            let Some(f) = frames.get(id) else { return false };
            let Some(deadline) = f.deadline else { return false };
            if now + timing.one_way > f.give_up_limit(deadline, timing) {
                expired.push(*id);
                return false;
            }
            true
        });
        for id in expired {
            self.drop_frame(id, DropReason::Deadline);
        }
    }

    /// When the next watched frame would expire (so the connection can wake up to drop and announce it).
    pub fn next_expiry(&self, timing: PathTiming) -> Option<Instant> {
        self.watch
            .iter()
            .filter_map(|id| self.frames.get(id))
            .filter_map(|f| f.deadline.map(|d| f.give_up_limit(d, timing)))
            .min()
            .map(|limit| limit.checked_sub(timing.one_way).unwrap_or(limit) + Duration::from_micros(1))
    }

    /// The next dropped-frame notice to send, if any.
    pub fn pop_notice(&mut self) -> Option<DroppedNotice> {
        self.notices.pop_front()
    }

    /// Puts a notice back at the front (it did not fit in the packet).
    pub fn unpop_notice(&mut self, n: DroppedNotice) {
        self.notices.push_front(n);
    }

    fn pop_retx(&mut self, class: usize) {
        if let Some((id, index, second_copy)) = self.retx_q[class].pop_front() {
            if !second_copy {
                self.retx_queued.remove(&(id, index));
            }
        }
    }

    /// Picks the next fragment to send, if one fits in `space` bytes of frame encoding.
    pub fn next_fragment(&mut self, now: Instant, space: usize, timing: PathTiming) -> Option<Emit> {
        self.take_fragment(now, space, timing, |header, bytes, range| {
            (header, bytes.slice(range))
        })
        .map(|((header, data), chunk, repair)| Emit {
            header,
            data,
            chunk,
            repair,
        })
    }

    /// [`Self::next_fragment`], encoded straight into `out` (header and data): no `Bytes` handle per
    /// fragment. Returns the chunk to record for the packet.
    pub fn write_next_fragment(
        &mut self,
        now: Instant,
        space: usize,
        timing: PathTiming,
        out: &mut Vec<u8>,
    ) -> Option<Chunk> {
        self.take_fragment(now, space, timing, |header, bytes, range| {
            header.encode(bytes.get(range).unwrap_or_default(), out);
        })
        .map(|((), chunk, _)| chunk)
    }

    /// The scheduler: finds the next fragment that fits `space`, updates the queues and counters as sent,
    /// and hands its header, its frame's bytes and its range to `sink`. Returns what `sink` made, the chunk
    /// and whether it is a repair.
    fn take_fragment<R>(
        &mut self,
        now: Instant,
        space: usize,
        timing: PathTiming,
        sink: impl FnOnce(FragmentHeader, &Bytes, std::ops::Range<usize>) -> R,
    ) -> Option<(R, Chunk, bool)> {
        for class in 0..MediaKind::PRIORITY_CLASSES {
            while let Some(&(id, index, second_copy)) = self.retx_q[class].front() {
                let Some(f) = self.frames.get(&id) else {
                    self.pop_retx(class);
                    continue;
                };
                if f.is_acked(index) {
                    self.pop_retx(class);
                    continue;
                }
                if f.deadline.is_some_and(|d| now + timing.one_way > d) {
                    self.pop_retx(class);
                    self.drop_frame(id, DropReason::Deadline);
                    continue;
                }
                let (header, range) = f.fragment(id, index, now, timing);
                if header.encoded_len(range.len()) + range.len() > space {
                    return None;
                }
                let deadline = f.deadline;
                let made = sink(header, &f.bytes, range.clone());
                self.pop_retx(class);
                let n = range.len() as u64;
                self.account(id.stream, |s| s.payload_bytes_repair += n);
                // A repair that has time for no further try is sent twice, in different packets.
                let last_chance = deadline.is_some_and(|d| now + timing.repair_round + timing.one_way > d);
                if last_chance && !second_copy {
                    self.retx_q[class].push_back((id, index, true));
                    self.account(id.stream, |s| s.duplicated_repairs += 1);
                }
                return Some((made, fragment_chunk(id, index), true));
            }
            while let Some(&id) = self.new_q[class].front() {
                let Some(f) = self.frames.get_mut(&id) else {
                    self.new_q[class].pop_front();
                    continue;
                };
                if f.next_new >= f.n_frags {
                    self.new_q[class].pop_front();
                    continue;
                }
                if f.deadline.is_some_and(|d| now + timing.one_way > d) {
                    self.new_q[class].pop_front();
                    self.drop_frame(id, DropReason::Deadline);
                    continue;
                }
                let index = f.next_new;
                let (header, range) = f.fragment(id, index, now, timing);
                if header.encoded_len(range.len()) + range.len() > space {
                    return None;
                }
                f.next_new += 1;
                let finished = f.next_new >= f.n_frags;
                let made = sink(header, &f.bytes, range.clone());
                if finished {
                    self.new_q[class].pop_front();
                }
                let n = range.len() as u64;
                self.unsent_bytes = self.unsent_bytes.saturating_sub(n);
                self.account(id.stream, |s| s.payload_bytes_first += n);
                return Some((made, fragment_chunk(id, index), false));
            }
        }
        None
    }

    /// A packet carrying `chunk` was acknowledged.
    pub fn on_acked(&mut self, chunk: &Chunk) {
        if let Chunk::Fragment { stream, seq, index } = *chunk {
            let id = FrameId { stream, seq };
            let done = match self.frames.get_mut(&id) {
                Some(f) => {
                    f.set_acked(index);
                    f.acked_count >= f.n_frags
                }
                None => false,
            };
            if done {
                self.finish_frame(id);
            }
        }
    }

    /// A packet carrying `chunk` was declared lost: queue its repair, or drop its frame if too late.
    pub fn on_lost(&mut self, chunk: &Chunk, now: Instant, timing: PathTiming) {
        match *chunk {
            Chunk::Fragment { stream, seq, index } => {
                let id = FrameId { stream, seq };
                let Some(f) = self.frames.get(&id) else { return };
                if f.is_acked(index) {
                    return;
                }
                if f.deadline.is_some_and(|d| now + timing.one_way > d) {
                    self.drop_frame(id, DropReason::Deadline);
                    return;
                }
                let class = f.kind.priority();
                if self.retx_queued.insert((id, index)) {
                    self.retx_q[class].push_back((id, index, false));
                }
            }
            Chunk::Notice(n) => {
                // Re-announce only if the receiver may still be waiting for this frame.
                self.notices.push_back(n);
            }
        }
    }

    /// Queues a repair of a chunk for a probe (tail loss probe), without declaring it lost.
    pub fn probe(&mut self, chunk: &Chunk) {
        if let Chunk::Fragment { stream, seq, index } = *chunk {
            let id = FrameId { stream, seq };
            if let Some(f) = self.frames.get(&id) {
                if !f.is_acked(index) {
                    let class = f.kind.priority();
                    if self.retx_queued.insert((id, index)) {
                        self.retx_q[class].push_front((id, index, false));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: MediaKind, len: usize, t: Instant, budget_ms: Option<u64>) -> MediaFrame {
        MediaFrame {
            kind,
            bytes: Bytes::from(vec![kind.code(); len]),
            capture: t,
            budget: budget_ms.map(Duration::from_millis),
        }
    }

    const TIMING: PathTiming = PathTiming {
        one_way: Duration::from_millis(50),
        repair_round: Duration::from_millis(110),
    };

    #[test]
    fn fragments_cover_the_frame_and_higher_priority_goes_first() {
        let t0 = Instant::now();
        let mut q = SendQueue::new(1000, 1 << 30);
        q.push(1, frame(MediaKind::Disposable, 500, t0, Some(280)))
            .unwrap();
        q.push(1, frame(MediaKind::Key, 2500, t0, Some(280))).unwrap();
        q.push(1, frame(MediaKind::Audio, 100, t0, Some(280))).unwrap();
        let mut order = Vec::new();
        while let Some(e) = q.next_fragment(t0, 2000, TIMING) {
            order.push((e.header.kind, e.header.offset, e.data.len()));
        }
        assert_eq!(
            order,
            vec![
                (MediaKind::Audio, 0, 100),
                (MediaKind::Key, 0, 1000),
                (MediaKind::Key, 1000, 1000),
                (MediaKind::Key, 2000, 500),
                (MediaKind::Disposable, 0, 500),
            ]
        );
        assert_eq!(q.unsent_bytes(), 0);
    }

    /// Every fragment, first send or a repair an hour later, fits the room it was sized for; all but a
    /// frame's last fill it to within the few bytes its header's varints vary by.
    #[test]
    fn filling_fragments_fit_their_room_at_any_offset_and_age() {
        let t0 = Instant::now();
        let room = 1367;
        let mut q = SendQueue::filling(room as u32, 1 << 30);
        let budgets = [None, Some(280), Some(3_600_000)];
        for len in [1usize, 700, 1367, 20_000, 300_000] {
            for (stream, budget) in [0u32, 70, 1 << 20].into_iter().zip(budgets) {
                q.push(stream, frame(MediaKind::Key, len, t0, budget)).unwrap();
            }
        }
        let mut sent = Vec::new();
        while let Some(e) = q.next_fragment(t0, room, TIMING) {
            let used = e.header.encoded_len(e.data.len()) + e.data.len();
            assert!(used <= room, "{used} > {room}: {:?}", e.header);
            let last = e.header.offset as usize + e.data.len() == e.header.frame_len as usize;
            assert!(
                last || room - used <= 6,
                "{} bytes left: {:?}",
                room - used,
                e.header
            );
            sent.push(e.chunk);
        }
        assert_eq!(q.unsent_bytes(), 0);
        // An hour later (the age field is capped), every fragment still fits as a repair.
        let later = t0 + Duration::from_secs(3600);
        for c in &sent {
            q.on_lost(c, later, TIMING);
        }
        let mut repairs = 0;
        while let Some(e) = q.next_fragment(later, room, TIMING) {
            assert!(e.repair);
            assert!(
                e.header.encoded_len(e.data.len()) + e.data.len() <= room,
                "{:?}",
                e.header
            );
            repairs += 1;
        }
        assert!(repairs > 0, "the frames without a passed deadline are repaired");
    }

    #[test]
    fn acking_every_fragment_finishes_the_frame() {
        let t0 = Instant::now();
        let mut q = SendQueue::new(1000, 1 << 30);
        q.push(1, frame(MediaKind::Key, 2500, t0, None)).unwrap();
        let mut chunks = Vec::new();
        while let Some(e) = q.next_fragment(t0, 2000, TIMING) {
            chunks.push(e.chunk);
        }
        q.on_lost(&chunks[1], t0, TIMING);
        let e = q.next_fragment(t0, 2000, TIMING).unwrap();
        assert!(e.repair);
        assert_eq!(e.chunk, chunks[1]);
        for c in &chunks {
            q.on_acked(c);
        }
        assert_eq!(q.live_frames(), 0);
        assert_eq!(q.stats.by_kind[MediaKind::Key.code() as usize].acked, 1);
    }

    #[test]
    fn a_late_inter_frame_drops_the_rest_of_its_gop_but_not_audio() {
        let t0 = Instant::now();
        let mut q = SendQueue::new(1000, 1 << 30);
        q.push(1, frame(MediaKind::Key, 100, t0, Some(280))).unwrap();
        q.push(1, frame(MediaKind::Inter, 100, t0, Some(100))).unwrap(); // tight budget
        q.push(1, frame(MediaKind::Audio, 100, t0, Some(280))).unwrap();
        q.push(1, frame(MediaKind::Disposable, 100, t0, Some(280)))
            .unwrap();
        let later = t0 + Duration::from_millis(60);
        q.expire(later, TIMING); // the watch sweep stops at the first frame still in time (seq 0)
        let mut kinds = Vec::new();
        while let Some(e) = q.next_fragment(later, 2000, TIMING) {
            kinds.push(e.header.kind);
        }
        assert_eq!(kinds, vec![MediaKind::Audio, MediaKind::Key]);
        let notices: Vec<_> = std::iter::from_fn(|| q.pop_notice())
            .map(|n| (n.seq, n.reason))
            .collect();
        assert_eq!(
            notices,
            vec![(1, DropReason::Deadline), (3, DropReason::Dependency)]
        );
        // Until the next keyframe, new video frames are dropped at once.
        q.push(1, frame(MediaKind::Inter, 100, t0, Some(280))).unwrap();
        assert_eq!(q.pop_notice().map(|n| n.reason), Some(DropReason::Dependency));
        q.push(1, frame(MediaKind::Key, 100, t0, Some(280))).unwrap();
        assert!(q.pop_notice().is_none());
    }

    #[test]
    fn last_chance_repairs_are_sent_twice() {
        let t0 = Instant::now();
        let mut q = SendQueue::new(1000, 1 << 30);
        q.push(1, frame(MediaKind::Inter, 100, t0, Some(280))).unwrap();
        let e = q.next_fragment(t0, 2000, TIMING).unwrap();
        // Lost and detected at 150 ms: a repair arrives at 200 ms; another round would end at 310 ms > 280.
        let t1 = t0 + Duration::from_millis(150);
        q.on_lost(&e.chunk, t1, TIMING);
        let a = q.next_fragment(t1, 2000, TIMING).unwrap();
        let b = q.next_fragment(t1, 2000, TIMING).unwrap();
        assert_eq!(a.chunk, b.chunk);
        assert!(q.next_fragment(t1, 2000, TIMING).is_none());
        assert_eq!(q.stats.duplicated_repairs, 1);
    }

    #[test]
    fn unsent_bytes_are_bounded() {
        let t0 = Instant::now();
        let mut q = SendQueue::new(1000, 3000);
        for _ in 0..5 {
            q.push(1, frame(MediaKind::Audio, 1000, t0, Some(280))).unwrap();
        }
        assert_eq!(q.unsent_bytes(), 3000);
        assert_eq!(
            q.stats.by_kind[MediaKind::Audio.code() as usize].dropped_queue_full,
            2
        );
    }
}
