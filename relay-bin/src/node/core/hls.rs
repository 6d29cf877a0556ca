//! HLS on the cores. The stream's owner core packages it ([`HlsStream`]: an [`HlsMuxer`] fed every frame as
//! the owner's GOP cache is, started from that cache) from the first HLS request until none came for
//! `egress.hls_idle_ms`: one packaging per node, so a viewer whose requests land on different cores
//! (SO_REUSEPORT spreads connections) sees one playlist and one set of segments. A request that arrives on
//! another core is passed to the owner through its inbox ([`HlsRequest`]) and the answer comes back
//! ([`crate::node::mailbox::CoreMsg::HlsAnswer`]) as the segments' own buffers: a request, not a frame, crosses
//! cores, and nothing is copied.
//!
//! A request is answered at once when it can be; otherwise it waits on the stream (parked): a playlist
//! before the first segment (at most `rtmp.play_wait_ms`, then `404`), an LL-HLS blocking reload
//! (`_HLS_msn`/`_HLS_part`) or a preload-hinted part (at most three target durations). Every parked request
//! is answered exactly once (what it asked for, the playlist as it is at its deadline, `404` when packaging
//! stops, `403` on a forbid) unless its connection closes first: the core keeps an index from a parked
//! request's connection to the stream it waits on, so a closed connection is forgotten in O(1) (the viewer's
//! core tells the owner when the request was posted there). An answer goes back to the request it was
//! made for (its number on a kept-alive connection); a stale one is dropped. A banned stream is
//! answered `403` with the reason, and a forbid drops its packaging at once. Viewer sessions (the `session`
//! query token or the `popline_hls` cookie, given on the first playlist) are counted per stream; each core
//! reports the ones it saw and the node counts them once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{info, warn};

use super::NodeCore;
use crate::control::ClientId;
use crate::egress::hls::{
    media_playlist, multivariant_playlist, HlsMuxer, MuxerConfig, PlaylistOptions, Variant,
};
use crate::egress::http::{error_response, response_head, HlsResource, Persistence, Request, SESSION_COOKIE};
use crate::media::Frame;
use crate::node::clients::Token;
use crate::node::mailbox::CoreMsg;
use crate::node::shared::{CoreCounters, Shared};
use crate::node::streams::LocalStream;
use crate::stream_key::StreamKey;

/// Where an HLS answer goes: the viewer's connection on its core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HlsReply {
    /// The core the viewer is connected to.
    pub core: usize,
    /// Its connection there.
    pub token: Token,
    /// Its client id (a token reused by a later connection is not answered).
    pub client: ClientId,
    /// The request's number on its connection (a kept-alive connection's later request is not answered
    /// with this one's answer).
    pub request: u32,
}

/// A parked request's connection: its core and its token there (a connection has one request at a time).
pub(super) type ParkedId = (usize, Token);

impl HlsReply {
    fn id(&self) -> ParkedId {
        (self.core, self.token)
    }
}

/// An HLS request, as the owner core handles it.
#[derive(Debug)]
pub struct HlsRequest {
    key: StreamKey,
    resource: HlsResource,
    head_only: bool,
    session: String,
    new_session: bool,
    /// What the answer's head says of the connection (decided by the viewer's core).
    persistence: Persistence,
    reply: HlsReply,
}

/// Most requests that may wait on one stream at once (more are answered 503).
const MAX_PARKED: usize = 65_536;

/// A request waiting for what it asked for.
#[derive(Debug)]
struct Parked {
    request: HlsRequest,
    deadline: Instant,
    /// Not tried yet (its waits start when it is).
    first: bool,
}

/// One stream's HLS on one core.
#[derive(Debug)]
pub struct HlsStream {
    muxer: HlsMuxer,
    low_latency: bool,
    last_request: Instant,
    /// Viewer sessions seen, and when last.
    sessions: HashMap<String, Instant>,
    /// Requests waiting, by their connection (the core's `hls_parked` indexes the same ones).
    parked: HashMap<ParkedId, Parked, foldhash::fast::RandomState>,
    /// The muxer's refusal was logged.
    refusal_logged: bool,
}

impl HlsStream {
    /// Feeds one frame to the muxer; whether a part or segment was completed.
    pub(super) fn push(&mut self, frame: &Frame, unix_ms: u64, now: Instant) -> bool {
        let changed = self.muxer.push(frame, unix_ms, now);
        changed.part || changed.segment
    }

    /// The stream ended (after the grace period): the playlist is completed with `EXT-X-ENDLIST`.
    pub(super) fn finish(&mut self, now: Instant) {
        self.muxer.finish(now);
    }

    /// The stream's publisher changed: a discontinuity.
    pub(super) fn discontinue(&mut self, now: Instant) {
        self.muxer.discontinue(now);
    }

    /// Sessions seen within `idle` of `now`.
    pub(super) fn sessions(&self) -> impl Iterator<Item = &String> {
        self.sessions.keys()
    }
}

/// The playlists' content type.
const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";

/// What answering a request came to.
enum Answer {
    /// Status, reason and body buffers, content type.
    Ok {
        content_type: &'static str,
        body: Vec<Bytes>,
        cache: &'static str,
    },
    /// Wait (until the deadline).
    Wait(Instant),
    /// An error status and why.
    Error(u16, &'static str, String),
}

impl NodeCore {
    fn muxer_config(&self) -> MuxerConfig {
        let egress = &self.shared.config.egress;
        MuxerConfig {
            target_ms: egress.hls_target_ms,
            part_target_ms: egress.hls_part_ms,
            window: egress.hls_window,
            ..MuxerConfig::default()
        }
    }

    /// An HLS request from a viewer on this core: bans and the switch are checked here, the session is
    /// made, and the stream's owner core answers it.
    pub(super) fn on_hls_request(
        &mut self,
        token: Token,
        key: StreamKey,
        resource: HlsResource,
        request: &Request,
    ) {
        let cors = self.shared.config.egress.cors_allow_origin.clone();
        let persistence = self.http_persistence(token);
        if !self.shared.config.egress.hls {
            let why = "HLS is off on this node (egress.hls)";
            let answer = error_response(404, "Not Found", &cors, persistence, why);
            return self.http_answer(token, answer, Vec::new());
        }
        if let Some(ban) = self.shared.bans.check(&key) {
            let why = format!("stream {key} is forbidden: {}", ban.reason);
            CoreCounters::add(&self.counters.refused, 1);
            let answer = error_response(403, "Forbidden", &cors, persistence, &why);
            return self.http_answer(token, answer, Vec::new());
        }
        let Some((client, number)) = self.clients.get(token).and_then(|c| match &c.session {
            super::Session::Http(http) => Some((c.id, http.reader.requests_read())),
            super::Session::Rtmp(_) => None,
        }) else {
            return;
        };
        let (session, new_session) = match &request.session {
            Some(session) => (session.clone(), false),
            None => {
                self.next_sequence += 1;
                (
                    format!("{:x}", ((self.index as u64) << 48) | self.next_sequence),
                    true,
                )
            }
        };
        let request = HlsRequest {
            key: key.clone(),
            resource,
            head_only: request.head_only,
            session,
            new_session,
            persistence,
            reply: HlsReply {
                core: self.index,
                token,
                client,
                request: number,
            },
        };
        let owner = self.shared.owner_of(&key);
        if owner == self.index {
            return self.on_hls_request_at_owner(request);
        }
        if self.post(owner, CoreMsg::HlsRequest(Box::new(request))).is_err() {
            let why = "the node is overloaded (the stream's core did not take the request)";
            let answer = error_response(503, "Service Unavailable", &cors, persistence, why);
            return self.http_answer(token, answer, Vec::new());
        }
        if let Some(super::Session::Http(http)) = self.clients.get_mut(token).map(|c| &mut c.session) {
            http.hls_posted = Some((owner, self.now));
        }
    }

    /// Owner: an HLS request of a viewer on this core or another.
    pub(super) fn on_hls_request_at_owner(&mut self, request: HlsRequest) {
        let now = self.now;
        let key = request.key.clone();
        self.hls_attach(&key, now);
        let Some(hls) = self.streams.get_mut(&key).and_then(|s| s.hls.as_mut()) else {
            return;
        };
        hls.last_request = now;
        if matches!(request.resource, HlsResource::Playlist { .. }) || !request.new_session {
            hls.sessions.insert(request.session.clone(), now);
        }
        if hls.parked.len() >= MAX_PARKED {
            let cors = self.shared.config.egress.cors_allow_origin.clone();
            let why = "too many HLS requests wait on this stream";
            let answer = error_response(503, "Service Unavailable", &cors, request.persistence, why);
            return self.hls_reply(request.reply, answer, Vec::new());
        }
        self.hls_try(
            &key,
            Parked {
                request,
                deadline: now,
                first: true,
            },
        );
    }

    /// The owner's answer to a request of a viewer on this core: written if that request still waits for it.
    pub(super) fn on_hls_answer(&mut self, reply: HlsReply, head: Bytes, body: Vec<Bytes>) {
        let waits = self.clients.get(reply.token).is_some_and(|c| {
            c.id == reply.client
                && matches!(&c.session, super::Session::Http(http)
                    if http.reader.is_waiting() && http.reader.requests_read() == reply.request)
        });
        if waits {
            self.http_answer(reply.token, head, body);
        }
    }

    /// Sends an answer to where it goes: written here, or posted to the viewer's core. The request no longer
    /// waits here.
    fn hls_reply(&mut self, reply: HlsReply, head: Bytes, body: Vec<Bytes>) {
        self.hls_parked.remove(&reply.id());
        if reply.core == self.index {
            return self.on_hls_answer(reply, head, body);
        }
        if self
            .post(reply.core, CoreMsg::HlsAnswer { reply, head, body })
            .is_err()
        {
            warn!(core = self.index, to = reply.core, "HLS answer lost: inbox full");
        }
    }

    /// Owner: starts packaging `key` if it is not yet, from the GOP cache's frames.
    fn hls_attach(&mut self, key: &StreamKey, now: Instant) {
        if self.streams.get(key).is_some_and(|s| s.hls.is_some()) {
            return;
        }
        let gop_bytes = self.gop_cache_bytes(key);
        let low_latency = self.shared.config.fanout_for(key.app()).low_latency_hls;
        let mut hls = Box::new(HlsStream {
            muxer: HlsMuxer::new(self.muxer_config()),
            low_latency,
            last_request: now,
            sessions: HashMap::new(),
            parked: HashMap::default(),
            refusal_logged: false,
        });
        let shared = self.shared.clone();
        let stream = self
            .streams
            .entry(key.clone())
            .or_insert_with(|| LocalStream::new(gop_bytes, true));
        for frame in stream.gop.start_frames() {
            hls.push(frame, shared.unix_time_ms(frame.capture), now);
        }
        stream.hls = Some(hls);
        info!(core = self.index, stream = %key, low_latency, "HLS packaging starts");
        // An edge of the mesh pulls the stream for its HLS viewers as for its RTMP ones.
        self.update_mesh_demand(key);
    }

    /// Answers `parked` now if it can, else parks it on the stream.
    fn hls_try(&mut self, key: &StreamKey, mut parked: Parked) {
        let now = self.now;
        let play_wait = Duration::from_millis(self.shared.config.rtmp.play_wait_ms);
        let block = Duration::from_millis(self.shared.config.egress.hls_target_ms * 3);
        let cors = self.shared.config.egress.cors_allow_origin.clone();
        let shared = Arc::clone(&self.shared);
        let reply = parked.request.reply;
        let persistence = parked.request.persistence;
        let Some(hls) = self.streams.get_mut(key).and_then(|s| s.hls.as_mut()) else {
            // Never so (the callers hold the packaging): an answer all the same, no silent drop.
            let why = format!("HLS of stream {key} stopped");
            let answer = error_response(404, "Not Found", &cors, persistence, &why);
            return self.hls_reply(reply, answer, Vec::new());
        };
        if let Some(why) = hls.muxer.refused() {
            if !hls.refusal_logged {
                hls.refusal_logged = true;
                warn!(core = self.index, stream = %key, reason = why, "stream cannot be packaged as HLS");
            }
            let why = format!("stream {key} cannot be served as HLS: {why}");
            let answer = error_response(415, "Unsupported Media Type", &cors, persistence, &why);
            return self.hls_reply(reply, answer, Vec::new());
        }
        let waits = parked.first.then_some((play_wait, block));
        match answer(hls, &parked.request, now, waits, &shared) {
            Answer::Wait(deadline) => {
                if parked.first {
                    parked.deadline = deadline;
                    parked.first = false;
                }
                hls.parked.insert(reply.id(), parked);
                self.hls_parked.insert(reply.id(), key.clone());
            }
            done => self.hls_send(&parked.request, done),
        }
    }

    /// Writes a final answer (a `200` with its body, or an error with its reason) to `request`'s viewer.
    fn hls_send(&mut self, request: &HlsRequest, answer: Answer) {
        let cors = self.shared.config.egress.cors_allow_origin.clone();
        match answer {
            Answer::Ok {
                content_type,
                body,
                cache,
            } => {
                let length = body.iter().map(Bytes::len).sum::<usize>();
                let length = format!("Content-Length: {length}");
                let cookie = format!("Set-Cookie: {SESSION_COOKIE}={}; Path=/", request.session);
                let content_type = format!("Content-Type: {content_type}");
                let cache = format!("Cache-Control: {cache}");
                let mut headers = vec![content_type.as_str(), length.as_str(), cache.as_str()];
                if request.new_session {
                    headers.push(cookie.as_str());
                }
                let head = response_head(200, "OK", &cors, request.persistence, &headers);
                let body = if request.head_only { Vec::new() } else { body };
                self.hls_reply(request.reply, head, body);
            }
            Answer::Error(status, reason, why) => {
                let answer = error_response(status, reason, &cors, request.persistence, &why);
                self.hls_reply(request.reply, answer, Vec::new());
            }
            Answer::Wait(_) => {}
        }
    }

    /// The stream's muxer completed a part or segment (or the stream ended): retries its parked requests.
    pub(super) fn hls_changed(&mut self, key: &StreamKey) {
        let Some(hls) = self.streams.get_mut(key).and_then(|s| s.hls.as_mut()) else {
            return;
        };
        let parked = std::mem::take(&mut hls.parked);
        for (_, request) in parked {
            self.hls_try(key, request);
        }
    }

    /// Housekeeping: parked requests past their deadline are answered with what there is (or 404), idle
    /// packaging stops, old sessions are forgotten.
    pub(super) fn hls_tick(&mut self, now: Instant) {
        let idle = Duration::from_millis(self.shared.config.egress.hls_idle_ms);
        let mut expired_keys = Vec::new();
        let mut late: Vec<(StreamKey, Parked)> = Vec::new();
        for (key, stream) in self.streams.iter_mut() {
            let Some(hls) = stream.hls.as_mut() else {
                continue;
            };
            hls.sessions
                .retain(|_, seen| now.saturating_duration_since(*seen) < idle);
            let due: Vec<ParkedId> = hls
                .parked
                .iter()
                .filter(|(_, p)| now >= p.deadline)
                .map(|(id, _)| *id)
                .collect();
            for id in due {
                if let Some(parked) = hls.parked.remove(&id) {
                    late.push((key.clone(), parked));
                }
            }
            if hls.parked.is_empty() && now.saturating_duration_since(hls.last_request) >= idle {
                expired_keys.push(key.clone());
            }
        }
        for (key, parked) in late {
            self.hls_late(&key, parked);
        }
        for key in expired_keys {
            info!(core = self.index, stream = %key, "HLS packaging stops (no request for egress.hls_idle_ms)");
            self.hls_detach(&key, None);
        }
    }

    /// A parked request's deadline passed: a blocking playlist reload gets the playlist as it is; anything
    /// else that never came is not found.
    fn hls_late(&mut self, key: &StreamKey, parked: Parked) {
        let wait_ms = self.shared.config.rtmp.play_wait_ms;
        let request = parked.request;
        let playlist = self
            .streams
            .get(key)
            .and_then(|s| s.hls.as_ref())
            .and_then(|hls| {
                matches!(request.resource, HlsResource::Playlist { .. })
                    .then(|| playlist_of(hls, &request.session))
                    .flatten()
            });
        let answer = match playlist {
            Some(text) => Answer::Ok {
                content_type: PLAYLIST_TYPE,
                body: vec![Bytes::from(text)],
                cache: "no-cache",
            },
            None => {
                let why = match &request.resource {
                    HlsResource::Playlist { .. } => {
                        format!("stream {key} is not published (waited {wait_ms} ms, rtmp.play_wait_ms)")
                    }
                    other => format!("{other:?} of stream {key} did not come in time"),
                };
                Answer::Error(404, "Not Found", why)
            }
        };
        self.hls_send(&request, answer);
    }

    /// Stops packaging `key` on this core (idle, or `forbidden` with the ban's reason), answering what
    /// waits.
    pub(super) fn hls_detach(&mut self, key: &StreamKey, forbidden: Option<&str>) {
        let Some(stream) = self.streams.get_mut(key) else {
            return;
        };
        let Some(hls) = stream.hls.take() else {
            return;
        };
        let cors = self.shared.config.egress.cors_allow_origin.clone();
        for (_, parked) in hls.parked {
            let persistence = parked.request.persistence;
            let answer = match forbidden {
                Some(reason) => {
                    let why = format!("stream {key} is forbidden: {reason}");
                    error_response(403, "Forbidden", &cors, persistence, &why)
                }
                None => {
                    let why = format!("HLS of stream {key} stopped");
                    error_response(404, "Not Found", &cors, persistence, &why)
                }
            };
            self.hls_reply(parked.request.reply, answer, Vec::new());
        }
        self.release_stream_if_unused(key);
    }

    /// The connection `id` closed: a request of it parked on a stream this core owns is forgotten (one
    /// lookup in the index, one removal).
    pub(super) fn hls_forget(&mut self, id: ParkedId) {
        let Some(key) = self.hls_parked.remove(&id) else {
            return;
        };
        if let Some(hls) = self.streams.get_mut(&key).and_then(|s| s.hls.as_mut()) {
            hls.parked.remove(&id);
        }
    }

    /// Requests parked on this core's streams (the index's size; tests check it against the streams').
    #[cfg(test)]
    pub(super) fn hls_parked_count(&self) -> (usize, usize) {
        let on_streams = self
            .streams
            .values()
            .filter_map(|s| s.hls.as_ref())
            .map(|hls| hls.parked.len())
            .sum();
        (self.hls_parked.len(), on_streams)
    }
}

/// The playlist of `hls` for `session`.
fn playlist_of(hls: &HlsStream, session: &str) -> Option<String> {
    media_playlist(
        &hls.muxer,
        PlaylistOptions {
            low_latency: hls.low_latency,
            session: Some(session),
        },
    )
}

/// The variants of `key`'s renditions that are live now (their width from the source's aspect; audio
/// bitrate 0: the source has no audio).
fn rendition_variants(shared: &Shared, key: &StreamKey, muxer: &HlsMuxer) -> Vec<Variant> {
    let Some((renditions, audio_kbps)) = shared.renditions_of(key) else {
        return Vec::new();
    };
    let (width, height) = muxer
        .video_track()
        .map_or((0, 0), |v| (u32::from(v.width), u32::from(v.height)));
    renditions
        .iter()
        .map(|r| Variant {
            stream: r.stream_name(key.stream()),
            bandwidth: r.bandwidth(audio_kbps),
            width: r.width_for(width, height),
            height: r.height,
            codecs: r.codecs(audio_kbps > 0),
        })
        .collect()
}

/// What `parked` gets now. `first` (the request just came) gives the waits: for a stream with nothing yet,
/// and for blocking requests.
fn answer(
    hls: &HlsStream,
    parked: &HlsRequest,
    now: Instant,
    first: Option<(Duration, Duration)>,
    shared: &Shared,
) -> Answer {
    let (play_wait, block) = first.unwrap_or_default();
    let muxer = &hls.muxer;
    match &parked.resource {
        HlsResource::Playlist { msn, part } => {
            if let Some(msn) = msn {
                if !muxer.reached(*msn, *part) && !muxer.ended() {
                    return Answer::Wait(now + block);
                }
            }
            // A viewer with no session yet gets a multivariant playlist whose one variant carries its new
            // session: players reload the variant's URL, so each viewer stays one session (a cross-origin
            // player sends no cookie).
            let text = if parked.new_session && msn.is_none() {
                let renditions = rendition_variants(shared, &parked.key, muxer);
                multivariant_playlist(muxer, hls.low_latency, &parked.session, &renditions)
            } else {
                playlist_of(hls, &parked.session)
            };
            match text {
                Some(text) => Answer::Ok {
                    content_type: PLAYLIST_TYPE,
                    body: vec![Bytes::from(text)],
                    cache: "no-cache",
                },
                None => Answer::Wait(now + play_wait),
            }
        }
        HlsResource::Init(version) => match muxer.init(*version) {
            Some(init) => Answer::Ok {
                content_type: "video/mp4",
                body: vec![init.clone()],
                cache: "max-age=3600",
            },
            None => Answer::Error(404, "Not Found", format!("no init segment {version}")),
        },
        HlsResource::Segment(msn) => match muxer.segment(*msn) {
            Some(segment) => Answer::Ok {
                content_type: "video/iso.segment",
                body: segment.buffers().cloned().collect(),
                cache: "max-age=60",
            },
            None if muxer.open().is_some_and(|o| o.msn == *msn) => Answer::Wait(now + block),
            None => Answer::Error(404, "Not Found", format!("segment {msn} is not in the window")),
        },
        HlsResource::Part(msn, index) => match muxer.part(*msn, *index) {
            Some(part) => Answer::Ok {
                content_type: "video/iso.segment",
                body: part.fragment.bytes.clone(),
                cache: "max-age=60",
            },
            // The preload hint's part, or one just ahead of it: wait for it.
            None if muxer
                .next_part()
                .is_some_and(|(m, i)| m == *msn && *index <= i + 1)
                || muxer
                    .next_part()
                    .is_some_and(|(m, _)| m + 1 == *msn && *index == 0) =>
            {
                Answer::Wait(now + block)
            }
            None => Answer::Error(
                404,
                "Not Found",
                format!("part {msn}.{index} is not in the window"),
            ),
        },
    }
}
