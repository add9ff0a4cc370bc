//! Where log lines go: stdout, through one shared buffer written by a thread of its own.
//!
//! Writing each line straight to stdout cost a `write` system call per line and, with
//! several threads logging, a contended lock (the threads took turns on stdout's lock,
//! sleeping on a futex while another was in the kernel). Lines are instead appended to a
//! buffer under a short lock and the writer thread writes what has gathered in one call:
//! it sleeps until a line arrives in an empty buffer, lingers [`LINGER`] for more, and
//! writes them all.
//!
//! What a reader sees is unchanged: the same lines, whole and in order. Warnings and
//! errors are written before the call that logged them returns (with everything queued
//! before them), so a failure is on disk even if the process dies right after; a buffer
//! past [`FLUSH_AT`] is written by the thread that filled it, so a blocked stdout slows
//! the loggers down instead of growing the buffer. At the end of a command, and when a
//! thread panics, [`flush`] writes what is left. Only a process killed outright
//! (`SIGKILL`) can lose lines: at most the last [`LINGER`] of informational ones.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long the writer waits after the first line of a batch before writing it.
pub const LINGER: Duration = Duration::from_millis(10);
/// A buffer this large is written at once by the thread that appends to it.
pub const FLUSH_AT: usize = 256 * 1024;
/// A larger spare buffer (after a burst) is not kept.
const KEEP: usize = 1024 * 1024;

/// One output behind a buffer and its writer thread.
pub struct Sink {
    pending: Mutex<Pending>,
    /// Signalled when a line lands in an empty buffer, and on close.
    arrived: Condvar,
    /// The output and the spare buffer; held while writing, so batches stay in order.
    out: Mutex<Out>,
    linger: Duration,
}

struct Pending {
    buf: Vec<u8>,
    closed: bool,
}

struct Out {
    target: Box<dyn Write + Send>,
    spare: Vec<u8>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while a lock was held leaves bytes, never a broken invariant: go on.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Sink {
    /// A sink writing to `target`, with its writer thread started. `None` when the thread
    /// cannot be started (the caller then writes lines itself).
    pub fn start(target: Box<dyn Write + Send>, linger: Duration) -> Option<Arc<Sink>> {
        let sink = Arc::new(Sink {
            pending: Mutex::new(Pending {
                buf: Vec::new(),
                closed: false,
            }),
            arrived: Condvar::new(),
            out: Mutex::new(Out {
                target,
                spare: Vec::new(),
            }),
            linger,
        });
        let writer = sink.clone();
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || writer.run())
            .ok()?;
        Some(sink)
    }

    /// Queues `line` (one or more whole lines). `urgent` writes it, and all before it,
    /// before returning.
    pub fn append(&self, line: &[u8], urgent: bool) {
        let mut pending = lock(&self.pending);
        let was_empty = pending.buf.is_empty();
        pending.buf.extend_from_slice(line);
        let full = pending.buf.len() >= FLUSH_AT;
        drop(pending);
        if urgent || full {
            self.flush();
        } else if was_empty {
            self.arrived.notify_one();
        }
    }

    /// Writes everything queued so far.
    pub fn flush(&self) {
        let mut out = lock(&self.out);
        let out = &mut *out;
        std::mem::swap(&mut lock(&self.pending).buf, &mut out.spare);
        if out.spare.is_empty() {
            return;
        }
        // As before the buffer: a line that cannot be written is dropped, never retried.
        let _ = out.target.write_all(&out.spare);
        let _ = out.target.flush();
        out.spare.clear();
        if out.spare.capacity() > KEEP {
            out.spare = Vec::new();
        }
    }

    /// Stops the writer thread after it has written what is queued. Lines appended later
    /// wait for the next [`Sink::flush`].
    pub fn close(&self) {
        lock(&self.pending).closed = true;
        self.arrived.notify_one();
    }

    fn run(&self) {
        loop {
            let mut pending = lock(&self.pending);
            while pending.buf.is_empty() && !pending.closed {
                pending = self
                    .arrived
                    .wait(pending)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            let closed = pending.closed;
            drop(pending);
            if !closed {
                std::thread::sleep(self.linger);
            }
            self.flush();
            if closed {
                return;
            }
        }
    }
}

/// The process's stdout sink, once a logger has been installed.
static STDOUT: OnceLock<Option<Arc<Sink>>> = OnceLock::new();

fn stdout_sink() -> Option<&'static Arc<Sink>> {
    STDOUT
        .get_or_init(|| Sink::start(Box::new(std::io::stdout()), LINGER))
        .as_ref()
}

/// Writes what the stdout sink holds (nothing to do when no logger writes to it).
pub fn flush() {
    if let Some(Some(sink)) = STDOUT.get() {
        sink.flush();
    }
}

/// The logger's [`MakeWriter`]: each line goes to `sink`, or straight to stdout when the
/// writer thread could not be started.
#[derive(Clone)]
pub struct Buffered {
    sink: Option<Arc<Sink>>,
}

impl Buffered {
    /// Lines to the process's stdout sink.
    pub fn stdout() -> Self {
        Self {
            sink: stdout_sink().cloned(),
        }
    }

    /// Lines to `sink` (tests).
    pub fn to(sink: Arc<Sink>) -> Self {
        Self { sink: Some(sink) }
    }
}

/// A writer for one line; warnings and errors are urgent.
pub struct LineWriter<'a> {
    sink: Option<&'a Sink>,
    urgent: bool,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.sink {
            Some(sink) => {
                sink.append(buf, self.urgent);
                Ok(buf.len())
            }
            None => std::io::stdout().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.sink {
            Some(sink) => {
                sink.flush();
                Ok(())
            }
            None => std::io::stdout().flush(),
        }
    }
}

impl<'a> MakeWriter<'a> for Buffered {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> LineWriter<'a> {
        LineWriter {
            sink: self.sink.as_deref(),
            urgent: false,
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> LineWriter<'a> {
        LineWriter {
            sink: self.sink.as_deref(),
            urgent: *meta.level() <= tracing::Level::WARN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::logging::tests::Buf as Shared;

    fn sink(linger: Duration) -> (Arc<Sink>, Shared) {
        let out = Shared::default();
        let sink = Sink::start(Box::new(out.clone()), linger).expect("writer thread");
        (sink, out)
    }

    #[test]
    fn the_writer_thread_writes_a_batch_after_the_linger() {
        let (sink, out) = sink(Duration::from_millis(5));
        sink.append(b"one\n", false);
        sink.append(b"two\n", false);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while out.text().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(out.text(), "one\ntwo\n");
        sink.close();
    }

    #[test]
    fn urgent_lines_and_flush_write_before_returning() {
        // A linger far longer than the test: only the calls themselves can write.
        let (sink, out) = sink(Duration::from_secs(3600));
        sink.append(b"info\n", false);
        sink.append(b"warn\n", true);
        assert_eq!(out.text(), "info\nwarn\n");
        sink.append(b"later\n", false);
        sink.flush();
        assert_eq!(out.text(), "info\nwarn\nlater\n");
    }

    #[test]
    fn a_full_buffer_is_written_by_the_appending_thread() {
        let (sink, out) = sink(Duration::from_secs(3600));
        let line = vec![b'x'; 1023];
        let mut expected = 0;
        while expected < FLUSH_AT {
            sink.append(&line, false);
            sink.append(b"\n", false);
            expected += 1024;
        }
        assert_eq!(out.text().len(), expected);
    }

    #[test]
    fn close_writes_what_is_queued() {
        let (sink, out) = sink(Duration::from_secs(3600));
        sink.append(b"last\n", false);
        sink.close();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while out.text().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(out.text(), "last\n");
    }

    #[test]
    fn lines_from_many_threads_stay_whole_and_each_in_order() {
        let (sink, out) = sink(Duration::from_millis(1));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    for i in 0..2_000 {
                        let line = format!("{t} {i} {}\n", "y".repeat(i % 300));
                        sink.append(line.as_bytes(), i % 500 == 0);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("logging thread");
        }
        sink.flush();
        let text = out.text();
        let mut next = [0usize; 8];
        for line in text.lines() {
            let mut parts = line.split(' ');
            let t: usize = parts.next().and_then(|p| p.parse().ok()).expect("thread");
            let i: usize = parts.next().and_then(|p| p.parse().ok()).expect("index");
            assert_eq!(i, next[t], "thread {t}'s lines out of order or lost");
            assert_eq!(
                parts.next().map(str::len),
                Some(i % 300),
                "line {t} {i} torn"
            );
            next[t] += 1;
        }
        assert_eq!(next, [2_000; 8]);
        sink.close();
    }

    #[test]
    fn warnings_are_urgent_info_is_not() {
        use tracing_subscriber::layer::SubscriberExt;
        let (sink, out) = sink(Duration::from_secs(3600));
        let make = Buffered::to(sink.clone());
        let subscriber =
            tracing_subscriber::registry().with(crate::telemetry::logging::JsonLayer::new(make));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("queued");
            assert_eq!(out.text(), "");
            tracing::warn!("written");
        });
        let text = out.text();
        assert!(text.contains("\"message\":\"queued\""), "{text}");
        assert!(text.contains("\"message\":\"written\""), "{text}");
        assert!(text.find("queued") < text.find("written"), "{text}");
    }
}
