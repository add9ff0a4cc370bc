//! Persists `ai_calls` records in batches, off the request path.
//!
//! The router `try_send`s each record into a bounded queue (a full queue drops the record
//! and counts it in `ai_call_records_dropped_total` rather than slow a call down). The
//! writer takes whatever has queued up — up to 512 at a time, lingering [`LINGER`] after
//! the first record so a steady trickle of calls becomes one insert rather than one per
//! call — and inserts it in one statement. On shutdown it drains the queue before
//! returning.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::store::{AiCallRecord, DynStore};

const QUEUE: usize = 65_536;
const BATCH: usize = 512;
/// How long a batch may wait for more records after its first one.
const LINGER: std::time::Duration = std::time::Duration::from_millis(20);

pub struct Writer {
    rx: mpsc::Receiver<AiCallRecord>,
    store: DynStore,
}

impl Writer {
    pub fn new(store: DynStore) -> (Self, mpsc::Sender<AiCallRecord>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (Self { rx, store }, tx)
    }

    /// Writes until `stop` is cancelled, then drains what is queued.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut buf = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                n = self.rx.recv_many(&mut buf, BATCH) => {
                    if n == 0 {
                        break;
                    }
                    if buf.len() < BATCH {
                        let until = tokio::time::Instant::now() + LINGER;
                        while buf.len() < BATCH {
                            let room = BATCH - buf.len();
                            tokio::select! {
                                got = self.rx.recv_many(&mut buf, room) => {
                                    if got == 0 { break; }
                                }
                                _ = tokio::time::sleep_until(until) => break,
                                _ = stop.cancelled() => break,
                            }
                        }
                    }
                    self.flush(&mut buf).await;
                }
                _ = stop.cancelled() => break,
            }
        }
        self.rx.close();
        while self.rx.recv_many(&mut buf, BATCH).await > 0 {
            self.flush(&mut buf).await;
        }
    }

    async fn flush(&self, buf: &mut Vec<AiCallRecord>) {
        if let Err(e) = self.store.insert_ai_calls(buf).await {
            tracing::error!(error = %e, records = buf.len(), "could not record AI calls");
        }
        buf.clear();
    }
}
