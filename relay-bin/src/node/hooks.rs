//! [`HookRunner`]: runs the `on_publish` HTTP callback off the data plane.
//!
//! A core that must ask the hook posts a job and carries on; the runner (one thread with a small tokio
//! runtime) makes the call and posts the verdict back to that core's inbox as [`CoreMsg::HookVerdict`].

use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use tracing::warn;

use crate::auth::{call_on_publish, OnPublishRequest};
use crate::control::ClientId;
use crate::node::clients::Token;
use crate::node::mailbox::{CoreMsg, Mailbox};
use crate::stream_key::StreamKey;

/// Most hook calls waiting or in flight; more are refused at once (fail closed).
const MAX_PENDING: usize = 1024;

/// One publish request waiting for the hook's answer.
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
}

/// The hook's thread and queue.
#[derive(Debug)]
pub struct HookRunner {
    jobs: Sender<HookJob>,
}

impl HookRunner {
    /// Starts the runner's thread; verdicts go to `mailboxes[job.core]`.
    pub fn start(url: String, timeout: Duration, mailboxes: Vec<Mailbox>) -> std::io::Result<HookRunner> {
        let (jobs, queue) = crossbeam_channel::bounded::<HookJob>(MAX_PENDING);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("popline-hooks".to_string())
            .spawn(move || runtime.block_on(run(url, timeout, queue, mailboxes)))?;
        Ok(HookRunner { jobs })
    }

    /// Queues a job; `false` when the queue is full or the runner is gone (the caller refuses the publish).
    pub fn submit(&self, job: HookJob) -> bool {
        match self.jobs.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

async fn run(url: String, timeout: Duration, queue: Receiver<HookJob>, mailboxes: Vec<Mailbox>) {
    let url = std::sync::Arc::new(url);
    loop {
        // The queue is a crossbeam channel: wait for it on the blocking pool, then run the call as a task.
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
            let message = CoreMsg::HookVerdict {
                token: job.token,
                client: job.client,
                request_id: job.request_id,
                key: job.key,
                verdict,
            };
            if mailbox.send(message).is_err() {
                warn!("on_publish verdict lost: core inbox full");
            }
        });
    }
}
