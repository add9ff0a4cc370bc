//! Following a task's step log live: the events after a given `seq`, then each new one
//! as it is written, until the task has ended and every event was yielded. The API's SSE
//! stream and the web console's live timeline both read it.
//!
//! A follower sleeps until the replica's event hub names its task: written by this
//! replica (SQLite, or a worker here), or announced by the database (PostgreSQL: a stream
//! registers itself in `task_followers` before its first read, and every append to a
//! followed task notifies `de_events`, which each replica's listener forwards to its hub).
//! The listener says "everyone" ([`Hub::catch_up_all`]) when it (re)connects, since
//! notifications may have been missed meanwhile; and a follower re-reads the log every
//! `SSE_REREAD_SECONDS` anyway, so a lost wake-up only delays it.
//!
//! [`Hub::catch_up_all`]: crate::state::Hub::catch_up_all

use std::collections::VecDeque;

use uuid::Uuid;

use crate::state::{AppState, StreamSlot, TASKS_ALL as ALL};
use crate::store::TaskEvent;

struct Follow {
    state: AppState,
    /// Counts this stream against its tenant's cap until the stream is dropped.
    _slot: StreamSlot,
    /// The stream's lifetime (`SSE_MAX_STREAM_SECONDS`) ends here.
    ends_at: tokio::time::Instant,
    tenant: Uuid,
    id: Uuid,
    after: i64,
    buf: VecDeque<TaskEvent>,
    rx: tokio::sync::broadcast::Receiver<Uuid>,
    done: bool,
    /// Whether [`Follow::register`] ran; its registration lives as long as the stream.
    registered: bool,
    _registration: Option<Registration>,
}

/// A stream's row in `task_followers`, removed when the stream is dropped.
struct Registration {
    state: AppState,
    id: Uuid,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let (store, id) = (self.state.store.clone(), self.id);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = store.unfollow_task(id).await {
                    tracing::debug!(error = %e, "cannot remove a live stream's registration; it expires");
                }
            });
        }
    }
}

impl Follow {
    /// Registers the stream so that appends to its task notify every replica; without it
    /// (the store failed) the stream still catches up at each re-read.
    async fn register(&mut self) {
        self.registered = true;
        let left = self
            .ends_at
            .saturating_duration_since(tokio::time::Instant::now());
        let until = crate::store::now()
            + chrono::Duration::from_std(left).unwrap_or(chrono::Duration::days(366))
            + chrono::Duration::minutes(1);
        match self.state.store.follow_task(self.id, until).await {
            Ok(Some(id)) => {
                self._registration = Some(Registration {
                    state: self.state.clone(),
                    id,
                })
            }
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(task_id = %self.id, error = %e, "cannot register a live stream; it re-reads instead")
            }
        }
    }

    /// Reads the events after the last one yielded into the buffer: `Some(true)` when
    /// there were any, `None` when the store failed.
    async fn read(&mut self) -> Option<bool> {
        let page = self
            .state
            .store
            .list_events(self.id, self.after, 500)
            .await
            .ok()?;
        let any = !page.is_empty();
        self.buf.extend(page);
        Some(any)
    }
}

/// Events of task `id` after `after`, live, until the task has ended and all were
/// yielded, or until `ends_at` (the client resumes after the last `seq` it saw). New
/// events are noticed through the hub (see the module docs).
pub fn follow(
    state: AppState,
    tenant: Uuid,
    id: Uuid,
    after: i64,
    slot: StreamSlot,
    ends_at: tokio::time::Instant,
) -> impl futures_util::Stream<Item = TaskEvent> {
    let rx = state.tasks.events.subscribe();
    let f = Follow {
        state,
        _slot: slot,
        ends_at,
        tenant,
        id,
        after,
        buf: VecDeque::new(),
        rx,
        done: false,
        registered: false,
        _registration: None,
    };
    futures_util::stream::unfold(f, |mut f| async move {
        if !f.registered {
            f.register().await;
        }
        loop {
            if let Some(e) = f.buf.pop_front() {
                f.after = e.seq;
                return Some((e, f));
            }
            if f.done
                || f.state.tasks.shutdown.is_cancelled()
                || tokio::time::Instant::now() >= f.ends_at
            {
                return None;
            }
            // New events go out after one read. Only when there are none is the status
            // read, and the events once more after it: an end seen there has all its
            // events visible to that second read.
            match f.read().await {
                Some(true) => continue,
                Some(false) => {
                    let ended = match f.state.store.get_task(f.tenant, f.id).await {
                        Ok(t) => t.status.is_terminal(),
                        Err(_) => true,
                    };
                    if ended {
                        match f.read().await {
                            Some(true) => continue,
                            _ => return None,
                        }
                    }
                }
                None => f.done = true,
            }
            // Wait for news of this task, or re-read after a while (a missed wake-up).
            let wait = async {
                loop {
                    match f.rx.recv().await {
                        Ok(changed) if changed == f.id || changed == ALL => return,
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                        Err(_) => {
                            std::future::pending::<()>().await;
                        }
                    }
                }
            };
            let shutdown = f.state.tasks.shutdown.clone();
            let reread = f.state.config.tasks.sse_reread_interval;
            tokio::select! {
                _ = wait => {},
                _ = tokio::time::sleep(reread) => {},
                _ = tokio::time::sleep_until(f.ends_at) => return None,
                _ = shutdown.cancelled() => return None,
            }
        }
    })
}
