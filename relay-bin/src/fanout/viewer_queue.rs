//! [`ViewerQueue`]: one viewer's bounded queue of frames, with its app's drop policy.
//!
//! The queue holds shared frames (reference counts, never payload copies) and the count of bytes of its head
//! already written to the socket. A slow viewer costs at most `bound_bytes` of queue (each frame charged its
//! RTMP bytes and [`FRAME_OVERHEAD_BYTES`], so a flood of tiny frames is bounded too); what happens at the
//! bound is the policy's choice:
//! - `none`: nothing is dropped; hitting the bound ends the viewer (the caller disconnects it);
//! - `latency`: frames older than the budget are dropped from the front; dropping a reference frame drops the
//!   rest of its GOP (video waits for the next keyframe), so the viewer never gets an undecodable frame;
//! - `gop`: when behind (over the bound, or the oldest frame queued longer than the budget), drop disposable frames,
//!   then the video up to the next keyframe, and audio only last.
//!
//! Metadata and sequence headers are never dropped for lack of room (a decoder cannot work without them), but a
//! queue keeps only the newest of each (metadata, the video header, the audio header) that it has not begun
//! to write: a newer one replaces an older one still queued, and the frames of that track between them go
//! too (they were coded against the older configuration; video resumes at the next keyframe). So a publisher
//! that sends headers in a loop cannot grow a viewer's queue past the bound. Control messages (rml_rtmp's
//! answers) are counted in [`ViewerQueue::control_bytes`]; the caller bounds them.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::DropPolicy;
use crate::egress::http_flv;
use crate::media::frame::FRAME_OVERHEAD_BYTES;
use crate::media::{Frame, MediaKind, Track};
use crate::rtmp::wire::frame_chunks;

/// The form a queue's frames go out in: each is an output's shared encoding of the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireForm {
    /// RTMP chunks of `chunk_size` (the size the viewer was told).
    Rtmp {
        /// The RTMP chunk size.
        chunk_size: usize,
    },
    /// FLV tags, as HTTP chunks when `chunked` (HTTP/1.1), else bare (HTTP/1.0).
    HttpFlv {
        /// Chunked transfer encoding.
        chunked: bool,
    },
}

/// Most frames handed to one `writev`.
const WRITE_BATCH: usize = 64;

/// What [`ViewerQueue::push`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued.
    Queued,
    /// Dropped (policy, or waiting for a keyframe after an earlier drop).
    Dropped,
    /// The queue is at its bound and the policy is `none`: the viewer must be disconnected.
    Overflow,
}

/// A queued frame: what the drop policies read of it, its RTMP form (the frame's shared encoding: one
/// reference count per viewer), and when it entered the queue.
#[derive(Debug)]
struct Queued {
    kind: MediaKind,
    track: Track,
    capture: Instant,
    budget: Option<Duration>,
    wire: Bytes,
    queued_at: Instant,
}

/// Counters of one viewer's queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Frames queued.
    pub frames_queued: u64,
    /// Frames dropped (by policy or while waiting for a keyframe), by any cause.
    pub frames_dropped: u64,
    /// Times the queue decided to skip to the next keyframe.
    pub gop_skips: u64,
    /// Bytes written to the socket.
    pub bytes_written: u64,
    /// Sequence headers or metadata replaced by a newer one before they were written.
    pub headers_replaced: u64,
}

/// One viewer's queue. See the module docs for the policies.
#[derive(Debug)]
pub struct ViewerQueue {
    /// The output form frames are queued in.
    form: WireForm,
    /// Bytes written before the first frame, once one is queued (an HTTP answer's head), if still owed.
    preamble: Option<Bytes>,
    /// The response is over (an HTTP body ended): frames offered now are dropped.
    sealed: bool,
    policy: DropPolicy,
    bound_bytes: usize,
    budget: Duration,
    /// Control messages (rml_rtmp's responses), written before the next frame starts.
    control: VecDeque<Bytes>,
    frames: VecDeque<Queued>,
    /// Bytes of `frames` not yet written.
    queued_bytes: usize,
    /// Bytes of the front frame already written (a frame in flight is never dropped).
    head_written: usize,
    /// Bytes of the front control message already written.
    control_written: usize,
    /// Bytes of `control` not yet written.
    control_bytes: usize,
    /// Video is being skipped until the next keyframe.
    waiting_for_key: bool,
    stats: QueueStats,
}

impl Queued {
    /// What the entry costs the queue's bound: its RTMP bytes and [`FRAME_OVERHEAD_BYTES`].
    fn cost(&self) -> usize {
        self.wire.len() + FRAME_OVERHEAD_BYTES
    }

    /// As [`Frame::time_left`].
    fn time_left(&self, now: Instant, default_budget: Duration) -> Duration {
        crate::media::frame::time_left(self.capture, self.budget, now, default_budget)
    }
}

impl ViewerQueue {
    /// An empty queue whose frames go out as RTMP chunks of `chunk_size` (the size the viewer was told).
    pub fn new(policy: DropPolicy, bound_bytes: usize, budget: Duration, chunk_size: usize) -> ViewerQueue {
        ViewerQueue {
            form: WireForm::Rtmp { chunk_size },
            preamble: None,
            sealed: false,
            policy,
            bound_bytes,
            budget,
            control: VecDeque::new(),
            frames: VecDeque::new(),
            queued_bytes: 0,
            head_written: 0,
            control_written: 0,
            control_bytes: 0,
            waiting_for_key: false,
            stats: QueueStats::default(),
        }
    }

    /// Changes the policy, bound and budget (when a connection becomes a viewer of an app).
    pub fn set_policy(&mut self, policy: DropPolicy, bound_bytes: usize, budget: Duration) {
        self.policy = policy;
        self.bound_bytes = bound_bytes;
        self.budget = budget;
    }

    /// The form frames are queued in.
    pub fn form(&self) -> WireForm {
        self.form
    }

    /// Sends frames in `form` from now on (a connection that turned out to be an HTTP viewer).
    pub fn set_form(&mut self, form: WireForm) {
        self.form = form;
    }

    /// Writes `bytes` before the first frame, when one is queued (an answer that must wait until there is
    /// something to send: an HTTP viewer's `200 OK` and FLV header).
    pub fn set_preamble(&mut self, bytes: Bytes) {
        self.preamble = Some(bytes);
    }

    /// Ends the response: no frame is queued from now on, and an unsent preamble never will be. Returns
    /// whether the preamble was still owed (no frame had been queued: the answer can still be an error).
    pub fn seal(&mut self) -> bool {
        self.sealed = true;
        self.preamble.take().is_some()
    }

    /// Skips video until the next keyframe (the stream's publisher changed: what follows does not depend on
    /// anything this viewer has).
    pub fn wait_for_keyframe(&mut self) {
        self.waiting_for_key = true;
    }

    /// Queues protocol bytes (never dropped; written before the next frame begins).
    pub fn push_control(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.control_bytes += bytes.len();
            self.control.push_back(bytes);
        }
    }

    /// Bytes of control messages queued and not yet written (the caller bounds them: a peer that never reads
    /// but keeps asking for answers, pings for instance, would grow them).
    pub fn control_bytes(&self) -> usize {
        self.control_bytes
    }

    /// Offers a frame to the queue at time `now`.
    pub fn push(&mut self, frame: &Frame, now: Instant) -> Pushed {
        if self.sealed {
            return Pushed::Dropped;
        }
        let essential = frame.kind.is_essential();
        if frame.track == Track::Video && !essential {
            if frame.kind == MediaKind::Key {
                self.waiting_for_key = false;
            } else if self.waiting_for_key {
                return self.dropped(1);
            }
        }
        if essential {
            self.replace_older_header(frame);
        }
        let wire = match self.form {
            WireForm::Rtmp { chunk_size } => frame_chunks(frame, chunk_size),
            WireForm::HttpFlv { chunked } => http_flv::frame_tag(frame, chunked),
        };
        let cost = wire.len() + FRAME_OVERHEAD_BYTES;
        match self.policy {
            DropPolicy::None => {
                if self.queued_bytes + cost > self.bound_bytes && !essential {
                    return Pushed::Overflow;
                }
            }
            DropPolicy::Latency => {
                self.drop_older_than_budget(now);
                if self.queued_bytes + cost > self.bound_bytes {
                    self.skip_gop();
                }
            }
            DropPolicy::Gop => {
                if self.behind(now, cost) {
                    self.drop_disposable();
                }
                if self.behind(now, cost) {
                    self.skip_gop();
                }
                if self.queued_bytes + cost > self.bound_bytes {
                    self.drop_audio();
                }
            }
        }
        if frame.kind == MediaKind::Key {
            // Whatever the policy skipped above, this keyframe is where video resumes.
            self.waiting_for_key = false;
        }
        if self.queued_bytes + cost > self.bound_bytes && !essential {
            // Still no room (one huge frame, or only essentials queued): drop this one and resync.
            if frame.track == Track::Video {
                self.waiting_for_key = true;
                self.stats.gop_skips += 1;
            }
            return self.dropped(1);
        }
        if frame.track == Track::Video && self.waiting_for_key && !essential {
            // The skip above removed this frame's references.
            return self.dropped(1);
        }
        if let Some(preamble) = self.preamble.take() {
            self.push_control(preamble);
        }
        self.queued_bytes += cost;
        self.frames.push_back(Queued {
            kind: frame.kind,
            track: frame.track,
            capture: frame.capture,
            budget: frame.budget,
            wire,
            queued_at: now,
        });
        self.stats.frames_queued += 1;
        Pushed::Queued
    }

    /// Writes as much as the socket takes, with one vectored write per batch. Returns bytes written;
    /// `Ok(0)` with [`ViewerQueue::is_empty`] false means the socket is full (WouldBlock).
    pub fn write_to<W: Write>(&mut self, out: &mut W) -> io::Result<usize> {
        let mut total = 0;
        loop {
            let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(WRITE_BATCH);
            let mut control_slices = 0;
            if self.head_written == 0 {
                for (i, bytes) in self.control.iter().enumerate() {
                    let start = if i == 0 { self.control_written } else { 0 };
                    slices.push(IoSlice::new(bytes.get(start..).unwrap_or_default()));
                    control_slices += 1;
                    if slices.len() == WRITE_BATCH {
                        break;
                    }
                }
            }
            for (i, Queued { wire, .. }) in self.frames.iter().enumerate() {
                if slices.len() == WRITE_BATCH {
                    break;
                }
                let start = if i == 0 { self.head_written } else { 0 };
                slices.push(IoSlice::new(wire.get(start..).unwrap_or_default()));
            }
            if slices.is_empty() {
                return Ok(total);
            }
            let written = match out.write_vectored(&slices) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "peer closed")),
                Ok(n) => n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(total),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            };
            drop(slices);
            total += written;
            self.stats.bytes_written += written as u64;
            self.consume(written, control_slices);
        }
    }

    /// Hands the queue's buffers, whole and in the order [`ViewerQueue::write_to`] writes them, to `send`
    /// (an io_uring connection's queue: the shared `Bytes` of each control message and frame, no copy),
    /// until `send` refuses one (it returns `false`; that buffer stays queued) or the queue is empty. Returns
    /// the bytes handed over.
    pub fn send_with(&mut self, mut send: impl FnMut(Bytes) -> bool) -> usize {
        let mut total = 0;
        loop {
            let control = self.head_written == 0 && !self.control.is_empty();
            let next = if control {
                self.control
                    .front()
                    .map(|b| b.slice(self.control_written.min(b.len())..))
            } else {
                self.frames
                    .front()
                    .map(|q| q.wire.slice(self.head_written.min(q.wire.len())..))
            };
            let Some(next) = next else {
                return total;
            };
            let len = next.len();
            if !send(next) {
                return total;
            }
            total += len;
            self.stats.bytes_written += len as u64;
            self.consume(len, usize::from(control));
            if len == 0 && !control {
                // `consume` pops a frame only for bytes written: an empty one goes here.
                if let Some(q) = self.frames.pop_front() {
                    self.queued_bytes -= q.cost();
                }
            }
        }
    }

    fn consume(&mut self, mut written: usize, control_slices: usize) {
        for _ in 0..control_slices {
            let Some(front) = self.control.front() else { break };
            let left = front.len() - self.control_written;
            if written >= left {
                written -= left;
                self.control.pop_front();
                self.control_written = 0;
                self.control_bytes -= left;
            } else {
                self.control_written += written;
                self.control_bytes -= written;
                return;
            }
        }
        while written > 0 {
            let Some(front) = self.frames.front() else {
                break;
            };
            let left = front.wire.len() - self.head_written;
            if written >= left {
                written -= left;
                self.queued_bytes -= front.cost();
                self.frames.pop_front();
                self.head_written = 0;
            } else {
                self.head_written += written;
                written = 0;
            }
        }
    }

    /// Nothing left to write.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty() && self.control.is_empty()
    }

    /// Bytes of frames queued (including the unwritten part of the head), each frame charged its RTMP bytes and
    /// [`FRAME_OVERHEAD_BYTES`].
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Frames queued.
    pub fn queued_frames(&self) -> usize {
        self.frames.len()
    }

    /// The queue's counters.
    pub fn stats(&self) -> QueueStats {
        self.stats
    }

    /// Video is being skipped until the next keyframe.
    pub fn waiting_for_key(&self) -> bool {
        self.waiting_for_key
    }

    fn dropped(&mut self, frames: u64) -> Pushed {
        self.stats.frames_dropped += frames;
        Pushed::Dropped
    }

    fn behind(&self, now: Instant, incoming: usize) -> bool {
        if self.queued_bytes + incoming > self.bound_bytes {
            return true;
        }
        // Behind = the oldest droppable frame has waited in this queue longer than the budget. Queue time, not
        // frame age: a new viewer's GOP-cache burst is old but not late, and metadata may be hours old.
        self.frames
            .iter()
            .skip(self.first_droppable())
            .find(|entry| !entry.kind.is_essential())
            .is_some_and(|oldest| now.saturating_duration_since(oldest.queued_at) > self.budget)
    }

    /// The index from which frames may be removed (a partly written head stays).
    fn first_droppable(&self) -> usize {
        usize::from(self.head_written > 0)
    }

    fn remove_where(&mut self, mut drop: impl FnMut(&Queued) -> bool) -> u64 {
        let start = self.first_droppable();
        let mut removed = 0;
        let mut index = 0;
        let mut freed = 0;
        self.frames.retain(|frame| {
            let keep = index < start || !drop(frame);
            index += 1;
            if !keep {
                removed += 1;
                freed += frame.cost();
            }
            keep
        });
        self.queued_bytes -= freed;
        self.stats.frames_dropped += removed;
        removed
    }

    /// A new sequence header or metadata (`frame`) replaces an older one of its kind and track still queued
    /// (and not begun): the older goes, and with a header, the frames of its track queued after it (coded
    /// against the older configuration; video then resumes at the next keyframe).
    fn replace_older_header(&mut self, frame: &Frame) {
        let start = self.first_droppable();
        let older = self
            .frames
            .iter()
            .enumerate()
            .skip(start)
            .rev()
            .find(|(_, q)| q.kind == frame.kind && q.track == frame.track)
            .map(|(index, _)| index);
        let Some(older) = older else {
            return;
        };
        let header = frame.kind == MediaKind::SeqHeader;
        let track = frame.track;
        let mut index = start;
        let mut lost_video = false;
        let removed = self.remove_where(|q| {
            let here = index;
            index += 1;
            let drop = here == older || (header && here > older && q.track == track);
            lost_video |= drop && q.track == Track::Video && !q.kind.is_essential();
            drop
        });
        self.stats.headers_replaced += removed.min(1);
        if lost_video {
            // Video of the new configuration starts at its next keyframe.
            self.waiting_for_key = true;
        }
    }

    fn drop_disposable(&mut self) {
        self.remove_where(|frame| frame.kind == MediaKind::Disposable);
    }

    fn drop_audio(&mut self) {
        self.remove_where(|frame| frame.kind == MediaKind::Audio);
    }

    /// Drops queued video up to the latest queued keyframe (one that would leave something to drop); with
    /// none, drops the current GOP's video and skips video until the next keyframe arrives.
    fn skip_gop(&mut self) {
        let start = self.first_droppable();
        let is_video_frame = |entry: &Queued| entry.track == Track::Video && !entry.kind.is_essential();
        // Resume at the latest queued keyframe that has some video before it to drop.
        let first_video = self
            .frames
            .iter()
            .enumerate()
            .skip(start)
            .find(|(_, entry)| is_video_frame(entry))
            .map(|(index, _)| index);
        let next_key = first_video.and_then(|first| {
            self.frames
                .iter()
                .enumerate()
                .skip(first + 1)
                .rev()
                .find(|(_, entry)| entry.kind == MediaKind::Key)
                .map(|(index, _)| index)
        });
        let mut index = 0;
        self.remove_where(|frame| {
            let here = index + start;
            index += 1;
            frame.track == Track::Video
                && matches!(
                    frame.kind,
                    MediaKind::Key | MediaKind::Inter | MediaKind::Disposable
                )
                && next_key.is_none_or(|key| here < key)
        });
        self.stats.gop_skips += 1;
        if next_key.is_none() {
            self.waiting_for_key = true;
        }
    }

    /// Latency policy: frames past their budget (the frame's own end-to-end budget, else the app's) go;
    /// losing a reference frame skips to the next keyframe.
    fn drop_older_than_budget(&mut self, now: Instant) {
        let start = self.first_droppable();
        let stale = self
            .frames
            .iter()
            .skip(start)
            .take_while(|entry| entry.time_left(now, self.budget).is_zero())
            .count();
        if stale == 0 {
            return;
        }
        let mut lost_reference = false;
        let mut index = 0;
        self.remove_where(|frame| {
            let stale_here = index < stale;
            index += 1;
            let essential = frame.kind.is_essential();
            if stale_here && !essential {
                lost_reference |= matches!(frame.kind, MediaKind::Key | MediaKind::Inter);
                true
            } else {
                false
            }
        });
        if lost_reference {
            self.skip_gop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the queue charges each frame beyond its bytes.
    const O: usize = FRAME_OVERHEAD_BYTES;

    fn frame(kind: MediaKind, size: usize, at: Instant) -> Frame {
        let track = match kind {
            MediaKind::Audio => Track::Audio,
            MediaKind::Metadata => Track::Data,
            _ => Track::Video,
        };
        // One chunk: the RTMP form is a 12-byte header and the body, `size` bytes in all (12 at least).
        let body = Bytes::from(vec![kind as u8; size.saturating_sub(HEADER)]);
        Frame::new(kind, track, 0, 0, body, at)
    }

    /// The type 0 chunk header of a frame's RTMP form.
    const HEADER: usize = 12;
    /// A chunk size no test frame reaches.
    const CHUNK: usize = 1 << 24;

    fn queue(policy: DropPolicy, bound_bytes: usize, budget: Duration) -> ViewerQueue {
        ViewerQueue::new(policy, bound_bytes, budget, CHUNK)
    }

    /// A writer that takes at most `room` bytes, then reports WouldBlock.
    struct Socket {
        taken: Vec<u8>,
        room: usize,
    }

    impl Write for Socket {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.taken.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn kinds(queue: &ViewerQueue) -> Vec<MediaKind> {
        queue.frames.iter().map(|f| f.kind).collect()
    }

    #[test]
    fn none_policy_overflows_at_the_bound() {
        let now = Instant::now();
        let mut queue = queue(DropPolicy::None, 1000 + O, Duration::from_secs(1));
        assert_eq!(queue.push(&frame(MediaKind::Key, 600, now), now), Pushed::Queued);
        assert_eq!(
            queue.push(&frame(MediaKind::Inter, 600, now), now),
            Pushed::Overflow
        );
        assert_eq!(queue.queued_bytes(), 600 + O);
    }

    #[test]
    fn gop_policy_drops_disposable_first_then_the_gop_and_audio_last() {
        let now = Instant::now();
        let mut queue = queue(DropPolicy::Gop, 1000 + 4 * O, Duration::from_secs(10));
        for kind in [
            MediaKind::Key,
            MediaKind::Audio,
            MediaKind::Disposable,
            MediaKind::Inter,
        ] {
            assert_eq!(queue.push(&frame(kind, 200, now), now), Pushed::Queued);
        }
        // 800 queued; 300 more is over the bound: the disposable frame goes first.
        assert_eq!(
            queue.push(&frame(MediaKind::Inter, 300, now), now),
            Pushed::Queued
        );
        assert_eq!(
            kinds(&queue),
            vec![
                MediaKind::Key,
                MediaKind::Audio,
                MediaKind::Inter,
                MediaKind::Inter
            ]
        );
        // Over again: no disposable left, so the GOP's video goes and video waits for a keyframe.
        assert_eq!(
            queue.push(&frame(MediaKind::Inter, 300, now), now),
            Pushed::Dropped
        );
        assert_eq!(kinds(&queue), vec![MediaKind::Audio]);
        assert!(queue.waiting_for_key());
        assert_eq!(
            queue.push(&frame(MediaKind::Audio, 100, now), now),
            Pushed::Queued
        );
        assert_eq!(queue.push(&frame(MediaKind::Key, 300, now), now), Pushed::Queued);
        assert!(!queue.waiting_for_key());
        assert!(queue.queued_bytes() <= 1000 + 4 * O);
    }

    #[test]
    fn gop_policy_keeps_a_queued_keyframe_and_what_follows() {
        let now = Instant::now();
        let mut queue = queue(DropPolicy::Gop, 1000 + 4 * O, Duration::from_secs(10));
        for kind in [MediaKind::Key, MediaKind::Inter, MediaKind::Key, MediaKind::Inter] {
            queue.push(&frame(kind, 200, now), now);
        }
        assert_eq!(
            queue.push(&frame(MediaKind::Inter, 300, now), now),
            Pushed::Queued
        );
        assert_eq!(
            kinds(&queue),
            vec![MediaKind::Key, MediaKind::Inter, MediaKind::Inter]
        );
        assert!(!queue.waiting_for_key());
    }

    #[test]
    fn latency_policy_drops_stale_frames_and_resyncs_on_a_keyframe() {
        let start = Instant::now();
        let later = start + Duration::from_millis(500);
        let mut queue = queue(DropPolicy::Latency, 1 << 20, Duration::from_millis(300));
        queue.push(&frame(MediaKind::SeqHeader, 40, start), start);
        queue.push(&frame(MediaKind::Key, 100, start), start);
        queue.push(&frame(MediaKind::Inter, 100, start), start);
        // Half a second later the old frames are past the budget: they go, seq header stays.
        assert_eq!(
            queue.push(&frame(MediaKind::Inter, 100, later), later),
            Pushed::Dropped
        );
        assert_eq!(kinds(&queue), vec![MediaKind::SeqHeader]);
        assert_eq!(
            queue.push(&frame(MediaKind::Audio, 10, later), later),
            Pushed::Queued
        );
        assert_eq!(
            queue.push(&frame(MediaKind::Key, 100, later), later),
            Pushed::Queued
        );
    }

    #[test]
    fn a_frame_that_carries_its_own_budget_is_judged_by_it() {
        // A frame relayed from a far PoP arrives with most of its end-to-end budget spent: 100 ms left of
        // 400, while the app's budget is 3 s. The latency policy drops it (and its GOP) by its own budget.
        let start = Instant::now();
        let mut queue = queue(DropPolicy::Latency, 1 << 20, Duration::from_secs(3));
        let mut key = frame(MediaKind::Key, 100, start);
        key.budget = Some(Duration::from_millis(400));
        let mut inter = frame(MediaKind::Inter, 100, start);
        inter.budget = Some(Duration::from_millis(400));
        queue.push(&key, start);
        queue.push(&inter, start);
        let later = start + Duration::from_millis(450);
        assert_eq!(key.time_left(later, Duration::from_secs(3)), Duration::ZERO);
        assert_eq!(
            queue.push(&frame(MediaKind::Audio, 10, later), later),
            Pushed::Queued
        );
        assert_eq!(kinds(&queue), vec![MediaKind::Audio]);
        assert!(queue.waiting_for_key());
        // Without a budget of its own a frame of the same age is within the app's 3 s.
        let plain = frame(MediaKind::Key, 100, start);
        assert_eq!(
            plain.time_left(later, Duration::from_secs(3)),
            Duration::from_millis(2550)
        );
    }

    #[test]
    fn a_frame_is_encoded_once_and_every_viewer_shares_its_rtmp_form() {
        let now = Instant::now();
        let key = frame(MediaKind::Key, 300, now);
        assert!(
            key.encodings.rtmp.get().is_none(),
            "nothing is encoded before an RTMP viewer asks"
        );
        let mut a = queue(DropPolicy::Gop, 1 << 20, Duration::from_secs(10));
        let mut b = queue(DropPolicy::Gop, 1 << 20, Duration::from_secs(10));
        a.push(&key, now);
        // Another core's copy of the frame (a clone) finds the same encoding.
        b.push(&key.clone(), now);
        let (mut sent_a, mut sent_b) = (Vec::new(), Vec::new());
        a.send_with(|bytes| {
            sent_a.push(bytes);
            true
        });
        b.send_with(|bytes| {
            sent_b.push(bytes);
            true
        });
        assert_eq!(sent_a[0].len(), 300);
        assert_eq!(sent_a[0].as_ptr(), sent_b[0].as_ptr(), "one encoding, shared");
        assert_eq!(
            key.encodings.rtmp.get().map(|w| w.as_ptr()),
            Some(sent_a[0].as_ptr())
        );
    }

    #[test]
    fn send_with_hands_over_the_shared_buffers_in_write_order_until_refused() {
        let now = Instant::now();
        let mut queue = queue(DropPolicy::Gop, 1 << 20, Duration::from_secs(10));
        let key = frame(MediaKind::Key, 300, now);
        queue.push_control(Bytes::from_static(b"ctl"));
        queue.push(&key, now);
        queue.push(&frame(MediaKind::Inter, 200, now), now);
        // A partly written head (from an earlier vectored write) goes first, as its remainder.
        let mut socket = Socket {
            taken: Vec::new(),
            room: 3 + 100,
        };
        queue.write_to(&mut socket).unwrap();
        let mut sent: Vec<Bytes> = Vec::new();
        let handed = queue.send_with(|b| {
            if sent.len() == 1 {
                return false;
            }
            sent.push(b);
            true
        });
        assert_eq!(handed, 200);
        assert_eq!(sent[0].len(), 200);
        // The rest of the keyframe's own buffer, not a copy.
        assert_eq!(sent[0].as_ptr(), frame_chunks(&key, CHUNK)[100..].as_ptr());
        assert_eq!(queue.queued_frames(), 1);
        assert_eq!(queue.send_with(|_| true), 200);
        assert!(queue.is_empty());
        assert_eq!(queue.queued_bytes(), 0);
        assert_eq!(queue.stats().bytes_written, 3 + 300 + 200);
    }

    #[test]
    fn a_partly_written_frame_is_never_dropped_and_bytes_stay_in_order() {
        let now = Instant::now();
        let mut queue = queue(DropPolicy::Gop, 1000 + 2 * O, Duration::from_secs(10));
        queue.push_control(Bytes::from_static(b"ctl"));
        queue.push(&frame(MediaKind::Key, 400, now), now);
        queue.push(&frame(MediaKind::Inter, 400, now), now);
        let mut socket = Socket {
            taken: Vec::new(),
            room: 100,
        };
        assert_eq!(queue.write_to(&mut socket).unwrap(), 100);
        assert_eq!(&socket.taken[..3], b"ctl");
        // Pressure: the partly written keyframe stays; the inter frame behind it goes.
        assert_eq!(
            queue.push(&frame(MediaKind::Inter, 600, now), now),
            Pushed::Dropped
        );
        assert_eq!(kinds(&queue), vec![MediaKind::Key]);
        socket.room = usize::MAX;
        queue.write_to(&mut socket).unwrap();
        assert!(queue.is_empty());
        assert_eq!(socket.taken.len(), 3 + 400);
        assert_eq!(queue.queued_bytes(), 0);
    }

    #[test]
    fn a_new_viewers_old_cached_gop_is_not_dropped_as_late() {
        let joined = Instant::now() + Duration::from_secs(3600);
        let published = Instant::now();
        let keyframe_at = joined - Duration::from_millis(1_900);
        let mut queue = queue(DropPolicy::Gop, 1 << 20, Duration::from_secs(1));
        // Metadata and sequence headers from an hour ago, a GOP that started 1.9 s ago (older than the budget).
        assert_eq!(
            queue.push(&frame(MediaKind::Metadata, 50, published), joined),
            Pushed::Queued
        );
        assert_eq!(
            queue.push(&frame(MediaKind::SeqHeader, 50, published), joined),
            Pushed::Queued
        );
        assert_eq!(
            queue.push(&frame(MediaKind::Key, 5000, keyframe_at), joined),
            Pushed::Queued
        );
        assert_eq!(
            queue.push(&frame(MediaKind::Inter, 500, keyframe_at), joined),
            Pushed::Queued
        );
        assert_eq!(
            queue.push(&frame(MediaKind::Inter, 500, joined), joined),
            Pushed::Queued
        );
        assert!(!queue.waiting_for_key());
        // Unread for longer than the budget: now the viewer is behind, and the GOP goes.
        let later = joined + Duration::from_millis(1_500);
        assert_eq!(
            queue.push(&frame(MediaKind::Inter, 500, later), later),
            Pushed::Dropped
        );
        assert!(queue.waiting_for_key());
        assert_eq!(
            queue.push(&frame(MediaKind::Key, 5000, later), later),
            Pushed::Queued
        );
    }

    #[test]
    fn memory_never_exceeds_the_bound_under_any_policy() {
        let now = Instant::now();
        for policy in [DropPolicy::Gop, DropPolicy::Latency, DropPolicy::None] {
            let mut queue = queue(policy, 10_000, Duration::from_millis(100));
            for i in 0..2000u32 {
                let kind = match i % 50 {
                    0 => MediaKind::Key,
                    n if n % 2 == 0 => MediaKind::Audio,
                    n if n % 3 == 0 => MediaKind::Disposable,
                    _ => MediaKind::Inter,
                };
                let at = now + Duration::from_millis(u64::from(i) * 10);
                let _ = queue.push(&frame(kind, 300 + (i as usize % 7) * 100, at), at);
                assert!(queue.queued_bytes() <= 10_000, "{policy:?} at {i}");
            }
        }
    }

    #[test]
    fn a_flood_of_tiny_frames_is_bounded_by_what_each_costs_in_memory() {
        // Issue 17, item 18: the bound counted wire bytes only, so 13-byte frames filled a 64 KiB bound with
        // 5,000 queue entries (about 100 bytes of memory each, whatever the frame's size).
        let now = Instant::now();
        let mut queue = queue(DropPolicy::Gop, 64 << 10, Duration::from_secs(3600));
        for _ in 0..20_000 {
            let _ = queue.push(&frame(MediaKind::Audio, 13, now), now);
        }
        let frames = queue.queued_frames();
        assert!(
            frames * 100 <= 64 << 10,
            "{frames} tiny frames queued under a 64 KiB bound"
        );
        assert!(frames > 0);
    }

    #[test]
    fn a_newer_header_replaces_a_queued_one_and_the_frames_coded_against_it() {
        let now = Instant::now();
        let mut queue = queue(DropPolicy::Gop, 1 << 20, Duration::from_secs(10));
        for kind in [
            MediaKind::Metadata,
            MediaKind::SeqHeader,
            MediaKind::Key,
            MediaKind::Audio,
            MediaKind::Inter,
            MediaKind::Metadata,
        ] {
            assert_eq!(queue.push(&frame(kind, 50, now), now), Pushed::Queued);
        }
        assert_eq!(
            queue.push(&frame(MediaKind::SeqHeader, 50, now), now),
            Pushed::Queued
        );
        assert_eq!(
            kinds(&queue),
            vec![MediaKind::Audio, MediaKind::Metadata, MediaKind::SeqHeader]
        );
        assert_eq!(queue.stats().headers_replaced, 2);
        assert!(queue.waiting_for_key());
        assert_eq!(
            queue.push(&frame(MediaKind::Inter, 50, now), now),
            Pushed::Dropped
        );
        assert_eq!(queue.push(&frame(MediaKind::Key, 50, now), now), Pushed::Queued);
    }
}
