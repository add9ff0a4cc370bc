//! The API served by threads of its own (`API_THREADS`, ADR 0021): each thread runs a
//! single-threaded event loop that serves the connections handed to it from start to
//! end and calls vendors through its own connection pool
//! ([`crate::ai::client::use_lane`]). A request's work then stays on one thread: no
//! task migrates, and no vendor answer is handed over from another thread's event loop.
//!
//! One acceptor on the shared runtime accepts every connection and hands it to the
//! thread with the fewest open connections, so a burst of new connections spreads evenly
//! and a busy thread gets fewer. The task workers, the background jobs and the metrics
//! listener stay on the shared runtime. Database and Redis connections opened while
//! serving a request belong to the event loop of the thread that opened them, so the
//! threads live on, idle, after they stop serving, until [`ApiThreads::finish`] (after
//! the store is closed).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{Connections, accept_until};

/// How long [`ApiThreads::finish`] waits for the threads to end.
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection on its way from the acceptor to a thread.
type Handed = (std::net::TcpStream, SocketAddr);

/// The running API threads and their acceptor.
pub(super) struct ApiThreads {
    /// One per thread: sent when it has stopped serving (its connections all closed).
    served: Vec<oneshot::Receiver<()>>,
    /// Stops the serving (accept no more, finish open connections); the listeners' token.
    stop: CancellationToken,
    /// Ends the threads' event loops, cutting whatever they still run.
    release: CancellationToken,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl ApiThreads {
    /// Starts `count` threads serving what `listener` accepts with `router`, until
    /// `stop` is cancelled. Call on the shared runtime: the acceptor runs there.
    pub(super) fn start(
        count: usize,
        listener: TcpListener,
        router: axum::Router,
        header_timeout: Duration,
        stop: CancellationToken,
    ) -> anyhow::Result<ApiThreads> {
        let mut started = ApiThreads {
            served: Vec::with_capacity(count),
            stop: stop.clone(),
            release: CancellationToken::new(),
            threads: Vec::with_capacity(count),
        };
        let mut lanes = Vec::with_capacity(count);
        for i in 0..count {
            // Built here, so a failure is this call's error rather than a thread's.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start an API thread's event loop")?;
            let connections = Connections::new(router.clone(), header_timeout, stop.clone());
            let (hand, mut handed) = mpsc::unbounded_channel::<Handed>();
            let (done, served) = oneshot::channel();
            let (mine, release) = (connections.clone(), started.release.clone());
            let thread = std::thread::Builder::new()
                .name(format!("api-{i}"))
                .spawn(move || {
                    // Lane 0 is the shared runtime's.
                    crate::ai::client::use_lane(i + 1);
                    runtime.block_on(async move {
                        let serve = async {
                            // Until the acceptor stops and drops its end.
                            while let Some((stream, peer)) = handed.recv().await {
                                match tokio::net::TcpStream::from_std(stream) {
                                    Ok(stream) => mine.serve(stream, peer),
                                    Err(e) => {
                                        mine.unreserve();
                                        tracing::warn!(error = %e, "cannot take over a connection");
                                    }
                                }
                            }
                            mine.drain().await;
                        };
                        tokio::select! {
                            () = serve => {
                                let _ = done.send(());
                                release.cancelled().await;
                            }
                            () = release.cancelled() => {}
                        }
                    });
                })
                .context("cannot start an API thread")?;
            started.served.push(served);
            started.threads.push(thread);
            lanes.push((connections, hand));
        }
        tokio::spawn(async move {
            accept_until(listener, &stop, |stream, peer| {
                hand_over(&lanes, stream, peer)
            })
            .await;
        });
        Ok(started)
    }

    /// Resolves when every thread has stopped serving.
    pub(super) async fn served(&mut self) -> anyhow::Result<()> {
        let mut lost = 0;
        for served in &mut self.served {
            if served.await.is_err() {
                lost += 1;
            }
        }
        if lost > 0 {
            anyhow::bail!("{lost} API thread(s) ended without finishing their connections");
        }
        Ok(())
    }

    /// Ends the threads (whatever they still serve is cut) and waits for them a while.
    pub(super) async fn finish(mut self) {
        self.stop.cancel();
        self.release.cancel();
        let threads = std::mem::take(&mut self.threads);
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                if thread.join().is_err() {
                    tracing::error!("an API thread panicked");
                }
            }
        });
        if tokio::time::timeout(JOIN_TIMEOUT, joined).await.is_err() {
            tracing::warn!("API threads still running after their release; leaving them");
        }
    }
}

impl Drop for ApiThreads {
    /// A serving abandoned without [`ApiThreads::finish`] (its caller dropped) still
    /// ends: the acceptor stops and the threads end their event loops.
    fn drop(&mut self) {
        self.stop.cancel();
        self.release.cancel();
    }
}

/// Hands an accepted connection to the thread with the fewest open connections.
fn hand_over(
    lanes: &[(Connections, mpsc::UnboundedSender<Handed>)],
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
) {
    let Some((connections, hand)) = lanes.iter().min_by_key(|(c, _)| c.open()) else {
        return;
    };
    // Out of this runtime's event loop, into the chosen thread's.
    let stream = match stream.into_std() {
        Ok(stream) => stream,
        Err(e) => {
            tracing::warn!(error = %e, "cannot hand over a connection");
            return;
        }
    };
    connections.reserve();
    if hand.send((stream, peer)).is_err() {
        connections.unreserve();
        tracing::error!("an API thread is gone; connection dropped");
    }
}
