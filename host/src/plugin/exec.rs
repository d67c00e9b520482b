//! Where plugin calls run. A call is polled once where it is made (on the task serving
//! the connection, or on the SIP core's task): a plugin answers in microseconds, and a
//! hop to another thread would cost more than the call. A call that is not done by
//! then (it reached an epoch tick, or waits on outbound HTTP) finishes on the plugin
//! runtime: threads of its own, one fewer than the machine's CPUs (at least one), so
//! plugins that spin to their deadline, however many, can never take the last CPU from
//! the SIP core, the sockets and the timers (a bulkhead).

use std::future::Future;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

/// Threads of the plugin runtime: the CPUs less one, at least one.
pub fn threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .saturating_sub(1)
        .max(1)
}

fn runtime() -> &'static tokio::runtime::Runtime {
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads())
            .thread_name("sipwasm-plugin")
            .enable_all()
            .on_thread_park(crate::memory::on_thread_park)
            .build()
            .expect("the plugin runtime starts")
    })
}

/// Runs `fut` on the plugin runtime and waits for it.
pub async fn offload<F>(fut: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match runtime().spawn(fut).await {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("plugin call cancelled: {e}"),
    }
}

/// Polls `fut` once here; what is not done by then finishes on the plugin runtime.
pub async fn bounded<F>(fut: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match poll_once(fut) {
        Ok(v) => v,
        Err(rest) => offload(rest).await,
    }
}

/// Polls `fut` once with a waker that does nothing: its value, or the future to poll
/// again elsewhere (where it registers its wakers anew).
pub fn poll_once<F: Future>(fut: F) -> Result<F::Output, std::pin::Pin<Box<F>>> {
    let mut fut = Box::pin(fut);
    let mut cx = Context::from_waker(Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(v) => Ok(v),
        Poll::Pending => Err(fut),
    }
}
