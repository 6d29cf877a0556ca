//! HTTP egress viewers on the core: a connection from `egress.listen` sends its request head; a request for
//! `/APP/STREAM.flv` makes it a viewer of that stream like an RTMP player (bans checked, the app's drop policy
//! and byte bound, GOP-cache start), whose queue holds the frames' HTTP-FLV form. The `200 OK` and the FLV
//! header wait in the queue until its first frame, so a stream nobody publishes is still answered `404` (after
//! `rtmp.play_wait_ms`, as RTMP players hear `StreamNotFound`). Every other answer (bad request, forbidden,
//! preflight) is written whole and the connection closed after it.

use std::time::Duration;

use bytes::Bytes;
use tracing::info;

use super::{NodeCore, Role, Session, CLOSE_FLUSH};
use crate::config::FanoutConfig;
use crate::egress::http::{error_response, preflight_response, Request, Route};
use crate::egress::http_flv;
use crate::fanout::{ViewerQueue, WireForm};
use crate::node::clients::Token;
use crate::node::shared::CoreCounters;
use crate::stream_key::StreamKey;

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
        return error_response(status, reason, cors, why);
    }
    match queue.form() {
        WireForm::HttpFlv { chunked: true } => Bytes::from_static(http_flv::LAST_CHUNK),
        _ => Bytes::new(),
    }
}

impl NodeCore {
    /// Bytes from an HTTP viewer: its request head, then nothing that matters (read and ignored).
    pub(super) fn on_http_input(&mut self, token: Token, bytes: &[u8]) {
        let Some(client) = self.clients.get_mut(token) else {
            return;
        };
        let Session::Http(reader) = &mut client.session else {
            return;
        };
        match reader.feed(bytes) {
            Ok(None) => {}
            Ok(Some(request)) => self.on_http_request(token, request),
            Err(error) => {
                let (status, reason) = error.status();
                let answer = error_response(status, reason, self.cors(), &error.to_string());
                self.http_answer(token, answer, Vec::new());
                info!(core = self.index, status, %error, "HTTP request refused");
                CoreCounters::add(&self.counters.refused, 1);
            }
        }
    }

    fn cors(&self) -> &str {
        &self.shared.config.egress.cors_allow_origin
    }

    /// Writes `answer` whole and closes the connection after it.
    /// Writes `head` then `body` to HTTP client `token` (one still waiting for its answer) and closes the
    /// connection after them.
    pub(super) fn http_answer(&mut self, token: Token, head: Bytes, body: Vec<Bytes>) {
        let now = self.now;
        let Some(client) = self.clients.get_mut(token) else {
            return;
        };
        if !matches!(client.session, Session::Http(_)) || !matches!(client.role, Role::Connecting) {
            return;
        }
        client.queue.seal();
        client.queue.push_control(head);
        for bytes in body {
            client.queue.push_control(bytes);
        }
        client.closing = Some((now + CLOSE_FLUSH, "HTTP answer sent"));
        self.mark_dirty(token);
    }

    fn on_http_request(&mut self, token: Token, request: Request) {
        let key = match request.route.clone() {
            Route::Preflight => return self.http_answer(token, preflight_response(self.cors()), Vec::new()),
            Route::Hls(key, resource) => return self.on_hls_request(token, key, resource, &request),
            Route::Flv(key) => key,
        };
        if let Some(ban) = self.shared.bans.check(&key) {
            let why = format!("stream {key} is forbidden: {}", ban.reason);
            info!(core = self.index, stream = %key, reason = %ban.reason, "HTTP-FLV play refused: forbidden");
            CoreCounters::add(&self.counters.refused, 1);
            let answer = error_response(403, "Forbidden", self.cors(), &why);
            return self.http_answer(token, answer, Vec::new());
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
