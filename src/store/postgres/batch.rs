//! Group commit (ADR 0018): writes of the same kind that arrive while earlier ones are
//! in flight leave together, as one statement in one transaction, so concurrent callers
//! share a round trip, a plan and a commit (one WAL flush) instead of paying one each.
//!
//! A caller hands its item to the batcher and waits for its own answer. The batcher
//! takes whatever is waiting (up to [`MAX_BATCH`]) as soon as one of its
//! [`MAX_IN_FLIGHT`] flush slots is free: an idle system sends every item alone, at once
//! (no timer, no added latency); a busy one sends bigger batches, and the bigger they
//! are, the less each item costs. Durability is unchanged: an answer is given only after
//! the commit of the statement that wrote the item.
//!
//! When a batch statement fails for a reason other than the database being unreachable
//! (one bad item must not fail its neighbours), each item is retried alone and gets its
//! own answer.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::store::{StoreError, StoreResult, WRITE_BATCH_SIZE};

/// At most this many items per statement.
pub(super) const MAX_BATCH: usize = 128;
/// At most this many batch statements of one kind at a time (each holds one pooled
/// connection while it runs). Two measured best: one more statement in flight splits
/// the waiting items into smaller batches (more statements, less throughput); two keep
/// one slow batch from holding up every caller.
pub(super) const MAX_IN_FLIGHT: usize = 2;

/// One kind of batched write.
#[async_trait]
pub(super) trait BatchOp: Send + Sync + 'static {
    /// The `kind` label of the batch-size histogram.
    const KIND: &'static str;
    type Item: Send + Sync + 'static;
    type Out: Send + 'static;
    /// Writes `items` in one transaction; returns one answer per item, in order.
    async fn run(&self, pool: &PgPool, items: &[Self::Item]) -> StoreResult<Vec<Self::Out>>;
}

type Job<O> = (
    <O as BatchOp>::Item,
    oneshot::Sender<StoreResult<<O as BatchOp>::Out>>,
);

/// The handle callers write through; the flushing loop ends when the last handle drops.
pub(super) struct Batcher<O: BatchOp> {
    tx: mpsc::UnboundedSender<Job<O>>,
}

impl<O: BatchOp> Batcher<O> {
    /// Starts the flushing loop on the current runtime.
    pub(super) fn start(op: O, pool: PgPool) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(flush_loop(Arc::new(op), pool, rx));
        Self { tx }
    }

    /// Writes `item` with whatever else is waiting, and returns its answer.
    pub(super) async fn submit(&self, item: O::Item) -> StoreResult<O::Out> {
        let (done, answer) = oneshot::channel();
        self.tx.send((item, done)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> StoreError {
    StoreError::Database(sqlx::Error::PoolClosed)
}

async fn flush_loop<O: BatchOp>(op: Arc<O>, pool: PgPool, mut rx: mpsc::UnboundedReceiver<Job<O>>) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        // A free slot first: while all are busy, items pile up into the next batch.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut jobs = Vec::with_capacity(8);
        jobs.push(first);
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let (op, pool) = (op.clone(), pool.clone());
        tokio::spawn(async move {
            flush(&*op, &pool, jobs).await;
            drop(slot);
        });
    }
}

async fn flush<O: BatchOp>(op: &O, pool: &PgPool, jobs: Vec<Job<O>>) {
    let (items, answers): (Vec<_>, Vec<_>) = jobs.into_iter().unzip();
    metrics::histogram!(WRITE_BATCH_SIZE, "kind" => O::KIND).record(items.len() as f64);
    match op.run(pool, &items).await {
        Ok(outs) if outs.len() == items.len() => {
            for (answer, out) in answers.into_iter().zip(outs) {
                let _ = answer.send(Ok(out));
            }
        }
        Ok(outs) => {
            let msg = format!("batch of {} answered {} items", items.len(), outs.len());
            for answer in answers {
                let _ = answer.send(Err(StoreError::Corrupt(msg.clone())));
            }
        }
        Err(e) if items.len() == 1 => {
            if let Some(answer) = answers.into_iter().next() {
                let _ = answer.send(Err(e));
            }
        }
        Err(e) if e.is_unavailable() => {
            for answer in answers {
                let _ = answer.send(Err(same(&e)));
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, size = items.len(), "batch failed; writing its items one by one");
            for (item, answer) in items.iter().zip(answers) {
                let out = op
                    .run(pool, std::slice::from_ref(item))
                    .await
                    .and_then(|mut v| {
                        v.pop()
                            .ok_or_else(|| StoreError::Corrupt("empty answer".into()))
                    });
                let _ = answer.send(out);
            }
        }
    }
}

/// The same failure for every item of a batch the database could not take at all
/// (`StoreError` is not `Clone`: its `sqlx` source is not).
fn same(e: &StoreError) -> StoreError {
    match e {
        StoreError::Database(sqlx::Error::Io(io)) => StoreError::Database(sqlx::Error::Io(
            std::io::Error::new(io.kind(), io.to_string()),
        )),
        StoreError::Database(sqlx::Error::PoolTimedOut) => {
            StoreError::Database(sqlx::Error::PoolTimedOut)
        }
        StoreError::Database(sqlx::Error::PoolClosed) => {
            StoreError::Database(sqlx::Error::PoolClosed)
        }
        StoreError::NotFound => StoreError::NotFound,
        other => StoreError::Engine(other.to_string()),
    }
}
