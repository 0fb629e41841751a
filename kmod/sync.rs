// SPDX-License-Identifier: GPL-2.0

//! An interrupt-safe spinlock for the kernel crate's generic `Lock`.
//!
//! Bio completions (`end_io`) can run in hard interrupt context, so state they share
//! with process context needs `spin_lock_irqsave`, which this kernel's Rust `SpinLock`
//! does not offer.

use kernel::ffi::c_ulong;
use kernel::sync::lock::{Backend, Lock};

use crate::bindings;

/// A spinlock taken with interrupts disabled; see [`IrqSpinLockBackend`].
pub(crate) type IrqSpinLock<T> = Lock<T, IrqSpinLockBackend>;

/// Creates an [`IrqSpinLock`] initialiser with a static lock class.
#[macro_export]
macro_rules! new_irq_spinlock {
    ($inner:expr, $name:literal) => {
        $crate::sync::IrqSpinLock::new(
            $inner,
            kernel::c_str!($name),
            kernel::static_lock_class!(),
        )
    };
}

/// `spinlock_t` with `spin_lock_irqsave`/`spin_unlock_irqrestore`.
pub(crate) struct IrqSpinLockBackend;

// SAFETY: `lock` and `unlock` are `spin_lock_irqsave` and `spin_unlock_irqrestore` on the
// same initialised `spinlock_t`, which gives mutual exclusion; the saved interrupt flags
// travel in the guard state from `lock` to the matching `unlock`.
unsafe impl Backend for IrqSpinLockBackend {
    type State = kernel::bindings::spinlock_t;
    type GuardState = c_ulong;

    unsafe fn init(
        ptr: *mut Self::State,
        name: *const kernel::ffi::c_char,
        key: *mut kernel::bindings::lock_class_key,
    ) {
        // SAFETY: the caller passes a valid pointer to uninitialised lock memory and
        // static `name` and `key`, as `__spin_lock_init` requires.
        unsafe { kernel::bindings::__spin_lock_init(ptr, name, key) }
    }

    unsafe fn lock(ptr: *mut Self::State) -> Self::GuardState {
        // SAFETY: the caller guarantees `init` ran on `ptr`.
        unsafe { bindings::arepl_spin_lock_irqsave(ptr.cast()) }
    }

    unsafe fn unlock(ptr: *mut Self::State, flags: &Self::GuardState) {
        // SAFETY: the caller owns the lock, taken by `lock` which returned `flags`.
        unsafe { bindings::arepl_spin_unlock_irqrestore(ptr.cast(), *flags) }
    }
}
