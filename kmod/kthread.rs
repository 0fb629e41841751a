// SPDX-License-Identifier: GPL-2.0

//! Kernel threads running a Rust function over shared state; stopped and joined on drop.

use kernel::ffi::{c_int, c_void};
use kernel::prelude::*;
use kernel::sync::Arc;

use crate::bindings;

/// A running kernel thread; dropping it calls `kthread_stop` and waits for it to end.
pub(crate) struct KThread {
    task: *mut bindings::task_struct,
}

// SAFETY: the task pointer is only used to stop the thread, which any thread may do.
unsafe impl Send for KThread {}
// SAFETY: `&KThread` gives no access to the task at all.
unsafe impl Sync for KThread {}

struct Start<T> {
    ctx: Arc<T>,
    body: fn(&Arc<T>),
}

impl KThread {
    /// Starts a thread named `name/instance` running `body(&ctx)`. `body` must return
    /// soon after [`should_stop`] turns true.
    pub(crate) fn spawn<T: Send + Sync + 'static>(
        name: &'static CStr,
        instance: &CStr,
        ctx: Arc<T>,
        body: fn(&Arc<T>),
    ) -> Result<Self> {
        let start = KBox::new(Start { ctx, body }, GFP_KERNEL)?;
        let data = KBox::into_raw(start).cast::<c_void>();
        // SAFETY: `thread_main::<T>` takes ownership of `data`, a leaked `KBox<Start<T>>`;
        // both strings are NUL-terminated and only read during the call.
        let task = unsafe {
            bindings::arepl_kthread_start(
                Some(thread_main::<T>),
                data,
                name.as_char_ptr(),
                instance.as_char_ptr(),
            )
        };
        if let Err(err) = kernel::error::from_err_ptr(task) {
            // SAFETY: the thread was not created, so `data` is still ours to free.
            drop(unsafe { KBox::from_raw(data.cast::<Start<T>>()) });
            return Err(err);
        }
        Ok(Self { task })
    }
}

impl Drop for KThread {
    fn drop(&mut self) {
        // SAFETY: `task` came from `arepl_kthread_start`, which holds a reference to the
        // task until this single call stops the thread and drops it.
        unsafe { bindings::arepl_kthread_stop(self.task) };
    }
}

/// Whether the current kernel thread has been asked to stop.
pub(crate) fn should_stop() -> bool {
    // SAFETY: only called from threads started by `KThread::spawn`.
    unsafe { bindings::arepl_kthread_should_stop() }
}

/// Entry point of threads started by [`KThread::spawn`].
///
/// # Safety
///
/// `data` must be a leaked `KBox<Start<T>>`, passed to exactly one thread.
unsafe extern "C" fn thread_main<T: Send + Sync + 'static>(data: *mut c_void) -> c_int {
    // SAFETY: `data` is the `KBox<Start<T>>` leaked by `spawn`, handed to this thread only.
    let start = unsafe { KBox::from_raw(data.cast::<Start<T>>()) };
    (start.body)(&start.ctx);
    drop(start);
    // `kthread_stop` must find the thread alive or pinned; park until it comes.
    // SAFETY: called from the kthread itself.
    unsafe { bindings::arepl_kthread_park_until_stopped() };
    0
}
