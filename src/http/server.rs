//! Serving connections with hyper: a cap on open connections, a deadline for each request
//! head (which also closes idle keep-alive connections), a bounded read buffer, shedding of
//! storefront requests that waited too long to be worked on, and a shutdown that closes
//! connections with nothing to finish at once.
//!
//! The queueing clock: every connection task runs under a waker that notes when it was first
//! woken since its last poll. When hyper dispatches a request during a poll, that instant (or
//! the accept, for a connection's first poll) is when the request was ready to be worked on;
//! the difference to now is how long it sat in the runtime's queues. A storefront request
//! that waited longer than `server.max_queue_delay_ms` (or `server.queue_delay_target_ms`
//! while the queue stands, [`super::shedding`]) is answered `503 overloaded` here,
//! before the router: under overload every shed request must cost far less than a served one,
//! or shedding eats the capacity it is meant to protect.
//!
//! A connection's first request head is read here, not by hyper, into a buffer the size of
//! what arrived (`first_head.rs`); hyper takes the connection over once the head is complete,
//! reading those bytes first. hyper's state (an 8 KiB write buffer from the start, an 8 KiB
//! read buffer from its first read) would make every client that opens a connection and sends
//! half a head cost 16 KiB until its deadline; waiting here it costs its task, timer and
//! socket, under 2 KiB (docs/performance.md, "Hostile clients").
//!
//! The head deadline is a watchdog per connection rather than hyper's own
//! `header_read_timeout`, which arms and disarms a timer for every request and polls the
//! socket once more after each: the watchdog wakes twice per deadline, whatever the traffic,
//! and a request costs it one atomic increment. It watches the first head and hyper after it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::Router;
use futures_util::task::AtomicWaker;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tower::ServiceExt;

use super::first_head::{read_first_head, FirstHead, Rewind};
use super::shedding::QueueDelayLimit;
use crate::metrics::Metrics;

/// Limits on connections, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Most connections open at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// Longest a client may take to send a request head, and longest an idle keep-alive
    /// connection stays open.
    pub header_read_timeout: Duration,
    /// hyper's read buffer, and the most of a first head read before hyper takes over: a
    /// head longer than this is answered by hyper itself (431).
    pub max_buffer_bytes: usize,
    /// Longest a storefront request may wait to be worked on; older ones get 503
    /// `overloaded` at once.
    pub max_queue_delay: Duration,
    /// The tighter bound while the queue stands (see [`super::shedding`]).
    pub queue_delay_target: Duration,
    /// How often the shedding rule judges whether the queue stands.
    pub queue_delay_interval: Duration,
}

/// Whether a request waited too long to be served: only storefront routes are shed, so
/// probes, metrics and admin calls answer however busy the server is. `limit` is asked only
/// for storefront requests, so only they count in the shedding rule's intervals.
fn is_stale<B>(
    request: &hyper::Request<B>,
    waited: Duration,
    limit: impl FnOnce() -> Duration,
) -> bool {
    matches!(*request.method(), Method::GET | Method::POST)
        && matches!(request.uri().path(), "/recommendations" | "/events")
        && waited > limit()
}

/// The answer to a shed request: the documented 503 `overloaded`, its body rendered once.
fn overloaded() -> Response {
    let mut response = Response::new(Body::from(super::error::overloaded_body()));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

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
    // hyper's smallest buffer; the first head is read up to the same limit.
    let limits = ConnectionLimits {
        max_buffer_bytes: limits.max_buffer_bytes.max(8192),
        ..limits
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    http.max_buf_size(limits.max_buffer_bytes).keep_alive(true);
    let (stop, stopping) = watch::channel(false);
    let shared = Arc::new(Shared {
        router,
        http,
        queue_delay: QueueDelayLimit::new(
            limits.max_queue_delay,
            limits.queue_delay_target,
            limits.queue_delay_interval,
        ),
        limits,
        metrics,
        stopping,
    });
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
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
        let task = connection(stream, Arc::clone(&shared), Arc::clone(&clock));
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

/// What every connection of one server shares, behind one `Arc`.
struct Shared {
    router: Router,
    http: hyper::server::conn::http1::Builder,
    /// The bound on a storefront request's wait, tightened while the queue stands.
    queue_delay: QueueDelayLimit,
    limits: ConnectionLimits,
    metrics: Metrics,
    /// Becomes true on shutdown.
    stopping: watch::Receiver<bool>,
}

/// What the watchdog of one connection reads: requests started, and requests not finished.
#[derive(Default)]
struct Activity {
    started: AtomicUsize,
    in_flight: AtomicUsize,
}

/// Counts a request in flight until its handler finishes or is dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.started.fetch_add(1, Ordering::Relaxed);
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one connection: reads its first request head (closing the connection when no head
/// arrived for a whole head deadline, or at once on shutdown), then hands it to hyper with
/// those bytes to read first.
async fn connection(mut stream: TcpStream, shared: Arc<Shared>, clock: Arc<WakeClock>) {
    let _open = shared.metrics.connection_opened();
    let awaited = shared.metrics.first_head_awaited();
    let mut stopping = shared.stopping.clone();
    // One watchdog for the connection's life: the first head gets the same deadline as any
    // other, and the connection one timer.
    let mut watchdog = Watchdog::new(shared.limits.header_read_timeout);
    let no_request = Activity::default();
    let mut head = Vec::new();
    let first = {
        let read = read_first_head(&mut stream, &mut head, shared.limits.max_buffer_bytes);
        let mut read = std::pin::pin!(read);
        loop {
            tokio::select! {
                first = read.as_mut() => break first,
                quiet = watchdog.check(&no_request) => if quiet {
                    tracing::debug!("closing a connection whose first head did not arrive in time");
                    return;
                },
                // Nothing was started on it: close it at once.
                () = async { let _ = stopping.wait_for(|stop| *stop).await; } => return,
            }
        }
    };
    drop(awaited);
    match first {
        Ok(FirstHead::Complete | FirstHead::Full) => {}
        Ok(FirstHead::Closed) if head.is_empty() => return,
        // hyper answers what was sent as it did when it read the head itself.
        Ok(FirstHead::Closed) => {}
        Err(error) => {
            tracing::debug!(%error, "connection ended before its first head");
            return;
        }
    }
    let io = TokioIo::new(Rewind::new(head, stream));
    // Boxed: the task of a connection still waiting for its head stays as small as the wait,
    // not as large as hyper's connection state.
    Box::pin(serve_http(io, shared, clock, stopping, watchdog)).await;
}

/// Serves one connection with hyper; closes it when no request started or ran for a whole
/// head deadline (an idle keep-alive connection, or a later head that never completes); on
/// shutdown, closes it at once unless a request is in progress on it.
async fn serve_http(
    io: TokioIo<Rewind<TcpStream>>,
    shared: Arc<Shared>,
    clock: Arc<WakeClock>,
    mut stopping: watch::Receiver<bool>,
    mut watchdog: Watchdog,
) {
    let activity = Arc::new(Activity::default());
    let service = {
        let activity = Arc::clone(&activity);
        let shared = Arc::clone(&shared);
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let in_flight = InFlight::start(&activity);
            let now = Instant::now();
            let waited = now.saturating_duration_since(clock.ready_since());
            let stale = is_stale(&request, waited, || {
                shared.queue_delay.observe(stamp(now), waited)
            });
            let router = shared.router.clone();
            let metrics = shared.metrics.clone();
            async move {
                let _in_flight = in_flight;
                if stale {
                    let route = request.uri().path();
                    let method = if request.method() == Method::GET {
                        "GET"
                    } else {
                        "POST"
                    };
                    metrics.observe_request(method, route, "503", waited);
                    return Ok(overloaded());
                }
                router.oneshot(request.map(Body::new)).await
            }
        })
    };
    let conn = shared.http.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let stopped = loop {
        tokio::select! {
            result = conn.as_mut() => break result,
            // The guard `wait_for` returns must not live across the awaits below.
            () = async { let _ = stopping.wait_for(|stop| *stop).await; } => {
                // hyper closes an idle keep-alive connection here and finishes a request in
                // progress; a connection that never began a request is closed at once.
                conn.as_mut().graceful_shutdown();
                if futures_util::poll!(conn.as_mut()).is_ready()
                    || activity.started.load(Ordering::Relaxed) == 0
                {
                    return;
                }
                break loop {
                    tokio::select! {
                        result = conn.as_mut() => break result,
                        quiet = watchdog.check(&activity) => if quiet { return },
                    }
                };
            }
            quiet = watchdog.check(&activity) => if quiet {
                tracing::debug!("closing a connection that sent no request for a head deadline");
                return;
            },
        }
    };
    if let Err(error) = stopped {
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// Closes a connection on which no request started or ran for a whole head deadline: a head
/// that never completes, or an idle keep-alive connection. It looks every half deadline and
/// needs two quiet looks in a row, so it closes between one and one and a half deadlines.
struct Watchdog {
    period: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
    seen: usize,
    quiet_looks: u32,
}

impl Watchdog {
    fn new(deadline: Duration) -> Self {
        let period = (deadline / 2).max(Duration::from_millis(1));
        Self {
            period,
            sleep: Box::pin(tokio::time::sleep(period)),
            seen: 0,
            quiet_looks: 0,
        }
    }

    /// Waits for the next look; true when the connection has been quiet for long enough.
    async fn check(&mut self, activity: &Activity) -> bool {
        self.sleep.as_mut().await;
        self.sleep
            .as_mut()
            .reset(tokio::time::Instant::now() + self.period);
        let started = activity.started.load(Ordering::Relaxed);
        if started != self.seen || activity.in_flight.load(Ordering::Relaxed) > 0 {
            self.seen = started;
            self.quiet_looks = 0;
            return false;
        }
        self.quiet_looks += 1;
        self.quiet_looks >= 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_storefront_requests_that_waited_too_long_are_shed() {
        let limit = Duration::from_millis(20);
        let long = Duration::from_millis(21);
        let request = |method: Method, path: &str| {
            hyper::Request::builder()
                .method(method)
                .uri(path)
                .body(())
                .unwrap()
        };
        let recommendations = request(Method::GET, "/recommendations?cart=bag");
        assert!(is_stale(&recommendations, long, || limit));
        assert!(!is_stale(&recommendations, limit, || limit));
        assert!(is_stale(
            &request(Method::POST, "/recommendations"),
            long,
            || limit
        ));
        assert!(is_stale(&request(Method::POST, "/events"), long, || limit));
        // Probes, metrics and admin calls answer however long they waited.
        for path in ["/healthz", "/readyz", "/metrics", "/model", "/reload"] {
            assert!(
                !is_stale(&request(Method::GET, path), long, || limit),
                "{path}"
            );
        }
    }

    #[tokio::test]
    async fn a_shed_request_gets_the_documented_error() {
        let response = overloaded();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "overloaded");
        assert_eq!(
            body["error"]["message"],
            "the service is at capacity; retry shortly"
        );
    }

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
