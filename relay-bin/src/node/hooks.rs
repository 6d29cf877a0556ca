//! [`HookRunner`]: runs the `on_publish` HTTP callback off the data plane.
//!
//! A core that must ask the hook posts a job and carries on; the runner (one thread with a small tokio
//! runtime) makes the call and posts the verdict back to that core's inbox as [`CoreMsg::HookVerdict`].
//!
//! Calls waiting or in flight are bounded (`auth.on_publish_max_pending`): each job holds a slot until it is
//! dropped (its verdict posted, or given up), and a publish that finds every slot taken is refused at once
//! (fail closed, counted). Posting a verdict never blocks the runtime: a full inbox is retried on a timer,
//! for a bounded time, and the client, whose verdict is lost, is closed by the core's handshake timeout.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use tracing::warn;

use crate::auth::{call_on_publish, OnPublishRequest};
use crate::control::ClientId;
use crate::node::clients::Token;
use crate::node::mailbox::{CoreMsg, Mailbox, SendError};
use crate::stream_key::StreamKey;

/// How long a verdict waits, in total, for room in a full core inbox before it is given up.
const VERDICT_RETRY_FOR: Duration = Duration::from_secs(2);
/// The pause between two tries to post a verdict to a full inbox.
const VERDICT_RETRY_EVERY: Duration = Duration::from_millis(10);

/// One publish request waiting for the hook's answer. It holds one of the runner's slots until dropped.
#[derive(Debug)]
pub struct HookJob {
    /// The request sent to the hook.
    pub request: OnPublishRequest,
    /// The core that asked.
    pub core: usize,
    /// The client's token on that core.
    pub token: Token,
    /// The client (a token may be reused after the client left).
    pub client: ClientId,
    /// The RTMP request to accept or reject.
    pub request_id: u32,
    /// The stream.
    pub key: StreamKey,
    /// Its slot among the calls waiting or in flight (taken by [`HookRunner::submit`], freed on drop).
    pub slot: HookSlot,
}

/// A slot among the hook calls waiting or in flight; freed when dropped.
#[derive(Debug, Default)]
pub struct HookSlot {
    pending: Option<Arc<AtomicUsize>>,
}

impl Drop for HookSlot {
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            pending.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The hook's thread and queue.
#[derive(Debug)]
pub struct HookRunner {
    jobs: Sender<HookJob>,
    pending: Arc<AtomicUsize>,
    max_pending: usize,
}

impl HookRunner {
    /// Starts the runner's thread, with at most `max_pending` calls waiting or in flight; verdicts go to
    /// `mailboxes[job.core]`.
    pub fn start(
        url: String,
        timeout: Duration,
        max_pending: usize,
        mailboxes: Vec<Mailbox>,
    ) -> std::io::Result<HookRunner> {
        let (runner, queue) = HookRunner::detached(max_pending);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("popline-hooks".to_string())
            .spawn(move || runtime.block_on(run(url, timeout, queue, mailboxes)))?;
        Ok(runner)
    }

    /// A runner with no thread: the jobs go to the returned queue (for a harness that answers them itself).
    pub fn detached(max_pending: usize) -> (HookRunner, Receiver<HookJob>) {
        let (jobs, queue) = crossbeam_channel::bounded::<HookJob>(max_pending.max(1));
        let runner = HookRunner {
            jobs,
            pending: Arc::new(AtomicUsize::new(0)),
            max_pending,
        };
        (runner, queue)
    }

    /// Queues a job, giving it a slot; `false` when every slot is taken or the runner is gone (the caller
    /// refuses the publish).
    pub fn submit(&self, mut job: HookJob) -> bool {
        let taken = self.pending.fetch_add(1, Ordering::AcqRel);
        job.slot = HookSlot {
            pending: Some(self.pending.clone()),
        };
        if taken >= self.max_pending {
            return false; // the job, and its slot, are dropped
        }
        match self.jobs.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Calls waiting or in flight now.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }
}

async fn run(url: String, timeout: Duration, queue: Receiver<HookJob>, mailboxes: Vec<Mailbox>) {
    let url = Arc::new(url);
    loop {
        // The queue is a crossbeam channel: wait for it on the blocking pool, then run the call as a task.
        // Tasks are bounded by the slots: a job holds one until its verdict is posted.
        let receiver = queue.clone();
        let Ok(Ok(job)) = tokio::task::spawn_blocking(move || receiver.recv()).await else {
            return;
        };
        let url = url.clone();
        let mailbox = mailboxes.get(job.core).cloned();
        tokio::spawn(async move {
            let verdict = call_on_publish(&url, &job.request, timeout)
                .await
                .map_err(|e| e.to_string());
            let Some(mailbox) = mailbox else { return };
            let HookJob {
                token,
                client,
                request_id,
                key,
                slot,
                ..
            } = job;
            let message = CoreMsg::HookVerdict {
                token,
                client,
                request_id,
                key,
                verdict,
            };
            post_verdict(&mailbox, message).await;
            drop(slot);
        });
    }
}

/// Posts a verdict without blocking the runtime: a full inbox is retried every 10 ms for up to 2 s, then the
/// verdict is given up (logged; the core's handshake timeout closes the client that waited for it).
pub async fn post_verdict(mailbox: &Mailbox, message: CoreMsg) {
    let mut slot = Some(message);
    let mut waited = Duration::ZERO;
    loop {
        match mailbox.try_send(&mut slot) {
            Ok(()) | Err(SendError::Gone) => return,
            Err(SendError::Full) if waited < VERDICT_RETRY_FOR => {
                tokio::time::sleep(VERDICT_RETRY_EVERY).await;
                waited += VERDICT_RETRY_EVERY;
            }
            Err(SendError::Full) => {
                warn!("on_publish verdict lost: core inbox full for 2 s");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Instant;

    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_verdict_for_a_full_inbox_never_blocks_the_runtime() {
        // Issue 17, item 16: the verdict was sent with a blocking wait (up to 200 ms) on the runtime's one
        // thread, stalling every other hook call meanwhile.
        let waker = Arc::new(engine::Waker::new().unwrap());
        let (mailbox, inbox) = Mailbox::new(1, waker);
        mailbox.try_send(&mut Some(CoreMsg::Shutdown)).unwrap();
        let key = StreamKey::new("live", "x").unwrap();
        let verdict = CoreMsg::HookVerdict {
            token: 0,
            client: ClientId::new(0, 1),
            request_id: 1,
            key,
            verdict: Ok(()),
        };
        let poster = tokio::spawn(async move { post_verdict(&mailbox, verdict).await });
        // Meanwhile the runtime runs other work on time.
        let start = Instant::now();
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(
            start.elapsed() < Duration::from_millis(100),
            "{:?}",
            start.elapsed()
        );
        // Room appears: the verdict arrives.
        assert!(matches!(inbox.try_recv(), Ok(CoreMsg::Shutdown)));
        poster.await.unwrap();
        assert!(matches!(inbox.try_recv(), Ok(CoreMsg::HookVerdict { .. })));
    }
}
