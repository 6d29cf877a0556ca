//! The receiver's frames: fragments reassembled whole, delivered in order, and never a frame whose
//! reference was lost.
//!
//! Each stream delivers frames in sequence order. A frame leaves when it is complete and every earlier frame
//! has either left or been announced dropped by the sender. After a dropped key or inter frame the stream
//! needs a keyframe: inter and disposable frames are discarded until one arrives (audio keeps flowing), and
//! when decoding can resume the gap is reported as one event.

use crate::media::MediaKind;
use crate::wire::frame::{DroppedNotice, FragmentHeader};
use bytes::Bytes;
use foldhash::HashMap;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::time::{Duration, Instant};

/// A frame handed to the application.
#[derive(Debug, Clone)]
pub struct DeliveredFrame {
    /// Stream id.
    pub stream: u32,
    /// Sequence number.
    pub seq: u64,
    /// Kind.
    pub kind: MediaKind,
    /// Payload (zero-copy for single-packet frames).
    pub bytes: Bytes,
    /// Estimated capture time on this host's clock (arrival of the first fragment minus its age).
    pub capture: Instant,
    /// The frame's end-to-end budget, to pass on to the next hop.
    pub budget: Option<Duration>,
}

/// A run of frames the application will not get, reported once decoding can resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// Stream id.
    pub stream: u32,
    /// First sequence number missing.
    pub first_seq: u64,
    /// Sequence number of the frame delivery resumed with.
    pub resume_seq: u64,
    /// Frames not delivered in between (dropped by the sender or undecodable here).
    pub frames: u64,
}

/// What the reassembler produces.
#[derive(Debug, Clone)]
pub enum RecvOutput {
    /// A complete, decodable frame.
    Frame(DeliveredFrame),
    /// A gap that just closed.
    Gap(Gap),
}

/// What became of one fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FragmentOutcome {
    /// New data, kept.
    Accepted,
    /// Already had it (or the frame already left): harmless, acknowledge it.
    Duplicate,
    /// Over a limit or contradicting earlier fragments: do not acknowledge it.
    Refused,
}

/// Bounds on what a peer can make the receiver hold.
#[derive(Debug, Clone, Copy)]
pub struct RecvLimits {
    /// Largest frame accepted, in bytes.
    pub max_frame_bytes: u32,
    /// Bytes of incomplete or waiting frames held across all streams.
    pub max_buffered_bytes: u64,
    /// How far ahead of the next frame to deliver a stream may run, in frames.
    pub max_frames_ahead: u64,
    /// Most streams a peer may open.
    pub max_streams: usize,
    /// Most frames held at once across all streams (incomplete, complete but waiting, or announced dropped):
    /// each costs a slot whatever its size, so this bounds what empty frames and DROPPED notices can pin.
    pub max_held_frames: usize,
    /// Most separate received byte ranges an incomplete frame may have (each a gap the sender left); a
    /// fragment that would open one more is refused. Retransmissions keep their boundaries, so a frame has
    /// at most one range per lost fragment.
    pub max_ranges_per_frame: usize,
}

/// What each held frame costs against [`RecvLimits::max_buffered_bytes`] (and the endpoint's budget) on top
/// of its bytes: its slot, bookkeeping and allocation.
pub const SLOT_COST: u64 = 128;
/// What each received range of an incomplete frame costs on top of that.
pub const RANGE_COST: u64 = 48;
/// Under memory pressure, expired incomplete frames are swept at most this often (a sweep walks every slot).
pub const RECLAIM_INTERVAL: Duration = Duration::from_millis(10);

impl Default for RecvLimits {
    fn default() -> Self {
        RecvLimits {
            max_frame_bytes: crate::wire::frame::MAX_FRAME_LEN,
            max_buffered_bytes: 256 << 20,
            max_frames_ahead: 1 << 16,
            max_streams: 4096,
            max_held_frames: 16_384,
            max_ranges_per_frame: 4096,
        }
    }
}

/// Receive-side counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecvStats {
    /// Frames delivered.
    pub frames_delivered: u64,
    /// Payload bytes delivered.
    pub bytes_delivered: u64,
    /// Frames the sender announced dropped.
    pub frames_dropped_by_sender: u64,
    /// Incomplete frames given up at their deadline without waiting for the sender's notice.
    pub frames_expired: u64,
    /// Frames that arrived but were discarded because a frame they depend on was lost.
    pub frames_discarded_undecodable: u64,
    /// Gaps reported.
    pub gaps: u64,
    /// Frames with a budget delivered within it (by this host's estimate of their capture time).
    pub deadline_hits: u64,
    /// Frames with a budget delivered after it.
    pub deadline_misses: u64,
    /// Fragments that repeated data already received (or already delivered).
    pub duplicate_fragments: u64,
    /// Fragments refused by a limit or because they contradicted earlier fragments.
    pub refused_fragments: u64,
    /// Fragments or DROPPED notices refused because `max_buffered_bytes` was reached (also in
    /// `refused_fragments` when a fragment).
    pub refused_over_bytes: u64,
    /// Refused because `max_held_frames` was reached.
    pub refused_over_slots: u64,
    /// Refused because the endpoint-wide receive budget (`EndpointConfig::max_recv_buffered_bytes`) was
    /// reached.
    pub refused_over_endpoint_budget: u64,
    /// Fragments refused because their frame already had `max_ranges_per_frame` ranges.
    pub refused_over_ranges: u64,
}

#[derive(Debug)]
struct Assembly {
    kind: MediaKind,
    frame_len: u32,
    /// The frame's bytes up to the furthest one received (capacity `frame_len` from the start); gaps are
    /// zeros until filled.
    buf: Vec<u8>,
    /// Received byte ranges (start to end), merged: a range set, so that fragments in any order cost a
    /// logarithmic insert each.
    have: BTreeMap<u32, u32>,
    /// Ranges charged against the byte bounds so far (see [`RANGE_COST`]; never decreases).
    ranges_charged: u64,
    received: u32,
    capture: Instant,
    budget: Option<Duration>,
}

/// What [`Assembly::add`] made of a fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Added {
    /// New bytes; `new_range` when they opened a separate range.
    New { bytes: u32, new_range: bool },
    /// Nothing new (a repeat, an overlap or out of bounds).
    Nothing,
    /// The frame already has the most ranges allowed.
    TooManyRanges,
}

impl Assembly {
    /// Adds `[offset, offset+len)`.
    fn add(&mut self, offset: u32, data: &[u8], max_ranges: usize) -> Added {
        let Some(end) = u32::try_from(data.len()).ok().and_then(|n| offset.checked_add(n)) else {
            return Added::Nothing;
        };
        if data.is_empty() || end > self.frame_len {
            return Added::Nothing;
        }
        // Reject anything overlapping a known range (retransmissions reuse the same boundaries, so an overlap
        // that is not an exact repeat is a confused or hostile peer).
        if self
            .have
            .range(..end)
            .next_back()
            .is_some_and(|(_, &e)| e > offset)
        {
            return Added::Nothing;
        }
        let prev = self
            .have
            .range(..=offset)
            .next_back()
            .filter(|(_, &e)| e == offset)
            .map(|(&s, _)| s);
        let next_end = self.have.get(&end).copied();
        let new_range = prev.is_none() && next_end.is_none();
        if new_range && self.have.len() >= max_ranges {
            return Added::TooManyRanges;
        }
        // `buf` holds everything up to the furthest byte received so far: in-order fragments (the common
        // case) are appended, and only the bytes of a gap ahead of one are zero-filled before their turn.
        let (start, stop) = (offset as usize, end as usize);
        if start >= self.buf.len() {
            self.buf.resize(start, 0);
            self.buf.extend_from_slice(data);
        } else if let Some(dst) = self.buf.get_mut(start..stop) {
            dst.copy_from_slice(data);
        } else {
            // Only possible for a range that straddles the end of `buf`, which `have` has already ruled out
            // (the bytes up to `buf.len()` end with a received range).
            return Added::Nothing;
        }
        if next_end.is_some() {
            self.have.remove(&end);
        }
        let merged_end = next_end.unwrap_or(end);
        self.have.insert(prev.unwrap_or(offset), merged_end);
        self.received += end - offset;
        Added::New {
            bytes: end - offset,
            new_range,
        }
    }

    /// What the frame costs against the byte bounds while incomplete.
    fn cost(&self) -> u64 {
        u64::from(self.frame_len) + SLOT_COST + self.ranges_charged * RANGE_COST
    }
}

#[derive(Debug)]
enum Slot {
    Partial(Assembly),
    Done {
        kind: MediaKind,
        bytes: Bytes,
        capture: Instant,
        budget: Option<Duration>,
    },
    Dropped {
        kind: MediaKind,
    },
}

impl Slot {
    /// What the slot costs against the byte bounds.
    fn cost(&self) -> u64 {
        match self {
            Slot::Partial(a) => a.cost(),
            Slot::Done { bytes, .. } => bytes.len() as u64 + SLOT_COST,
            Slot::Dropped { .. } => SLOT_COST,
        }
    }
}

#[derive(Debug)]
struct RecvStream {
    stats: RecvStats,
    next: u64,
    slots: BTreeMap<u64, Slot>,
    need_key: bool,
    gap: Option<(u64, u64)>,
}

impl RecvStream {
    fn new() -> Self {
        RecvStream {
            stats: RecvStats::default(),
            next: 0,
            slots: BTreeMap::new(),
            need_key: true,
            gap: None,
        }
    }
}

/// The stream's state in `streams`, created on first use while under `max_streams`.
fn stream_in(streams: &mut HashMap<u32, RecvStream>, max_streams: usize, id: u32) -> Option<&mut RecvStream> {
    let full = streams.len() >= max_streams;
    match streams.entry(id) {
        Entry::Occupied(e) => Some(e.into_mut()),
        Entry::Vacant(e) if !full => Some(e.insert(RecvStream::new())),
        Entry::Vacant(_) => None,
    }
}

/// All receive streams of a connection.
#[derive(Debug)]
pub struct Reassembler {
    streams: HashMap<u32, RecvStream>,
    limits: RecvLimits,
    buffered_bytes: u64,
    /// Frames held (slots) across all streams.
    held_frames: usize,
    /// When incomplete frames past their deadline were last reclaimed under memory pressure.
    last_reclaim: Option<Instant>,
    /// What the endpoint-wide receive budget still allows this connection to add (set by the endpoint
    /// before each datagram; unbounded by default).
    endpoint_room: u64,
    out: VecDeque<RecvOutput>,
    /// Counters.
    pub stats: RecvStats,
}

impl Reassembler {
    /// Creates an empty reassembler with the given bounds.
    pub fn new(limits: RecvLimits) -> Self {
        Reassembler {
            streams: HashMap::default(),
            limits,
            buffered_bytes: 0,
            held_frames: 0,
            last_reclaim: None,
            endpoint_room: u64::MAX,
            out: VecDeque::new(),
            stats: RecvStats::default(),
        }
    }

    /// One stream's receive counters, if the peer has used the stream.
    pub fn stream_stats(&self, stream: u32) -> Option<&RecvStats> {
        self.streams.get(&stream).map(|st| &st.stats)
    }

    /// Bytes charged for what is held now: incomplete or waiting frames, each with its fixed cost
    /// ([`SLOT_COST`], and [`RANGE_COST`] per range of an incomplete one), and dropped frames' slots.
    pub fn buffered_bytes(&self) -> u64 {
        self.buffered_bytes
    }

    /// Frames held now (incomplete, complete but waiting, or announced dropped).
    pub fn held_frames(&self) -> usize {
        self.held_frames
    }

    /// Sets how many more bytes the endpoint-wide receive budget lets this connection hold.
    pub(crate) fn set_endpoint_room(&mut self, room: u64) {
        self.endpoint_room = room;
    }

    /// Whether a new slot costing `cost` fits every bound; counts the bound that refuses it. Over a byte
    /// bound, incomplete frames past their deadline anywhere in the streams (not only at the head, where
    /// [`Reassembler::expire`] frees them) are given up first (at most once per [`RECLAIM_INTERVAL`]).
    fn admit(&mut self, now: Instant, cost: u64) -> bool {
        let over_bytes = |r: &Self| {
            r.buffered_bytes.saturating_add(cost) > r.limits.max_buffered_bytes || cost > r.endpoint_room
        };
        if self.held_frames < self.limits.max_held_frames
            && over_bytes(self)
            && self
                .last_reclaim
                .is_none_or(|t| now.saturating_duration_since(t) >= RECLAIM_INTERVAL)
        {
            self.last_reclaim = Some(now);
            self.reclaim_expired(now);
        }
        if self.held_frames >= self.limits.max_held_frames {
            self.stats.refused_over_slots += 1;
            false
        } else if self.buffered_bytes.saturating_add(cost) > self.limits.max_buffered_bytes {
            self.stats.refused_over_bytes += 1;
            false
        } else if cost > self.endpoint_room {
            self.stats.refused_over_endpoint_budget += 1;
            false
        } else {
            true
        }
    }

    /// Turns every incomplete frame past its deadline into a dropped one (its bytes freed, its slot kept so
    /// the GOP rules apply when it reaches the head).
    fn reclaim_expired(&mut self, now: Instant) {
        let mut freed = 0u64;
        let mut expired = 0u64;
        for st in self.streams.values_mut() {
            for slot in st.slots.values_mut() {
                let Slot::Partial(a) = slot else { continue };
                let deadline = a.budget.and_then(|b| a.capture.checked_add(b));
                if deadline.is_none_or(|d| d >= now) {
                    continue;
                }
                let kind = a.kind;
                let old = std::mem::replace(slot, Slot::Dropped { kind });
                freed += old.cost().saturating_sub(SLOT_COST);
                expired += 1;
                st.stats.frames_expired += 1;
            }
        }
        self.buffered_bytes = self.buffered_bytes.saturating_sub(freed);
        self.endpoint_room = self.endpoint_room.saturating_add(freed);
        self.stats.frames_expired += expired;
    }

    /// Charges `cost` more against the bounds.
    fn charge(&mut self, cost: u64) {
        self.buffered_bytes += cost;
        self.endpoint_room = self.endpoint_room.saturating_sub(cost);
    }

    /// The next frame or gap for the application.
    pub fn poll(&mut self) -> Option<RecvOutput> {
        self.out.pop_front()
    }

    /// The stream's state, created on first use while under `max_streams` (one map lookup either way).
    fn stream(&mut self, id: u32) -> Option<&mut RecvStream> {
        stream_in(&mut self.streams, self.limits.max_streams, id)
    }

    /// Takes one fragment. `data` is a slice of the decrypted datagram. A refused fragment must not be
    /// acknowledged: the sender then repairs it or, at the deadline, announces the frame dropped, instead of
    /// believing it delivered while the receiver waits for it forever.
    pub fn on_fragment(&mut self, now: Instant, h: &FragmentHeader, data: Bytes) -> FragmentOutcome {
        let len = data.len();
        self.on_fragment_in(now, h, &data, 0..len)
    }

    /// [`Self::on_fragment`] for the fragment at `packet[range]` (a decrypted payload): its bytes are
    /// copied into the frame being rebuilt, and only a frame that is one whole fragment keeps a slice of
    /// `packet`, so a fragment costs no reference count of its own.
    pub fn on_fragment_in(
        &mut self,
        now: Instant,
        h: &FragmentHeader,
        packet: &Bytes,
        range: Range<usize>,
    ) -> FragmentOutcome {
        let (outcome, completed) = self.take_fragment(now, h, packet, range);
        match outcome {
            // Only a frame that became whole can let frames leave (drops drain in `on_dropped`).
            FragmentOutcome::Accepted if completed => self.drain(now, h.stream),
            FragmentOutcome::Accepted => {}
            FragmentOutcome::Duplicate => self.stats.duplicate_fragments += 1,
            FragmentOutcome::Refused => self.stats.refused_fragments += 1,
        }
        outcome
    }

    /// Files the fragment; also says whether it completed its frame.
    fn take_fragment(
        &mut self,
        now: Instant,
        h: &FragmentHeader,
        packet: &Bytes,
        range: Range<usize>,
    ) -> (FragmentOutcome, bool) {
        use FragmentOutcome::{Accepted, Duplicate, Refused};
        let Some(data) = packet.get(range.clone()) else {
            return (Refused, false);
        };
        let limits = self.limits;
        if h.frame_len > limits.max_frame_bytes {
            return (Refused, false);
        }
        let Some(st) = self.stream(h.stream) else {
            return (Refused, false);
        };
        if h.seq < st.next {
            return (Duplicate, false);
        }
        if h.seq - st.next >= limits.max_frames_ahead {
            return (Refused, false);
        }
        let next = st.next;
        match st.slots.get_mut(&h.seq) {
            Some(Slot::Done { .. }) | Some(Slot::Dropped { .. }) => (Duplicate, false),
            Some(Slot::Partial(a)) => {
                if a.kind != h.kind || a.frame_len != h.frame_len {
                    return (Refused, false);
                }
                let new_range = match a.add(h.offset, data, limits.max_ranges_per_frame) {
                    Added::New { new_range, .. } => new_range,
                    Added::Nothing => return (Duplicate, false),
                    Added::TooManyRanges => {
                        self.stats.refused_over_ranges += 1;
                        return (Refused, false);
                    }
                };
                if new_range {
                    a.ranges_charged += 1;
                }
                let completed = a.received == a.frame_len;
                let mut released = 0;
                if completed {
                    if let Some(Slot::Partial(a)) = st.slots.remove(&h.seq) {
                        released = a.ranges_charged * RANGE_COST;
                        let done = Slot::Done {
                            kind: a.kind,
                            bytes: Bytes::from(a.buf),
                            capture: a.capture,
                            budget: a.budget,
                        };
                        st.slots.insert(h.seq, done);
                    }
                }
                if new_range {
                    self.charge(RANGE_COST);
                }
                self.buffered_bytes = self.buffered_bytes.saturating_sub(released);
                (Accepted, completed)
            }
            None => {
                // Every frame held, complete or not, counts against the bounds until it leaves.
                let whole = h.offset == 0 && data.len() == h.frame_len as usize;
                let cost = u64::from(h.frame_len) + SLOT_COST + if whole { 0 } else { RANGE_COST };
                if !self.admit(now, cost) {
                    return (Refused, false);
                }
                let capture = now.checked_sub(Duration::from_micros(h.age_us)).unwrap_or(now);
                let budget = h.budget_us.map(Duration::from_micros);
                let slot = if whole {
                    // A frame that leaves at once keeps its slice of the packet (no copy). One that must wait
                    // is copied out, so that it pins only its own bytes, not the whole receive buffer the
                    // packet is a slice of.
                    let bytes = if h.seq == next {
                        packet.slice(range)
                    } else {
                        Bytes::copy_from_slice(data)
                    };
                    Slot::Done {
                        kind: h.kind,
                        bytes,
                        capture,
                        budget,
                    }
                } else {
                    let mut a = Assembly {
                        kind: h.kind,
                        frame_len: h.frame_len,
                        buf: Vec::with_capacity(h.frame_len as usize),
                        have: BTreeMap::new(),
                        ranges_charged: 1,
                        received: 0,
                        capture,
                        budget,
                    };
                    if !matches!(
                        a.add(h.offset, data, limits.max_ranges_per_frame),
                        Added::New { .. }
                    ) {
                        return (Refused, false);
                    }
                    Slot::Partial(a)
                };
                let Some(st) = self.streams.get_mut(&h.stream) else {
                    return (Refused, false);
                };
                st.slots.insert(h.seq, slot);
                self.held_frames += 1;
                self.charge(cost);
                (Accepted, whole)
            }
        }
    }

    /// When the oldest incomplete frame at the head of some stream passes its deadline, if any: the
    /// receiver stops waiting for it then (see [`Reassembler::expire`]).
    pub fn next_expiry(&self) -> Option<Instant> {
        self.streams
            .values()
            .filter_map(|st| match st.slots.get(&st.next) {
                Some(Slot::Partial(a)) => a.budget.and_then(|b| a.capture.checked_add(b)),
                _ => None,
            })
            .min()
    }

    /// Gives up on incomplete frames at the head of a stream whose deadline has passed: a late frame is of no
    /// use to a live viewer, and waiting for it would make the frames behind it late too. The frame's kind is
    /// known from its fragments, so the GOP rules apply as for a frame the sender dropped.
    pub fn expire(&mut self, now: Instant) {
        let mut expired = Vec::new();
        for (&id, st) in &mut self.streams {
            let past = match st.slots.get(&st.next) {
                Some(Slot::Partial(a)) => a
                    .budget
                    .and_then(|b| a.capture.checked_add(b))
                    .is_some_and(|d| d < now)
                    .then_some(a.kind),
                _ => None,
            };
            if let Some(kind) = past {
                if let Some(old) = st.slots.insert(st.next, Slot::Dropped { kind }) {
                    self.buffered_bytes = self.buffered_bytes.saturating_sub(old.cost() - SLOT_COST);
                }
                self.stats.frames_expired += 1;
                st.stats.frames_expired += 1;
                expired.push(id);
            }
        }
        for id in expired {
            self.drain(now, id);
        }
    }

    /// The sender gave up on a frame. Returns false when the notice was refused (a bound on what is held was
    /// reached): the packet that carried it must not be acknowledged, so that the sender repeats it.
    pub fn on_dropped(&mut self, now: Instant, n: &DroppedNotice) -> bool {
        let max_ahead = self.limits.max_frames_ahead;
        let Some(st) = self.stream(n.stream) else {
            return false;
        };
        if n.seq < st.next {
            return true;
        }
        if n.seq - st.next >= max_ahead {
            return false;
        }
        match st.slots.get(&n.seq) {
            // A frame that arrived whole stays: the sender gave up on it before its ACK came back.
            Some(Slot::Done { .. }) | Some(Slot::Dropped { .. }) => return true,
            Some(Slot::Partial(_)) => {}
            None => {
                // A notice for a frame never seen takes a slot like any frame.
                if !self.admit(now, SLOT_COST) {
                    return false;
                }
                self.held_frames += 1;
                self.charge(SLOT_COST);
            }
        }
        let Some(st) = self.streams.get_mut(&n.stream) else {
            return false;
        };
        if let Some(old) = st.slots.insert(n.seq, Slot::Dropped { kind: n.kind }) {
            self.buffered_bytes = self.buffered_bytes.saturating_sub(old.cost() - SLOT_COST);
        }
        self.drain(now, n.stream);
        true
    }

    fn drain(&mut self, now: Instant, stream: u32) {
        let Some(st) = self.streams.get_mut(&stream) else {
            return;
        };
        loop {
            let ready = matches!(st.slots.first_key_value(), Some((&s, slot)) if s == st.next && !matches!(slot, Slot::Partial(_)));
            if !ready {
                break;
            }
            let Some((seq, slot)) = st.slots.pop_first() else {
                break;
            };
            st.next = seq + 1;
            self.buffered_bytes = self.buffered_bytes.saturating_sub(slot.cost());
            self.held_frames = self.held_frames.saturating_sub(1);
            match slot {
                Slot::Partial(_) => {}
                Slot::Dropped { kind } => {
                    self.stats.frames_dropped_by_sender += 1;
                    st.stats.frames_dropped_by_sender += 1;
                    if kind.breaks_gop_when_lost() {
                        st.need_key = true;
                    }
                    let g = st.gap.get_or_insert((seq, 0));
                    g.1 += 1;
                }
                Slot::Done {
                    kind,
                    bytes,
                    capture,
                    budget,
                } => {
                    if kind == MediaKind::Key {
                        st.need_key = false;
                    } else if matches!(kind, MediaKind::Inter | MediaKind::Disposable) && st.need_key {
                        self.stats.frames_discarded_undecodable += 1;
                        st.stats.frames_discarded_undecodable += 1;
                        // Only a gap if something was lost; a stream that started mid-GOP just waits.
                        if let Some(g) = st.gap.as_mut() {
                            g.1 += 1;
                        }
                        continue;
                    }
                    if !st.need_key || !kind.is_video() {
                        if let Some((first_seq, frames)) = st.gap {
                            if !st.need_key {
                                st.gap = None;
                                self.stats.gaps += 1;
                                st.stats.gaps += 1;
                                self.out.push_back(RecvOutput::Gap(Gap {
                                    stream,
                                    first_seq,
                                    resume_seq: seq,
                                    frames,
                                }));
                            }
                        }
                    }
                    if let Some(b) = budget {
                        if now.saturating_duration_since(capture) <= b {
                            self.stats.deadline_hits += 1;
                            st.stats.deadline_hits += 1;
                        } else {
                            self.stats.deadline_misses += 1;
                            st.stats.deadline_misses += 1;
                        }
                    }
                    self.stats.frames_delivered += 1;
                    st.stats.frames_delivered += 1;
                    self.stats.bytes_delivered += bytes.len() as u64;
                    st.stats.bytes_delivered += bytes.len() as u64;
                    self.out.push_back(RecvOutput::Frame(DeliveredFrame {
                        stream,
                        seq,
                        kind,
                        bytes,
                        capture,
                        budget,
                    }));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::DropReason;

    fn hdr(seq: u64, kind: MediaKind, frame_len: u32, offset: u32) -> FragmentHeader {
        FragmentHeader {
            stream: 1,
            seq,
            kind,
            frame_len,
            offset,
            age_us: 0,
            budget_us: None,
        }
    }

    fn frames(r: &mut Reassembler) -> Vec<(u64, MediaKind)> {
        std::iter::from_fn(|| r.poll())
            .filter_map(|o| match o {
                RecvOutput::Frame(f) => Some((f.seq, f.kind)),
                RecvOutput::Gap(_) => None,
            })
            .collect()
    }

    #[test]
    fn fragments_reassemble_in_any_order_and_frames_leave_in_order() {
        let t = Instant::now();
        let mut r = Reassembler::new(RecvLimits::default());
        let payload: Vec<u8> = (0..250u8).collect();
        r.on_fragment(
            t,
            &hdr(1, MediaKind::Inter, 250, 100),
            Bytes::copy_from_slice(&payload[100..200]),
        );
        r.on_fragment(
            t,
            &hdr(1, MediaKind::Inter, 250, 200),
            Bytes::copy_from_slice(&payload[200..]),
        );
        r.on_fragment(
            t,
            &hdr(1, MediaKind::Inter, 250, 0),
            Bytes::copy_from_slice(&payload[..100]),
        );
        assert!(r.poll().is_none(), "frame 1 waits for frame 0");
        r.on_fragment(t, &hdr(0, MediaKind::Key, 3, 0), Bytes::from_static(b"key"));
        let out: Vec<_> = std::iter::from_fn(|| r.poll()).collect();
        assert_eq!(out.len(), 2);
        match &out[1] {
            RecvOutput::Frame(f) => assert_eq!(&f.bytes[..], &payload[..]),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(r.buffered_bytes(), 0);
    }

    #[test]
    fn a_dropped_inter_frame_discards_the_rest_of_the_gop_but_not_audio() {
        let t = Instant::now();
        let mut r = Reassembler::new(RecvLimits::default());
        let one = |r: &mut Reassembler, seq, kind| {
            r.on_fragment(t, &hdr(seq, kind, 1, 0), Bytes::from_static(b"x"))
        };
        one(&mut r, 0, MediaKind::Key);
        r.on_dropped(
            t,
            &DroppedNotice {
                stream: 1,
                seq: 1,
                kind: MediaKind::Inter,
                reason: DropReason::Deadline,
            },
        );
        one(&mut r, 2, MediaKind::Disposable);
        one(&mut r, 3, MediaKind::Audio);
        one(&mut r, 4, MediaKind::Inter);
        one(&mut r, 5, MediaKind::Key);
        one(&mut r, 6, MediaKind::Inter);
        let out: Vec<_> = std::iter::from_fn(|| r.poll()).collect();
        let kinds: Vec<String> = out
            .iter()
            .map(|o| match o {
                RecvOutput::Frame(f) => format!("{}:{}", f.seq, f.kind.name()),
                RecvOutput::Gap(g) => format!("gap {}..{} ({})", g.first_seq, g.resume_seq, g.frames),
            })
            .collect();
        assert_eq!(
            kinds,
            vec!["0:key", "3:audio", "gap 1..5 (3)", "5:key", "6:inter"]
        );
        assert_eq!(r.stats.frames_discarded_undecodable, 2);
        let st = r.stream_stats(1).unwrap();
        assert_eq!(
            (st.frames_delivered, st.frames_discarded_undecodable, st.gaps),
            (4, 2, 1)
        );
        assert!(r.stream_stats(2).is_none());
    }

    #[test]
    fn a_dropped_disposable_frame_costs_only_itself() {
        let t = Instant::now();
        let mut r = Reassembler::new(RecvLimits::default());
        r.on_fragment(t, &hdr(0, MediaKind::Key, 1, 0), Bytes::from_static(b"k"));
        r.on_dropped(
            t,
            &DroppedNotice {
                stream: 1,
                seq: 1,
                kind: MediaKind::Disposable,
                reason: DropReason::Deadline,
            },
        );
        r.on_fragment(t, &hdr(2, MediaKind::Inter, 1, 0), Bytes::from_static(b"i"));
        assert_eq!(frames(&mut r), vec![(0, MediaKind::Key), (2, MediaKind::Inter)]);
        assert_eq!(r.stats.gaps, 1);
    }

    proptest::proptest! {
        /// Fragments of any frames, in any order, with duplicates, reassemble to exactly the frames sent, in
        /// sequence order, and leave nothing buffered.
        #[test]
        fn any_fragment_order_reassembles_exactly(
            lens in proptest::collection::vec(0usize..5000, 1..8),
            frag in 1usize..1500,
            order_seed in proptest::prelude::any::<u64>(),
        ) {
            let t = Instant::now();
            let mut r = Reassembler::new(RecvLimits::default());
            let frames: Vec<Vec<u8>> = lens
                .iter()
                .enumerate()
                .map(|(i, &n)| (0..n).map(|j| (i * 7 + j * 13) as u8).collect())
                .collect();
            let mut pieces = Vec::new();
            for (seq, f) in frames.iter().enumerate() {
                let mut off = 0;
                loop {
                    let end = (off + frag).min(f.len());
                    pieces.push((seq as u64, f.len() as u32, off, end));
                    if end >= f.len() {
                        break;
                    }
                    off = end;
                }
            }
            let mut rng = crate::sim::SimRng::new(order_seed);
            for i in (1..pieces.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                pieces.swap(i, j);
            }
            let dups: Vec<_> = pieces.iter().filter(|_| rng.chance(0.2)).cloned().collect();
            pieces.extend(dups);
            for (seq, len, start, end) in pieces {
                let data = Bytes::copy_from_slice(&frames[seq as usize][start..end]);
                r.on_fragment(t, &hdr(seq, MediaKind::Key, len, start as u32), data);
            }
            let got: Vec<(u64, Bytes)> = std::iter::from_fn(|| r.poll())
                .filter_map(|o| match o {
                    RecvOutput::Frame(f) => Some((f.seq, f.bytes)),
                    RecvOutput::Gap(_) => None,
                })
                .collect();
            proptest::prop_assert_eq!(got.len(), frames.len());
            for (i, (seq, bytes)) in got.iter().enumerate() {
                proptest::prop_assert_eq!(*seq, i as u64);
                proptest::prop_assert_eq!(&bytes[..], &frames[i][..]);
            }
            proptest::prop_assert_eq!(r.buffered_bytes(), 0);
        }
    }

    #[test]
    fn hostile_fragments_are_refused_without_harm() {
        let t = Instant::now();
        let limits = RecvLimits {
            max_frame_bytes: 1000,
            max_buffered_bytes: 1500,
            ..RecvLimits::default()
        };
        let mut r = Reassembler::new(limits);
        r.on_fragment(t, &hdr(0, MediaKind::Key, 5000, 0), Bytes::from_static(b"x"));
        r.on_fragment(t, &hdr(0, MediaKind::Key, 900, 0), Bytes::from_static(b"abc"));
        r.on_fragment(t, &hdr(1, MediaKind::Key, 900, 0), Bytes::from_static(b"abc"));
        // Overlapping, non-identical boundaries and contradicting lengths.
        r.on_fragment(t, &hdr(0, MediaKind::Key, 900, 1), Bytes::from_static(b"zz"));
        r.on_fragment(t, &hdr(0, MediaKind::Key, 901, 10), Bytes::from_static(b"zz"));
        r.on_fragment(t, &hdr(u64::MAX, MediaKind::Key, 1, 0), Bytes::from_static(b"z"));
        assert_eq!(r.stats.refused_fragments, 4);
        assert_eq!(r.stats.duplicate_fragments, 1);
        assert!(r.buffered_bytes() <= 1500);
        assert!(r.poll().is_none());
    }

    /// A peer that leaves a gap at the next expected frame and fills the slots behind it with empty frames,
    /// DROPPED notices and 1-byte frames: each costs a slot (`SLOT_COST` and `max_held_frames`), and a
    /// 1-byte frame that must wait holds a copy of its byte, not the receive buffer it came in.
    #[test]
    fn a_gap_at_the_head_cannot_make_the_receiver_hold_unbounded_slots_or_buffers() {
        let t = Instant::now();
        let limits = RecvLimits {
            max_held_frames: 1000,
            max_buffered_bytes: 1 << 20,
            ..RecvLimits::default()
        };
        let mut r = Reassembler::new(limits);
        // A big receive buffer (as io_uring's or the epoll arena's) with one 1-byte frame in it.
        let big = Bytes::from(vec![7u8; 64 << 10]);
        for seq in 1..5000u64 {
            match seq % 3 {
                0 => {
                    r.on_fragment(t, &hdr(seq, MediaKind::Audio, 0, 0), Bytes::new());
                }
                1 => {
                    r.on_dropped(
                        t,
                        &DroppedNotice {
                            stream: 1,
                            seq,
                            kind: MediaKind::Audio,
                            reason: DropReason::Deadline,
                        },
                    );
                }
                _ => {
                    r.on_fragment_in(t, &hdr(seq, MediaKind::Audio, 1, 0), &big, 5..6);
                }
            }
        }
        assert!(r.held_frames() <= 1000, "held {}", r.held_frames());
        assert!(r.buffered_bytes() >= r.held_frames() as u64 * SLOT_COST);
        assert!(r.stats.refused_over_slots > 0);
        // Every waiting 1-byte frame is its own copy: the 64 KiB buffer is referenced by nobody else.
        assert!(big.is_unique(), "a waiting frame pins the receive buffer");
        // The byte budget counts the slots too.
        let mut r = Reassembler::new(RecvLimits {
            max_buffered_bytes: 100 * SLOT_COST,
            ..RecvLimits::default()
        });
        for seq in 1..1000u64 {
            r.on_fragment(t, &hdr(seq, MediaKind::Audio, 0, 0), Bytes::new());
        }
        assert!(r.held_frames() <= 100, "held {}", r.held_frames());
        assert!(r.stats.refused_over_bytes > 0);
        // And the endpoint's budget, when it is the tighter one.
        let mut r = Reassembler::new(RecvLimits::default());
        r.set_endpoint_room(10 * SLOT_COST);
        for seq in 1..100u64 {
            r.on_fragment(t, &hdr(seq, MediaKind::Audio, 0, 0), Bytes::new());
        }
        assert_eq!(r.held_frames(), 10);
        assert!(r.stats.refused_over_endpoint_budget > 0);
    }

    /// Incomplete frames behind a gap that passed their deadline are given up when memory runs short (not
    /// only the one at the head), so new frames are not refused for the sake of late ones.
    #[test]
    fn expired_frames_behind_a_gap_are_reclaimed_under_pressure() {
        let t = Instant::now();
        let mut r = Reassembler::new(RecvLimits {
            max_buffered_bytes: 20 * 1000,
            ..RecvLimits::default()
        });
        let with_budget = |seq, len| FragmentHeader {
            budget_us: Some(50_000),
            ..hdr(seq, MediaKind::Key, len, 0)
        };
        // Frame 0 never comes; frames 1.. are half there, each 900 bytes of 1000, until the bound.
        let mut seq = 1;
        while r.on_fragment(t, &with_budget(seq, 1000), Bytes::from(vec![1; 900]))
            == FragmentOutcome::Accepted
        {
            seq += 1;
        }
        let held = r.buffered_bytes();
        // Past their deadline, a new frame still gets in: the late ones made room.
        let later = t + Duration::from_millis(100);
        let outcome = r.on_fragment(later, &with_budget(seq, 1000), Bytes::from(vec![1; 900]));
        assert_eq!(outcome, FragmentOutcome::Accepted);
        assert!(r.buffered_bytes() < held, "{} >= {held}", r.buffered_bytes());
        assert_eq!(r.stats.frames_expired, seq - 1);
    }

    /// 1-byte fragments at descending offsets, none adjacent: each opens a range. The ranges are a set (a
    /// logarithmic insert, not a shifted vector) and capped per frame.
    #[test]
    fn fragments_at_descending_offsets_are_cheap_and_their_ranges_capped() {
        let t = Instant::now();
        let mut r = Reassembler::new(RecvLimits {
            max_ranges_per_frame: 1000,
            ..RecvLimits::default()
        });
        let len = 200_000u32;
        let started = std::time::Instant::now();
        let mut refused = 0;
        for off in (0..len).rev().step_by(2) {
            let outcome = r.on_fragment(t, &hdr(0, MediaKind::Key, len, off), Bytes::from_static(b"x"));
            refused += u32::from(outcome == FragmentOutcome::Refused);
        }
        assert_eq!(refused, len / 2 - 1000);
        assert_eq!(r.stats.refused_over_ranges, u64::from(len / 2 - 1000));
        // Uncapped, 100,000 ranges still go in quickly (a shifted vector takes quadratic time).
        let mut r = Reassembler::new(RecvLimits {
            max_ranges_per_frame: usize::MAX,
            ..RecvLimits::default()
        });
        for off in (0..len).rev().step_by(2) {
            r.on_fragment(t, &hdr(0, MediaKind::Key, len, off), Bytes::from_static(b"x"));
        }
        // The other half completes the frame.
        for off in (0..len).step_by(2) {
            r.on_fragment(t, &hdr(0, MediaKind::Key, len, off), Bytes::from_static(b"y"));
        }
        assert!(matches!(r.poll(), Some(RecvOutput::Frame(f)) if f.bytes.len() == len as usize));
        assert_eq!(r.buffered_bytes(), 0);
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "took {:?}",
            started.elapsed()
        );
    }

    /// Fragments named by their range in a packet: a frame that is one whole fragment is a slice of the
    /// packet, a larger one is copied out of the packets it came in, and a range outside the packet is
    /// refused (never a panic).
    #[test]
    fn fragments_in_a_packet_are_taken_by_range() {
        let t = Instant::now();
        let mut r = Reassembler::new(RecvLimits::default());
        let packet = Bytes::from_static(b"..abcdef..");
        let whole = r.on_fragment_in(t, &hdr(0, MediaKind::Key, 3, 0), &packet, 2..5);
        let head = r.on_fragment_in(t, &hdr(1, MediaKind::Inter, 4, 0), &packet, 2..4);
        assert!(r.poll().is_some_and(|o| matches!(o, RecvOutput::Frame(f)
            if f.bytes == "abc" && f.bytes.as_ptr() == packet[2..].as_ptr())));
        assert!(r.poll().is_none(), "frame 1 is still partial");
        let tail = r.on_fragment_in(t, &hdr(1, MediaKind::Inter, 4, 2), &packet, 6..8);
        assert_eq!(
            (whole, head, tail),
            (
                FragmentOutcome::Accepted,
                FragmentOutcome::Accepted,
                FragmentOutcome::Accepted
            )
        );
        assert!(r
            .poll()
            .is_some_and(|o| matches!(o, RecvOutput::Frame(f) if f.bytes == "abef")));
        let outside = r.on_fragment_in(t, &hdr(2, MediaKind::Inter, 4, 0), &packet, 8..12);
        assert_eq!(outside, FragmentOutcome::Refused);
        assert_eq!(r.buffered_bytes(), 0);
    }
}
