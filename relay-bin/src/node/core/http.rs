//! HTTP egress viewers on the core: a connection from `egress.listen` sends request heads; a request for
//! `/APP/STREAM.flv` makes it a viewer of that stream like an RTMP player (bans checked, the app's drop policy
//! and byte bound, GOP-cache start), whose queue holds the frames' HTTP-FLV form. The `200 OK` and the FLV
//! header wait in the queue until its first frame, so a stream nobody publishes is still answered `404` (after
//! `rtmp.play_wait_ms`, as RTMP players hear `StreamNotFound`); that connection is the viewer's to the end.
//! Every other answer (HLS, bad request, forbidden, preflight) is written whole, and the connection then
//! stays open for the next request when the client keeps it alive ([`RequestReader`]: one request at a time,
//! at most `egress.keepalive_max_requests`, closed after `egress.keepalive_idle_ms` without one) or closes.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{info, warn};

use super::{NodeCore, Role, Session, CLOSE_FLUSH};
use crate::config::{Config, EgressConfig, FanoutConfig};
use crate::egress::http::{
    error_response, preflight_response, Persistence, Request, RequestError, RequestReader, Route,
};
use crate::egress::http_flv;
use crate::fanout::{ViewerQueue, WireForm};
use crate::node::clients::Token;
use crate::node::shared::CoreCounters;
use crate::stream_key::StreamKey;

/// How long past the longest wait of a parked request the viewer's core waits for the owner's answer.
const ANSWER_GRACE: Duration = Duration::from_secs(1);

/// An HTTP connection's state on its core.
#[derive(Debug)]
pub(super) struct HttpSession {
    /// Its request heads, one at a time.
    pub(super) reader: RequestReader,
    /// Kept alive, its last answer written and no request since then: closed `egress.keepalive_idle_ms`
    /// after this.
    pub(super) idle_since: Option<Instant>,
    /// The core the request waiting was posted to (the stream's owner, another core) and when: that core is
    /// told when the connection closes, so it forgets the request at once; an answer it posted back can be
    /// lost to a full inbox, so one that has not come when no parked request could still wait is given here
    /// ([`answer_lost`]).
    pub(super) hls_posted: Option<(usize, Instant)>,
}

impl HttpSession {
    /// A new connection's state under `egress`'s bounds.
    pub(super) fn new(egress: &EgressConfig) -> HttpSession {
        let max_requests = if egress.keepalive_idle_ms == 0 {
            1
        } else {
            egress.keepalive_max_requests
        };
        HttpSession {
            reader: RequestReader::new(egress.max_request_bytes, max_requests),
            idle_since: None,
            hls_posted: None,
        }
    }
}

/// The last bytes of an HTTP viewer's response, its queue sealed (no frame after them): the error answer
/// `status` with `why` when nothing was sent yet, else the body's end (the last chunk; nothing for HTTP/1.0,
/// whose body ends when the connection closes).
pub(super) fn end_of_body(
    queue: &mut ViewerQueue,
    cors: &str,
    status: u16,
    reason: &str,
    why: &str,
) -> Bytes {
    if queue.seal() {
        return error_response(status, reason, cors, Persistence::Close, why);
    }
    match queue.form() {
        WireForm::HttpFlv { chunked: true } => Bytes::from_static(http_flv::LAST_CHUNK),
        _ => Bytes::new(),
    }
}

/// The longest a request posted to another core can wait for its answer: no parked request waits longer
/// than `rtmp.play_wait_ms` (a first playlist) or three target durations (a blocking reload, a hinted part),
/// plus [`ANSWER_GRACE`].
pub(super) fn answer_wait(config: &Config) -> Duration {
    let longest = config.rtmp.play_wait_ms.max(config.egress.hls_target_ms * 3);
    Duration::from_millis(longest) + ANSWER_GRACE
}

/// Whether `session` is an HTTP connection whose request was posted to another core more than `wait` ago
/// ([`answer_wait`]) and not answered: the owner's answer was lost to a full inbox.
pub(super) fn answer_lost(session: &Session, now: Instant, wait: Duration) -> bool {
    matches!(session, Session::Http(HttpSession { hls_posted: Some((_, at)), .. })
        if now.saturating_duration_since(*at) > wait)
}

/// Whether `session` is an HTTP connection kept alive with no request for `idle` (`egress.keepalive_idle_ms`).
pub(super) fn idle_expired(session: &Session, now: Instant, idle: Duration) -> bool {
    matches!(session, Session::Http(HttpSession { idle_since: Some(since), .. })
        if now.saturating_duration_since(*since) >= idle)
}

impl NodeCore {
    /// Bytes from an HTTP client: request heads (kept while one waits for its answer), then, once it is an
    /// HTTP-FLV viewer, nothing that matters (read and ignored).
    pub(super) fn on_http_input(&mut self, token: Token, bytes: &[u8]) {
        let Some(client) = self.clients.get_mut(token) else {
            return;
        };
        let Session::Http(http) = &mut client.session else {
            return;
        };
        let read = http.reader.feed(bytes);
        self.on_http_read(token, read);
    }

    /// Acts on what a connection's reader gave: a request, or a refusal answered at once.
    fn on_http_read(&mut self, token: Token, read: Result<Option<Request>, RequestError>) {
        if let Some(Session::Http(http)) = self.clients.get_mut(token).map(|c| &mut c.session) {
            if http.reader.is_waiting() {
                http.idle_since = None;
            }
        }
        match read {
            Ok(None) => {}
            Ok(Some(request)) => self.on_http_request(token, request),
            Err(error) => {
                let (status, reason) = error.status();
                let persistence = self.http_persistence(token);
                let answer = error_response(status, reason, self.cors(), persistence, &error.to_string());
                self.http_answer(token, answer, Vec::new());
                info!(core = self.index, status, %error, "HTTP request refused");
                CoreCounters::add(&self.counters.refused, 1);
            }
        }
    }

    fn cors(&self) -> &str {
        &self.shared.config.egress.cors_allow_origin
    }

    /// Whether the answer to the request client `token` has waiting leaves its connection open: what its
    /// answer's head must say.
    pub(super) fn http_persistence(&self, token: Token) -> Persistence {
        match self.clients.get(token).map(|c| &c.session) {
            Some(Session::Http(http)) => http.reader.persistence(),
            _ => Persistence::Close,
        }
    }

    /// Writes `head` then `body` to HTTP client `token` (one whose request waits for its answer), the head
    /// made with [`NodeCore::http_persistence`]. A kept-alive connection then reads its next request (one the
    /// client sent ahead is read now); any other closes once they are written.
    pub(super) fn http_answer(&mut self, token: Token, head: Bytes, body: Vec<Bytes>) {
        let now = self.now;
        let Some(client) = self.clients.get_mut(token) else {
            return;
        };
        let Session::Http(http) = &mut client.session else {
            return;
        };
        if !matches!(client.role, Role::Connecting) || !http.reader.is_waiting() {
            return;
        }
        http.hls_posted = None;
        client.queue.push_control(head);
        for bytes in body {
            client.queue.push_control(bytes);
        }
        if http.reader.answered() {
            self.mark_dirty(token);
            self.http_read_next(token);
            return;
        }
        client.queue.seal();
        client.closing = Some((now + CLOSE_FLUSH, "HTTP answer sent"));
        self.mark_dirty(token);
    }

    /// Reads the next request of kept-alive connection `token` from what it sent ahead, if a whole one is
    /// there. One answered at once leads here again; the connections are taken in turn from a list, so a
    /// client that pipelines many requests costs a loop, not a deep recursion.
    fn http_read_next(&mut self, token: Token) {
        self.http_next.push(token);
        if self.http_reading {
            return;
        }
        self.http_reading = true;
        while let Some(token) = self.http_next.pop() {
            let Some(Session::Http(http)) = self.clients.get_mut(token).map(|c| &mut c.session) else {
                continue;
            };
            let read = http.reader.feed(&[]);
            self.on_http_read(token, read);
        }
        self.http_reading = false;
    }

    /// Answers `503` to a request of client `token` that was posted to another core and whose answer never
    /// came ([`answer_lost`]). A late one is dropped (the request it names no longer waits).
    pub(super) fn http_answer_lost(&mut self, token: Token) {
        let posted = match self.clients.get(token).map(|c| &c.session) {
            Some(Session::Http(http)) => http.hls_posted,
            _ => None,
        };
        // Should the request still wait there (an inbox slower than the grace), it is dropped.
        if let Some((owner, _)) = posted {
            let core = self.index;
            let _ = self.post(owner, super::CoreMsg::HlsForget { core, token });
        }
        let why = "the node is overloaded (the answer of the stream's core was lost)";
        let persistence = self.http_persistence(token);
        let answer = error_response(503, "Service Unavailable", self.cors(), persistence, why);
        warn!(core = self.index, "HLS answer never came: answered 503");
        CoreCounters::add(&self.counters.refused, 1);
        self.http_answer(token, answer, Vec::new());
    }

    /// A kept-alive HTTP connection wrote its last answer and waits for a request: its idle time starts.
    pub(super) fn http_idle(&mut self, token: Token, now: Instant) {
        let Some(client) = self.clients.get_mut(token) else {
            return;
        };
        if let (Session::Http(http), Role::Connecting, None) =
            (&mut client.session, &client.role, client.closing)
        {
            if !http.reader.is_waiting() && http.idle_since.is_none() {
                http.idle_since = Some(now);
            }
        }
    }

    fn on_http_request(&mut self, token: Token, request: Request) {
        let persistence = self.http_persistence(token);
        let key = match request.route.clone() {
            Route::Preflight => {
                let answer = preflight_response(self.cors(), persistence);
                return self.http_answer(token, answer, Vec::new());
            }
            Route::Hls(key, resource) => return self.on_hls_request(token, key, resource, &request),
            Route::Flv(key) => key,
        };
        if let Some(ban) = self.shared.bans.check(&key) {
            let why = format!("stream {key} is forbidden: {}", ban.reason);
            info!(core = self.index, stream = %key, reason = %ban.reason, "HTTP-FLV play refused: forbidden");
            CoreCounters::add(&self.counters.refused, 1);
            let answer = error_response(403, "Forbidden", self.cors(), persistence, &why);
            return self.http_answer(token, answer, Vec::new());
        }
        // An HTTP-FLV request owns its connection: its body never ends (its head says `Connection: close`).
        if let Some(Session::Http(http)) = self.clients.get_mut(token).map(|c| &mut c.session) {
            http.reader.finish();
        }
        if request.head_only {
            let head = http_flv::preamble(self.cors(), request.chunked, true);
            return self.http_answer(token, head, Vec::new());
        }
        self.start_http_flv(token, key, request.chunked, &request.target);
    }

    fn start_http_flv(&mut self, token: Token, key: StreamKey, chunked: bool, target: &str) {
        let fanout: FanoutConfig = self.shared.config.fanout_for(key.app()).clone();
        let preamble = http_flv::preamble(self.cors(), chunked, false);
        let Some(client) = self.clients.get_mut(token) else {
            return;
        };
        client.app = Some(key.app().to_string());
        client.role = Role::Viewer {
            key: key.clone(),
            stream_id: 0,
            since: self.now,
        };
        client.queue.set_policy(
            fanout.drop_policy,
            fanout.viewer_queue_bytes,
            Duration::from_millis(fanout.latency_budget_ms),
        );
        client.queue.set_form(WireForm::HttpFlv { chunked });
        client.queue.set_preamble(preamble);
        info!(
            core = self.index,
            client = client.id.0,
            peer = %client.peer,
            stream = %key,
            protocol = "http-flv",
            target,
            "play start"
        );
        CoreCounters::add(&self.counters.viewers, 1);
        CoreCounters::add(&self.counters.http_viewers, 1);
        self.attach_viewer(token, &key);
    }
}
