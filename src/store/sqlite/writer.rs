//! The SQLite group-commit writer: one thread owns the write connection and runs the
//! hot task writes (submit, claim, step, finish, lease renewal, AI call records) in
//! batches, one transaction per batch.
//!
//! Why: SQLite admits one writer at a time, so every write transaction is on the
//! critical path. Through the async driver each statement was a round trip to the
//! driver's connection thread, and each round trip two thread wake-ups; on a small
//! machine those wake-ups, not SQLite, set the ceiling (the write connection sat idle
//! most of the time). Here a write is a closure run on the thread that owns the
//! connection: no wake-up inside a transaction, and everything that queued up while one
//! batch ran goes into the next batch and its single commit.
//!
//! Each job runs inside its own `SAVEPOINT`: a job that fails is rolled back alone and
//! the rest of its batch commits. A job's result is delivered only after its batch has
//! committed (or with an error if the commit failed), so a caller never sees a write
//! that is not durable in the database. The other (rarer) writes still go through the
//! async driver's write connection; a shared [`Gate`] keeps the two from ever waiting on
//! SQLite's sleeping busy handler.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use crate::store::{StoreError, StoreResult};

/// Mutual exclusion between this writer's batches and the async driver's write
/// connection (FIFO-fair, usable from the writer thread and from async code).
pub(super) type Gate = Arc<tokio::sync::Mutex<()>>;

/// Most jobs in one transaction: bounds the latency a batch adds to its first job.
const MAX_BATCH: usize = 256;

/// A job: runs on the connection (or is told why it cannot run), returns whether it
/// succeeded and how to deliver its result once the batch's fate (`None` committed,
/// `Some(error)` not) is known.
type Job = Box<dyn FnOnce(Result<&rusqlite::Connection, &str>) -> Done + Send>;

/// Hands a job's result to its caller, given the batch's fate.
type Deliver = Box<dyn FnOnce(Option<&str>) + Send>;

struct Done {
    ok: bool,
    deliver: Deliver,
}

pub(super) struct Writer {
    /// Taken by [`Writer::close`]: the thread finishes the queued jobs and ends.
    jobs: std::sync::Mutex<Option<mpsc::Sender<Job>>>,
    /// Resolves once the thread has closed the connection.
    closed: tokio::sync::watch::Receiver<bool>,
}

impl Writer {
    /// Opens the write connection on `path` (the database exists and is in WAL mode:
    /// the async pools opened it first) and starts the writer thread.
    pub(super) fn start(path: &Path, gate: Gate) -> StoreResult<Self> {
        let conn = rusqlite::Connection::open(path).map_err(engine)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(engine)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
             PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY;",
        )
        .map_err(engine)?;
        conn.set_prepared_statement_cache_capacity(64);
        let (jobs, rx) = mpsc::channel::<Job>();
        let (closed_tx, closed) = tokio::sync::watch::channel(false);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                run(&conn, rx, gate);
                drop(conn);
                let _ = closed_tx.send(true);
            })
            .map_err(|e| StoreError::Engine(format!("cannot start the SQLite writer: {e}")))?;
        Ok(Self {
            jobs: std::sync::Mutex::new(Some(jobs)),
            closed,
        })
    }

    /// Lets the queued jobs finish, then closes the write connection.
    pub(super) async fn close(&self) {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
        let mut closed = self.closed.clone();
        let _ = closed.wait_for(|c| *c).await;
    }

    /// Runs `work` in the next batch and returns its result once the batch committed.
    /// The job runs to its end even if the caller stops waiting.
    pub(super) async fn run<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> StoreResult<T> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel::<StoreResult<T>>();
        let job: Job = Box::new(move |conn| {
            let result = match conn {
                Ok(conn) => work(conn),
                Err(why) => Err(StoreError::Engine(format!("write not run: {why}"))),
            };
            Done {
                ok: result.is_ok(),
                deliver: Box::new(move |batch_error| {
                    let r = match (batch_error, result) {
                        (None, r) => r,
                        (Some(_), Err(e)) => Err(e),
                        (Some(e), Ok(_)) => Err(StoreError::Engine(format!(
                            "the write was rolled back: commit failed: {e}"
                        ))),
                    };
                    let _ = tx.send(r);
                }),
            }
        });
        let sent = match &*self.jobs.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(jobs) => jobs.send(job).is_ok(),
            None => false,
        };
        if !sent {
            return Err(StoreError::Database(sqlx::Error::PoolClosed));
        }
        rx.await
            .map_err(|_| StoreError::Engine("the SQLite writer has stopped".into()))?
    }
}

fn run(conn: &rusqlite::Connection, rx: mpsc::Receiver<Job>, gate: Gate) {
    // Ends when the store is closed or dropped (no sender left).
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        metrics::histogram!(crate::store::WRITE_BATCH_SIZE, "kind" => "writer")
            .record(batch.len() as f64);
        let _exclusive = gate.blocking_lock();
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            let why = e.to_string();
            tracing::warn!(error = %why, "sqlite writer cannot begin a transaction");
            for job in batch {
                (job(Err(&why)).deliver)(Some(&why));
            }
            continue;
        }
        let mut delivered = Vec::with_capacity(batch.len());
        for job in batch {
            let done = match conn.execute_batch("SAVEPOINT job") {
                Ok(()) => {
                    let done = job(Ok(conn));
                    if !done.ok {
                        let _ = conn.execute_batch("ROLLBACK TO job");
                    }
                    let _ = conn.execute_batch("RELEASE job");
                    done
                }
                Err(e) => job(Err(&e.to_string())),
            };
            delivered.push(done.deliver);
        }
        let outcome = match conn.execute_batch("COMMIT") {
            Ok(()) => None,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                tracing::warn!(error = %e, "sqlite writer commit failed; batch rolled back");
                Some(e.to_string())
            }
        };
        for deliver in delivered {
            deliver(outcome.as_deref());
        }
    }
}

/// A SQLite engine error as a store error; busy, I/O and full-disk faults count as the
/// database being unavailable.
pub(super) fn engine(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode as C;
    match e.sqlite_error_code() {
        Some(
            C::DatabaseBusy | C::DatabaseLocked | C::SystemIoFailure | C::DiskFull | C::CannotOpen,
        ) => StoreError::Database(sqlx::Error::Io(std::io::Error::other(format!(
            "sqlite: {e}"
        )))),
        _ => StoreError::Engine(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    /// The bundled SQLite is built with the flags of `.cargo/config.toml`: without
    /// allocation statistics (a process-wide lock around every allocation) and without
    /// the memory manager (one page cache, behind one lock, shared by every connection).
    #[test]
    fn the_bundled_sqlite_has_no_process_wide_allocation_locks() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let mut stmt = conn.prepare("PRAGMA compile_options").unwrap();
        let options: Vec<String> = stmt
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(options.iter().any(|o| o == "THREADSAFE=1"), "{options:?}");
        assert!(
            options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
            "built with allocation statistics: {options:?}"
        );
        assert!(
            !options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"),
            "built with the memory manager: {options:?}"
        );
    }
}
