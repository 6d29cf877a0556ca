//! Recording at the owner core: whether a stream is recorded is decided when it starts (its app's `record`,
//! or the admin API's request), and changed by the API; its frames go to the recording thread over a
//! bounded queue (shared, no copy), video resuming at a keyframe after a loss. A forbid, the end of the
//! stream or the API stop it; the files are kept.

use crate::media::Frame;
use crate::node::mailbox::RecordReply;
use crate::node::shared::Shared;
use crate::node::streams::{passes_after_loss, OwnerState};
use crate::recording::RecordEvent;
use crate::stream_key::StreamKey;

use super::NodeCore;

/// Owner: one frame of `key` for the recorder, if the stream is recorded (its first frame starts it).
pub(super) fn record_frame(shared: &Shared, owner: &mut OwnerState, key: &StreamKey, frame: &Frame) {
    let Some(recorder) = &shared.recorder else {
        return;
    };
    if !owner.recording {
        owner.recording = recorder.send(RecordEvent::Start(key.clone()));
        owner.record_needs_key = false;
        if !owner.recording {
            return;
        }
    }
    if !passes_after_loss(&mut owner.record_needs_key, frame) {
        return;
    }
    if !recorder.send(RecordEvent::Frame(key.clone(), frame.clone())) {
        owner.record_needs_key = true;
    }
}

impl NodeCore {
    /// Owner: `key` starts (a publisher, or a source from the mesh): is it recorded?
    pub(super) fn record_decide(&mut self, key: &StreamKey) {
        let wanted = self.shared.record_wanted(key);
        if let Some(owner) = self.streams.get_mut(key).and_then(|s| s.owner.as_mut()) {
            owner.record_wanted = wanted;
        }
    }

    /// Owner: stop recording `key` (the file so far is kept) and why.
    pub(super) fn record_stop(&mut self, key: &StreamKey, reason: &'static str, unwant: bool) {
        let Some(owner) = self.streams.get_mut(key).and_then(|s| s.owner.as_mut()) else {
            return;
        };
        if unwant {
            owner.record_wanted = false;
        }
        if std::mem::take(&mut owner.recording) {
            if let Some(recorder) = &self.shared.recorder {
                recorder.send(RecordEvent::Stop(key.clone(), reason));
            }
        }
    }

    /// Owner: the admin API turns recording of `key` on or off. On: a live stream starts recording at once,
    /// from its GOP cache's keyframe.
    pub(super) fn on_record_request(&mut self, key: StreamKey, on: bool, reply: RecordReply) {
        if !on {
            self.record_stop(&key, "stopped by the admin API", true);
            let _ = reply.send(false);
            return;
        }
        let shared = self.shared.clone();
        let Some(stream) = self.streams.get_mut(&key) else {
            let _ = reply.send(false);
            return;
        };
        let frames: Vec<Frame> = stream.gop.start_frames().cloned().collect();
        let Some(owner) = stream.owner.as_mut() else {
            let _ = reply.send(false);
            return;
        };
        let live = owner.publisher.is_some() || owner.remote.is_some();
        owner.record_wanted = true;
        if live && !owner.recording {
            for frame in &frames {
                record_frame(&shared, owner, &key, frame);
            }
        }
        let _ = reply.send(live);
    }
}
