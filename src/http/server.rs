//! Serving connections with hyper: a cap on open connections, a deadline for each request
//! head (which also closes idle keep-alive connections), a bounded read buffer, the time each
//! request waited to be scheduled, and a shutdown that closes connections with nothing to
//! finish at once.
//!
//! The queueing clock: every connection task runs under a waker that notes when it was first
//! woken since its last poll. When hyper dispatches a request during a poll, that instant (or
//! the accept, for a connection's first poll) is when the request was ready to be worked on;
//! the difference to now is how long it sat in the runtime's queues. The router sheds
//! storefront requests that waited longer than `server.max_queue_delay_ms`
//! ([`QueuedSince`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use axum::Router;
use futures_util::task::AtomicWaker;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tower::ServiceExt;

use crate::metrics::Metrics;

/// Limits on connections, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Most connections open at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// Longest a client may take to send a request head, and longest an idle keep-alive
    /// connection stays open.
    pub header_read_timeout: Duration,
    /// hyper's read buffer: a head longer than this is answered by hyper itself (431).
    pub max_buffer_bytes: usize,
}

/// When the connection task was ready to handle this request (a request extension).
#[derive(Debug, Clone, Copy)]
pub struct QueuedSince(pub Instant);

/// A monotonic origin for wake times kept as nanoseconds in an atomic.
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Nanoseconds since [`origin`]; never 0, which means "not woken".
fn stamp(at: Instant) -> u64 {
    (at.saturating_duration_since(origin()).as_nanos() as u64).max(1)
}

/// The waker a connection task runs under: notes its first wake since the last poll.
#[derive(Default)]
struct WakeClock {
    /// First wake since the last poll (0: none yet).
    woken: AtomicU64,
    /// When the current poll's wake happened.
    ready: AtomicU64,
    inner: AtomicWaker,
}

impl Wake for WakeClock {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let _ = self.woken.compare_exchange(
            0,
            stamp(Instant::now()),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        self.inner.wake();
    }
}

impl WakeClock {
    /// When the task became ready for the poll now running.
    fn ready_since(&self) -> Instant {
        origin() + Duration::from_nanos(self.ready.load(Ordering::Relaxed))
    }
}

/// A connection task under its [`WakeClock`].
struct Clocked<F> {
    clock: Arc<WakeClock>,
    waker: Waker,
    task: Pin<Box<F>>,
}

impl<F: Future<Output = ()>> Future for Clocked<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let woken = self.clock.woken.swap(0, Ordering::Relaxed);
        if woken != 0 {
            self.clock.ready.store(woken, Ordering::Relaxed);
        }
        self.clock.inner.register(cx.waker());
        let this = &mut *self;
        this.task
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
    }
}

/// Serves `router` on `listener` until `shutdown` completes; then closes the connections
/// that have nothing to finish and lets the others finish their requests. Returns once
/// every connection is closed (the caller bounds that with its grace period).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_buffer_bytes.max(8192))
        .keep_alive(true);
    let http = Arc::new(http);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop, stopping) = watch::channel(false);
    // Every connection task holds a sender; `recv` returns `None` once all are gone.
    let (open, mut all_closed) = mpsc::channel::<()>(1);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = Arc::clone(&slots).acquire_owned() => slot,
        };
        let Ok(slot) = slot else { break };
        let (stream, _peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: retrying at once would spin.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let accepted_at = Instant::now();
        // No Nagle delay: with it, a small segment waits while an earlier small one is still
        // unacknowledged, and a client may hold its ACK for tens of milliseconds (delayed
        // ACK). hyper writes a response in one `writev`, so this guards the partial writes of
        // a full socket buffer and whatever writes come later; HTTP servers set it as a rule.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY on a connection");
        }
        let clock = Arc::new(WakeClock::default());
        clock.ready.store(stamp(accepted_at), Ordering::Relaxed);
        let task = connection(
            TokioIo::new(stream),
            router.clone(),
            Arc::clone(&http),
            Arc::clone(&clock),
            stopping.clone(),
            metrics.clone(),
        );
        let open = open.clone();
        let waker = Waker::from(Arc::clone(&clock));
        tokio::spawn(Clocked {
            clock,
            waker,
            task: Box::pin(async move {
                task.await;
                drop(slot);
                drop(open);
            }),
        });
    }
    drop(listener);
    let _ = stop.send(true);
    drop(open);
    let _ = all_closed.recv().await;
}

/// Serves one connection; on shutdown, closes it at once unless a request has started on it.
async fn connection(
    io: TokioIo<tokio::net::TcpStream>,
    router: Router,
    http: Arc<hyper::server::conn::http1::Builder>,
    clock: Arc<WakeClock>,
    mut stopping: watch::Receiver<bool>,
    metrics: Metrics,
) {
    let _open = metrics.connection_opened();
    let started = Arc::new(AtomicBool::new(false));
    let service = {
        let started = Arc::clone(&started);
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            started.store(true, Ordering::Relaxed);
            let mut request = request.map(axum::body::Body::new);
            request
                .extensions_mut()
                .insert(QueuedSince(clock.ready_since()));
            router.clone().oneshot(request)
        })
    };
    let conn = http.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
            return;
        }
        _ = stopping.wait_for(|stop| *stop) => {}
    }
    // hyper closes an idle keep-alive connection here and finishes a request in progress; a
    // connection whose first request head is still arriving would wait for its deadline.
    conn.as_mut().graceful_shutdown();
    if futures_util::poll!(conn.as_mut()).is_ready() || !started.load(Ordering::Relaxed) {
        return;
    }
    if let Err(error) = conn.await {
        tracing::debug!(%error, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A future that is pending until woken once, and notes what the clock said when it ran.
    struct Probe {
        clock: Arc<WakeClock>,
        waker: Arc<std::sync::Mutex<Option<Waker>>>,
        seen: Arc<std::sync::Mutex<Option<Instant>>>,
        polls: usize,
    }

    impl Future for Probe {
        type Output = ();

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls += 1;
            if self.polls == 1 {
                *self.waker.lock().unwrap() = Some(cx.waker().clone());
                return Poll::Pending;
            }
            *self.seen.lock().unwrap() = Some(self.clock.ready_since());
            Poll::Ready(())
        }
    }

    #[test]
    fn a_request_is_dated_from_the_wake_not_from_the_poll() {
        let clock = Arc::new(WakeClock::default());
        let accepted = Instant::now();
        clock.ready.store(stamp(accepted), Ordering::Relaxed);
        let waker = Arc::new(std::sync::Mutex::new(None::<Waker>));
        let seen = Arc::new(std::sync::Mutex::new(None));
        let mut task = Clocked {
            waker: Waker::from(Arc::clone(&clock)),
            clock: Arc::clone(&clock),
            task: Box::pin(Probe {
                clock,
                waker: Arc::clone(&waker),
                seen: Arc::clone(&seen),
                polls: 0,
            }),
        };
        let noop = Waker::noop();
        let mut cx = Context::from_waker(noop);
        assert!(Pin::new(&mut task).poll(&mut cx).is_pending());
        let woken = Instant::now();
        waker.lock().unwrap().take().unwrap().wake();
        // The task sits in a queue this long before it runs again.
        std::thread::sleep(Duration::from_millis(30));
        let woken_later = Instant::now();
        // A second wake before the poll (a timer, say) must not move the date.
        task.waker.wake_by_ref();
        assert!(Pin::new(&mut task).poll(&mut cx).is_ready());
        let ready = seen.lock().unwrap().unwrap();
        assert!(
            ready >= woken - Duration::from_millis(1),
            "dated before the wake"
        );
        assert!(
            ready < woken_later,
            "dated from the first wake, not a later one or the poll"
        );
        assert!(ready.elapsed() >= Duration::from_millis(30));
    }
}
