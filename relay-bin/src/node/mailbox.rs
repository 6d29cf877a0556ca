//! Cross-core messages: each core's bounded inbox and the eventfd that wakes it.
//!
//! Media (`Frame`, `Fanout`) is sent with `try_send`: a full inbox drops the frame, counts it, and the sender
//! skips that path's video to the next keyframe so the receiver never sees a GOP with a hole. Control
//! messages must arrive: they wait a bounded time for room.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use engine::Waker;

use crate::control::{ClientId, ClientInfo, StreamInfo};
use crate::media::Frame;
use crate::stream_key::StreamKey;

/// How long a control message waits for room in a full inbox before it is given up (and logged).
const CONTROL_SEND_WAIT: Duration = Duration::from_millis(200);

/// A message to a core.
#[derive(Debug)]
pub enum CoreMsg {
    /// Publisher core -> owner: a publisher started on `key`.
    PublishStart {
        /// The stream.
        key: StreamKey,
        /// The publishing client.
        publisher: ClientId,
    },
    /// Publisher core -> owner: one ingested frame.
    Ingest {
        /// The stream.
        key: StreamKey,
        /// The frame.
        frame: Frame,
    },
    /// Publisher core -> owner: the publisher left.
    PublishEnd {
        /// The stream.
        key: StreamKey,
        /// The client that was publishing.
        publisher: ClientId,
    },
    /// Viewer core -> owner: send me this stream's frames.
    Subscribe {
        /// The stream.
        key: StreamKey,
        /// The subscribing core.
        core: usize,
    },
    /// Viewer core -> owner: I have no viewers of this stream any more.
    Unsubscribe {
        /// The stream.
        key: StreamKey,
        /// The core.
        core: usize,
        /// Bytes the core sent to its viewers of the stream (the owner keeps the stream's total).
        bytes_out: u64,
    },
    /// Owner -> subscriber: what a new viewer needs to start (metadata, sequence headers, current GOP).
    Snapshot {
        /// The stream.
        key: StreamKey,
        /// The frames, in order.
        frames: Vec<Frame>,
        /// A publisher is live now.
        live: bool,
    },
    /// Owner -> subscriber: one frame of the stream.
    Fanout {
        /// The stream.
        key: StreamKey,
        /// The frame.
        frame: Frame,
    },
    /// Owner -> subscriber: the publisher left (viewers wait for a grace period).
    StreamEnded {
        /// The stream.
        key: StreamKey,
    },
    /// Owner -> subscriber: a new publisher started: viewers skip video to its first keyframe.
    PublisherChanged {
        /// The stream.
        key: StreamKey,
    },
    /// Admin -> core: close one client.
    Kick {
        /// The client.
        id: ClientId,
        /// Answered with whether the client existed.
        reply: Sender<bool>,
    },
    /// Admin -> every core: close the publisher and viewers of a stream.
    KickStream {
        /// The stream.
        key: StreamKey,
        /// Answered with how many clients were closed.
        reply: Sender<u64>,
    },
    /// Admin -> core: describe your clients and streams.
    Query {
        /// Answered with the core's report.
        reply: Sender<CoreReport>,
    },
    /// Hook runner -> core: the `on_publish` callback's verdict on a pending publish.
    HookVerdict {
        /// The client's token on the core.
        token: crate::node::clients::Token,
        /// The client.
        client: ClientId,
        /// The RTMP request to answer.
        request_id: u32,
        /// The stream.
        key: StreamKey,
        /// `Err` with the reason when the hook refused (or could not be reached: fail closed).
        verdict: Result<(), String>,
    },
    /// Owner core -> mesh core: a local event for the mesh.
    Mesh(crate::node::mesh_port::MeshInput),
    /// Mesh core -> owner: the stream now arrives from another node (a remote publisher).
    RemoteStart {
        /// The stream.
        key: StreamKey,
        /// The node where it is published.
        origin: String,
        /// Links it crossed to get here.
        hops: u8,
    },
    /// Mesh core -> owner: a frame of a stream that arrives from another node.
    RemoteFrame {
        /// The stream.
        key: StreamKey,
        /// The frame.
        frame: Frame,
    },
    /// Mesh core -> owner: the stream stopped arriving. `moved`: a new source is being asked for (viewers
    /// stay and resume at its first keyframe); otherwise it ended (viewers wait for the grace period).
    RemoteEnd {
        /// The stream.
        key: StreamKey,
        /// The source moved (failover) rather than ended.
        moved: bool,
    },
    /// Any core -> owner: an HLS request of a viewer connected to another core (the owner packages the
    /// stream, once per node, and answers).
    HlsRequest(Box<crate::node::core::hls::HlsRequest>),
    /// Owner -> the viewer's core: the answer to an [`CoreMsg::HlsRequest`], to write (the connection then
    /// stays open for the next request, or closes, as the answer's head says).
    HlsAnswer {
        /// Where it goes.
        reply: crate::node::core::hls::HlsReply,
        /// The status line and headers.
        head: bytes::Bytes,
        /// The body's buffers (shared with the segments: no copy).
        body: Vec<bytes::Bytes>,
    },
    /// The viewer's core -> owner: the connection whose request waits there (an [`CoreMsg::HlsRequest`] not
    /// answered yet) closed; the owner forgets the request.
    HlsForget {
        /// The viewer's core.
        core: usize,
        /// Its connection there.
        token: crate::node::clients::Token,
    },
    /// Admin API -> owner: record `key` (`on`) or stop recording it; the reply says whether it is live
    /// (recording starts at once) or will start when it is.
    Record {
        /// The stream.
        key: StreamKey,
        /// Start (`true`) or stop.
        on: bool,
        /// Whether the stream is live now.
        reply: RecordReply,
    },
    /// Admin API -> owner: the stream's latest keyframe for a snapshot.
    Keyframe {
        /// The stream.
        key: StreamKey,
        /// `None`: no such stream here; `Some(None)`: it holds no keyframe yet.
        reply: crossbeam_channel::Sender<Option<Option<crate::snapshot::Keyframe>>>,
    },
    /// Stop the core.
    Shutdown,
    /// Makes the core panic (the node's supervision tests).
    #[cfg(test)]
    PanicForTest,
}

impl CoreMsg {
    fn is_media(&self) -> bool {
        matches!(
            self,
            CoreMsg::Ingest { .. }
                | CoreMsg::Fanout { .. }
                | CoreMsg::RemoteFrame { .. }
                | CoreMsg::Mesh(crate::node::mesh_port::MeshInput::Frame(..))
        )
    }
}

/// One core's answer to [`CoreMsg::Query`].
#[derive(Debug, Default)]
pub struct CoreReport {
    /// The core's clients.
    pub clients: Vec<ClientInfo>,
    /// Streams this core owns.
    pub owned: Vec<StreamInfo>,
    /// Viewers on this core, per stream, and the bytes sent to the stream's viewers on this core (those
    /// that left included; on the owner core, also those of cores that no longer hold the stream).
    pub viewers: Vec<(StreamKey, u64, u64)>,
    /// HLS viewer sessions this core saw, per stream.
    pub hls_sessions: Vec<(StreamKey, Vec<String>)>,
}

/// The answer channel of [`CoreMsg::Record`].
pub type RecordReply = crossbeam_channel::Sender<bool>;

/// Why a message did not reach a core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The inbox is full.
    Full,
    /// The core has stopped.
    Gone,
}

/// The sending side of one core's inbox, with its waker.
#[derive(Debug, Clone)]
pub struct Mailbox {
    sender: Sender<CoreMsg>,
    waker: Arc<Waker>,
}

impl Mailbox {
    /// A mailbox and the receiving end for its core.
    pub fn new(capacity: usize, waker: Arc<Waker>) -> (Mailbox, Receiver<CoreMsg>) {
        let (sender, receiver) = crossbeam_channel::bounded(capacity);
        (Mailbox { sender, waker }, receiver)
    }

    /// Queues `message` without waking the core (the caller wakes it once per loop iteration).
    /// Media never waits; control waits up to a bound for room.
    pub fn post(&self, message: CoreMsg) -> Result<(), SendError> {
        if message.is_media() {
            return match self.sender.try_send(message) {
                Ok(()) => Ok(()),
                Err(TrySendError::Full(_)) => Err(SendError::Full),
                Err(TrySendError::Disconnected(_)) => Err(SendError::Gone),
            };
        }
        match self.sender.send_timeout(message, CONTROL_SEND_WAIT) {
            Ok(()) => Ok(()),
            Err(crossbeam_channel::SendTimeoutError::Timeout(_)) => Err(SendError::Full),
            Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => Err(SendError::Gone),
        }
    }

    /// Queues the message in `slot` without waiting, whatever it is, and wakes the core; on a full inbox the
    /// message is put back in `slot` (for a caller that must not block, such as the hook runner's runtime).
    pub fn try_send(&self, slot: &mut Option<CoreMsg>) -> Result<(), SendError> {
        let Some(message) = slot.take() else {
            return Ok(());
        };
        let result = match self.sender.try_send(message) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(message)) => {
                *slot = Some(message);
                Err(SendError::Full)
            }
            Err(TrySendError::Disconnected(_)) => Err(SendError::Gone),
        };
        self.waker.wake();
        result
    }

    /// Queues `message` and wakes the core.
    pub fn send(&self, message: CoreMsg) -> Result<(), SendError> {
        let result = self.post(message);
        self.waker.wake();
        result
    }

    /// Wakes the core.
    pub fn wake(&self) {
        self.waker.wake();
    }
}
