//! Blocking work kept off the async runtimes' worker threads. An upload's
//! commit (`fsync` of the file, the rename, `fsync` of the directory) takes
//! milliseconds, and seconds on a busy disk; on a worker thread it would
//! stall every other session that thread drives. [`Runtime`](crate::Runtime)
//! has no blocking pool (each adapter's would differ, and the threads one
//! needs none), so the async side of this crate has its own, small one:
//! threads start on demand, at most [`MAX_THREADS`], each ending after
//! [`IDLE`] without work; jobs beyond them wait their turn.

use std::collections::VecDeque;
use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Most helper threads at once.
pub(crate) const MAX_THREADS: usize = 16;
/// A helper thread ends after this long without a job.
pub(crate) const IDLE: Duration = Duration::from_secs(10);
/// Stack of a helper thread (its jobs are a few syscalls deep).
const STACK_SIZE: usize = 256 << 10;

type Job = Box<dyn FnOnce() + Send>;

struct Pool {
    queue: VecDeque<Job>,
    threads: usize,
    idle: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    queue: VecDeque::new(),
    threads: 0,
    idle: 0,
});
static WORK: Condvar = Condvar::new();

/// The pool, even if a thread panicked holding it (jobs run unlocked, and
/// the counts are updated in single steps).
fn pool() -> MutexGuard<'static, Pool> {
    POOL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `job` on a helper thread: an idle one, a new one, or the first to
/// be free. If no thread runs and none can be started (out of threads or
/// memory), `job` runs here instead: late, but never lost.
fn submit(job: Job) {
    let mut pool = pool();
    pool.queue.push_back(job);
    if pool.queue.len() <= pool.idle {
        WORK.notify_one();
        return;
    }
    if pool.threads >= MAX_THREADS {
        return;
    }
    let started = std::thread::Builder::new()
        .name("tftp-io-blocking".into())
        .stack_size(STACK_SIZE)
        .spawn(helper);
    match started {
        Ok(_) => pool.threads += 1,
        Err(e) if pool.threads == 0 => {
            tracing::warn!(error = %e, "cannot start a helper thread: blocking work runs inline");
            // Still locked: the job just queued is the last.
            let job = pool.queue.pop_back();
            drop(pool);
            if let Some(job) = job {
                job();
            }
        }
        // A running thread takes it in turn.
        Err(e) => tracing::debug!(error = %e, "cannot start another helper thread"),
    }
}

fn helper() {
    let mut pool = pool();
    loop {
        if let Some(job) = pool.queue.pop_front() {
            drop(pool);
            job();
            pool = self::pool();
            continue;
        }
        pool.idle += 1;
        let (guard, waited) = WORK
            .wait_timeout(pool, IDLE)
            .unwrap_or_else(PoisonError::into_inner);
        pool = guard;
        pool.idle -= 1;
        if waited.timed_out() && pool.queue.is_empty() {
            pool.threads -= 1;
            return;
        }
    }
}

/// The result of [`spawn`]ed work, for the task that waits for it.
pub(crate) struct Pending<T>(Arc<Mutex<Slot<T>>>);

struct Slot<T> {
    result: Option<io::Result<T>>,
    waker: Option<Waker>,
}

impl<T> std::fmt::Debug for Pending<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pending")
    }
}

/// Runs `work` on a helper thread; poll the result with [`Pending::poll`].
/// A panic in `work` becomes an error.
pub(crate) fn spawn<T: Send + 'static>(
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Pending<T> {
    let slot = Arc::new(Mutex::new(Slot {
        result: None,
        waker: None,
    }));
    let done = Arc::clone(&slot);
    submit(Box::new(move || {
        let result = std::panic::catch_unwind(AssertUnwindSafe(work))
            .unwrap_or_else(|_| Err(io::Error::other("blocking work panicked")));
        let waker = {
            let mut slot = done.lock().unwrap_or_else(PoisonError::into_inner);
            slot.result = Some(result);
            slot.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }));
    Pending(slot)
}

impl<T> Pending<T> {
    /// The result once the work is done; until then, `cx` is woken when it
    /// is. Ready once only.
    pub(crate) fn poll(&self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match slot.result.take() {
            Some(result) => Poll::Ready(result),
            None => {
                match &mut slot.waker {
                    Some(w) => w.clone_from(cx.waker()),
                    empty => *empty = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }
}

/// Polls `pending` to completion on this thread, parked in between.
#[cfg(test)]
pub(crate) fn wait<T>(pending: &mut dyn FnMut(&mut Context<'_>) -> Poll<T>) -> T {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = pending(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_runs_on_another_thread_and_wakes_the_caller() {
        let caller = std::thread::current().id();
        let pending = spawn(move || Ok(std::thread::current().id()));
        let ran_on = wait(&mut |cx| pending.poll(cx)).unwrap();
        assert_ne!(ran_on, caller);
    }

    #[test]
    fn many_jobs_all_finish_with_at_most_max_threads() {
        let jobs: Vec<_> = (0..4 * MAX_THREADS).map(|i| spawn(move || Ok(i))).collect();
        for (i, job) in jobs.iter().enumerate() {
            assert_eq!(wait(&mut |cx| job.poll(cx)).unwrap(), i);
        }
        assert!(pool().threads <= MAX_THREADS);
    }

    #[test]
    fn a_panic_is_an_error() {
        let pending = spawn(|| -> io::Result<()> { panic!("in a job") });
        let e = wait(&mut |cx| pending.poll(cx)).unwrap_err();
        assert!(e.to_string().contains("panicked"), "{e}");
        // The helper survived it.
        let after = spawn(|| Ok(7));
        assert_eq!(wait(&mut |cx| after.poll(cx)).unwrap(), 7);
    }
}
