//! The claim-and-run loop shared by the task workers and the webhook deliverer: wait for
//! a free slot, claim up to the free slots in one store call, run each claimed item on
//! its own slot, and sleep when the queue is drained until a wake-up, the poll interval
//! or shutdown. A failing claim backs off (100 ms doubling to 5 s) instead of spinning.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::store::StoreResult;

/// How one claim loop paces itself.
pub struct Pacing<'a> {
    /// At most this many items per claim.
    pub max_batch: u32,
    /// Sleep at most this long when the queue is drained.
    pub poll_interval: Duration,
    /// Notified when new work may be there.
    pub wake: &'a Notify,
    /// What is claimed, for the log line of a failed claim.
    pub what: &'static str,
}

/// Runs until `stop`: `claim(n)` takes up to `n` items, `run(item)` makes the future
/// spawned on `runs` for one of them, holding a slot of `slots` until it ends.
pub async fn claim_and_run<T, C, CF, R, RF>(
    slots: Arc<Semaphore>,
    pacing: Pacing<'_>,
    stop: &CancellationToken,
    runs: &TaskTracker,
    mut claim: C,
    mut run: R,
) where
    C: FnMut(u32) -> CF,
    CF: Future<Output = StoreResult<Vec<T>>>,
    R: FnMut(T) -> RF,
    RF: Future<Output = ()> + Send + 'static,
{
    let mut backoff_on_error = Duration::from_millis(100);
    while !stop.is_cancelled() {
        // Wait for at least one free slot.
        let first = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stop.cancelled() => break,
        };
        let batch = (slots.available_permits() as u32 + 1).min(pacing.max_batch);
        let claimed = match claim(batch).await {
            Ok(c) => {
                backoff_on_error = Duration::from_millis(100);
                c
            }
            Err(e) => {
                tracing::warn!(error = %e, what = pacing.what, "claim failed");
                drop(first);
                tokio::select! {
                    _ = tokio::time::sleep(backoff_on_error) => {},
                    _ = stop.cancelled() => break,
                }
                backoff_on_error = (backoff_on_error * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let n = claimed.len() as u32;
        let mut first = Some(first);
        for item in claimed {
            let permit = match first.take() {
                Some(p) => p,
                None => match slots.clone().try_acquire_owned() {
                    Ok(p) => p,
                    // Cannot happen (at most the free slots were claimed), but never
                    // run more than the slots allow.
                    Err(_) => match slots.clone().acquire_owned().await {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                },
            };
            // The slot is given back when the run ends. `map` keeps the run's future
            // once in the task; an `async move` block awaiting it would hold it twice.
            runs.spawn(futures_util::FutureExt::map(run(item), move |()| {
                drop(permit)
            }));
        }
        drop(first);
        if n < batch {
            // Queue drained: sleep until a wake-up, the poll interval, or shutdown.
            tokio::select! {
                _ = pacing.wake.notified() => {},
                _ = tokio::time::sleep(pacing.poll_interval) => {},
                _ = stop.cancelled() => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Every queued item runs once, never more at a time than the slots, and a failed
    /// claim is retried rather than ending the loop.
    #[tokio::test]
    async fn runs_each_item_once_within_the_slots() {
        let queue = Arc::new(Mutex::new((0..40u32).collect::<Vec<_>>()));
        let fail_once = Arc::new(AtomicUsize::new(1));
        let (running, peak, done) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(Mutex::new(Vec::new())),
        );
        let (wake, stop, runs) = (Notify::new(), CancellationToken::new(), TaskTracker::new());
        let slots = Arc::new(Semaphore::new(3));
        let claim = |n: u32| {
            let (queue, fail_once) = (queue.clone(), fail_once.clone());
            async move {
                if fail_once.fetch_sub(1, Ordering::SeqCst) == 1 {
                    return Err(crate::store::StoreError::Engine("first claim".into()));
                }
                let mut q = queue.lock().unwrap();
                let k = q.len().min(n as usize);
                Ok(q.drain(..k).collect::<Vec<_>>())
            }
        };
        let run = |item: u32| {
            let (running, peak, done) = (running.clone(), peak.clone(), done.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::task::yield_now().await;
                running.fetch_sub(1, Ordering::SeqCst);
                done.lock().unwrap().push(item);
            }
        };
        let pacing = Pacing {
            max_batch: 64,
            poll_interval: Duration::from_millis(5),
            wake: &wake,
            what: "test items",
        };
        let watcher = async {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while done.lock().unwrap().len() < 40 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            stop.cancel();
        };
        tokio::join!(
            claim_and_run(slots, pacing, &stop, &runs, claim, run),
            watcher
        );
        runs.close();
        runs.wait().await;
        let mut seen = done.lock().unwrap().clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..40).collect::<Vec<_>>());
        assert!(
            peak.load(Ordering::SeqCst) <= 3,
            "ran more than the slots allow"
        );
    }
}
