// SPDX-License-Identifier: GPL-2.0

//! Safe device-mapper target abstraction: registration, the C callbacks, table devices
//! and the status buffer. All of the module's device-mapper `unsafe` lives here and
//! in `bio` (the bios the callbacks pass).

use kernel::ffi::{c_char, c_int, c_uint, c_void};

use core::fmt;
use core::marker::PhantomData;

use kernel::prelude::*;
use kernel::str::CString;

use crate::bindings;
use crate::bio::Bio;

/// Most table arguments a target accepts; more is refused before parsing.
const MAX_TABLE_ARGS: usize = 16;

/// A device-mapper target type implemented in Rust.
pub(crate) trait Target: Sized + Send + Sync {
    /// Target name as used in table lines.
    const NAME: &'static CStr;
    /// Target version reported by `dmsetup targets`.
    const VERSION: [u32; 3];

    /// What the target remembers about one bio between `map` and `end_io`; it lives in
    /// device-mapper's per-bio data.
    type PerBio: Send;

    /// Builds a target instance from the table line's arguments.
    fn construct(ctx: &mut ConstructCtx<'_>, args: &[&str]) -> Result<KBox<Self>, ConstructError>;

    /// Maps one bio: the target redirects it and returns what it needs for `end_io`,
    /// or takes it over ([`Bio::defer`]) and returns `None`.
    fn map(&self, bio: &mut Bio<'_>) -> Option<Self::PerBio>;

    /// Runs when the mapped bio completed, possibly in interrupt context; `failed` says
    /// whether the lower device returned an error.
    fn end_io(&self, per_bio: Self::PerBio, failed: bool);

    /// Writes `dmsetup status` output.
    fn status(&self, out: &mut StatusWriter<'_>);

    /// Handles `dmsetup message <dev> 0 <args>`; the error text is logged.
    fn message(&self, args: &[&str]) -> Result<(), &'static str>;

    /// Writes the canonical table line shown by `dmsetup table`.
    fn table(&self, out: &mut StatusWriter<'_>);

    /// The device whose queue limits this target inherits.
    fn data_device(&self) -> &DmDevice;

    /// Runs when the table becomes live (and on every later resume): a table is
    /// constructed while another one may still serve the device.
    fn resume(&self) {}
}

/// Why a constructor refused a table line.
pub(crate) struct ConstructError {
    /// Short text stored in `ti->error`; device-mapper logs it.
    pub(crate) summary: &'static CStr,
    /// Error code returned to `dmsetup`.
    pub(crate) code: Error,
}

impl ConstructError {
    /// An `EINVAL` refusal; `summary` must end with a NUL.
    pub(crate) fn invalid(summary: &'static str) -> Self {
        Self {
            summary: CStr::from_bytes_with_nul(summary.as_bytes())
                .unwrap_or(kernel::c_str!("invalid table line")),
            code: EINVAL,
        }
    }
}

/// A registered target type; unregistered on drop.
pub(crate) struct Registration<T: Target> {
    target_type: KBox<bindings::target_type>,
    _target: PhantomData<T>,
}

// SAFETY: device-mapper only reads the registered `target_type` and serialises
// registration changes itself; the registration holds no thread-bound state.
unsafe impl<T: Target> Send for Registration<T> {}
// SAFETY: `&Registration` allows no access to the `target_type` at all.
unsafe impl<T: Target> Sync for Registration<T> {}

impl<T: Target> Registration<T> {
    /// Registers target type `T` with device-mapper on behalf of `module`.
    pub(crate) fn new(module: &'static ThisModule) -> Result<Self> {
        let mut target_type = KBox::new(
            bindings::target_type {
                name: T::NAME.as_char_ptr(),
                module: module.as_ptr().cast(),
                version: T::VERSION,
                ctr: Some(construct_callback::<T>),
                dtr: Some(destroy_callback::<T>),
                map: Some(map_callback::<T>),
                end_io: Some(end_io_callback::<T>),
                status: Some(status_callback::<T>),
                message: Some(message_callback::<T>),
                iterate_devices: Some(iterate_devices_callback::<T>),
                resume: Some(resume_callback::<T>),
                io_hints: Some(bindings::arepl_dm_io_hints),
                ..Default::default()
            },
            GFP_KERNEL,
        )?;
        // SAFETY: `target_type` is fully initialised and heap-allocated, so its address
        // stays fixed until `drop` unregisters it; `name` points to a static string and
        // `module` is this module, which cannot unload while the type is registered.
        kernel::error::to_result(unsafe { bindings::dm_register_target(&mut *target_type) })?;
        Ok(Self {
            target_type,
            _target: PhantomData,
        })
    }
}

impl<T: Target> Drop for Registration<T> {
    fn drop(&mut self) {
        // SAFETY: the type was registered in `new`; device-mapper holds a module
        // reference per table using it, so no instance is left when the module exits.
        unsafe { bindings::dm_unregister_target(&mut *self.target_type) };
    }
}

/// The target being constructed, as seen by [`Target::construct`].
pub(crate) struct ConstructCtx<'a> {
    ti: *mut bindings::dm_target,
    _callback: PhantomData<&'a mut bindings::dm_target>,
}

impl ConstructCtx<'_> {
    /// Opens a device named in the table line (a path or `major:minor`) with the
    /// table's access mode. The device is released when the result is dropped.
    pub(crate) fn get_device(&mut self, path: &str) -> Result<DmDevice> {
        let path = CString::try_from_fmt(format_args!("{}", path))?;
        let mut dev: *mut bindings::dm_dev = core::ptr::null_mut();
        // SAFETY: `self.ti` is the target under construction (type invariant of the
        // context), `path` is a NUL-terminated string and `dev` a valid out pointer.
        let ret = unsafe {
            bindings::dm_get_device(
                self.ti,
                path.as_char_ptr(),
                bindings::dm_table_get_mode((*self.ti).table),
                &mut dev,
            )
        };
        kernel::error::to_result(ret)?;
        Ok(DmDevice { ti: self.ti, dev })
    }

    /// Copies the `dmsetup` name of the device being built into `buf` and returns it,
    /// or `None` if it does not fit or is not UTF-8.
    pub(crate) fn device_name<'b>(&self, buf: &'b mut [u8]) -> Option<&'b str> {
        // SAFETY: `ti` belongs to a table of a live mapped device for the whole call, and
        // `buf` is writable for its length.
        let ret = unsafe { bindings::arepl_dm_device_name(self.ti, buf.as_mut_ptr(), buf.len()) };
        if ret != 0 {
            return None;
        }
        let end = buf.iter().position(|&b| b == 0)?;
        core::str::from_utf8(&buf[..end]).ok()
    }

    /// Whether this is the device's first table: device-mapper adds the disk, with
    /// this table's limits, only once it is loaded.
    pub(crate) fn first_table(&self) -> bool {
        // SAFETY: `ti` belongs to a table of a live mapped device for the whole call;
        // the helper only reads the device's disk.
        !unsafe { bindings::arepl_dm_disk_added(self.ti) }
    }

    /// Length of the target in 512-byte sectors.
    pub(crate) fn len_sectors(&self) -> u64 {
        // SAFETY: `self.ti` is valid for the whole constructor call.
        unsafe { (*self.ti).len }
    }

    /// Makes device-mapper split bios larger than `sectors`.
    pub(crate) fn set_max_io_sectors(&mut self, sectors: u32) {
        // SAFETY: `self.ti` is the target under construction, valid for the whole call.
        unsafe { bindings::arepl_dm_set_max_io_len(self.ti, sectors) };
    }

    /// Lets device-mapper send this many flush and write-zeroes bios per request
    /// (linear targets use 1 of each).
    pub(crate) fn set_passdown_bios(&mut self, count: u32) {
        // SAFETY: the constructor owns `ti`'s target-specific fields until it returns.
        unsafe {
            (*self.ti).num_flush_bios = count;
            (*self.ti).num_write_zeroes_bios = count;
            // A discard leaves the local device's content undefined (many devices keep
            // the old bytes, others read zeroes), so no replica could be made equal to
            // it; secure erase is not replicated either. Neither is offered at all.
            (*self.ti).num_discard_bios = 0;
            (*self.ti).num_secure_erase_bios = 0;
        }
    }
}

/// A device held by a target's table (`struct dm_dev`), released on drop.
pub(crate) struct DmDevice {
    ti: *mut bindings::dm_target,
    dev: *mut bindings::dm_dev,
}

// SAFETY: a `dm_dev` is reference counted by device-mapper and is not changed while a
// table holds it; `dm_put_device` may be called from any thread.
unsafe impl Send for DmDevice {}
// SAFETY: shared access only reads immutable fields (`bdev`, `name`).
unsafe impl Sync for DmDevice {}

impl DmDevice {
    /// The underlying block device, for bio remapping.
    pub(crate) fn bdev(&self) -> *mut bindings::block_device {
        // SAFETY: `self.dev` stays valid until `drop` puts it.
        unsafe { (*self.dev).bdev }
    }

    /// The device's `major:minor` name.
    pub(crate) fn name(&self) -> &str {
        // SAFETY: `self.dev` stays valid until `drop`; `name` is a fixed array that
        // device-mapper fills with a NUL-terminated string and never changes after.
        let bytes: &[u8] = unsafe { &(*self.dev).name };
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        core::str::from_utf8(&bytes[..end]).unwrap_or("?")
    }
}

impl Drop for DmDevice {
    fn drop(&mut self) {
        // SAFETY: the device was obtained from `dm_get_device` for `self.ti`, and the
        // target instance owning this device is dropped no later than its destructor
        // callback, while `ti` is still valid.
        unsafe { bindings::dm_put_device(self.ti, self.dev) };
    }
}

/// Status output buffer with `scnprintf` semantics: output past the end is cut, and the
/// text always ends with a NUL, so device-mapper sees a full buffer and retries larger.
pub(crate) struct StatusWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> StatusWriter<'a> {
    fn new(buf: &'a mut [u8]) -> Self {
        if let Some(first) = buf.first_mut() {
            *first = 0;
        }
        Self { buf, len: 0 }
    }
}

impl fmt::Write for StatusWriter<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        // Keep one byte for the terminating NUL.
        let room = self.buf.len().saturating_sub(self.len + 1);
        let take = text.len().min(room);
        self.buf[self.len..self.len + take].copy_from_slice(&text.as_bytes()[..take]);
        self.len += take;
        if let Some(end) = self.buf.get_mut(self.len) {
            *end = 0;
        }
        Ok(())
    }
}

/// Returns the target instance of `ti`.
///
/// # Safety
///
/// `ti` must be a target of type `T` whose constructor succeeded and whose destructor
/// has not run.
unsafe fn instance<'a, T: Target>(ti: *mut bindings::dm_target) -> &'a T {
    // SAFETY: per the contract, `private` holds the `KBox<T>` leaked by the constructor.
    unsafe { &*((*ti).private as *const T) }
}

/// Device-mapper's `ctr`: parses the table line and stores the instance in `private`.
///
/// # Safety
///
/// Called by device-mapper only, with a valid target and `argc` argument strings.
unsafe extern "C" fn construct_callback<T: Target>(
    ti: *mut bindings::dm_target,
    argc: c_uint,
    argv: *mut *mut c_char,
) -> c_int {
    let fail = |err: ConstructError| {
        // SAFETY: device-mapper passes a valid target; `summary` is a static string.
        unsafe { (*ti).error = err.summary.as_char_ptr() as *mut c_char };
        err.code.to_errno()
    };

    let argc = argc as usize;
    if argc > MAX_TABLE_ARGS {
        return fail(ConstructError::invalid("too many table arguments\0"));
    }
    let mut args = [""; MAX_TABLE_ARGS];
    for (i, arg) in args.iter_mut().take(argc).enumerate() {
        // SAFETY: device-mapper passes `argc` NUL-terminated strings in `argv`, alive
        // for the whole constructor call.
        let text = unsafe { CStr::from_char_ptr(*argv.add(i)) };
        match text.to_str() {
            Ok(text) => *arg = text,
            Err(_) => {
                return fail(ConstructError::invalid(
                    "table arguments must be UTF-8\0",
                ))
            }
        }
    }

    let mut ctx = ConstructCtx {
        ti,
        _callback: PhantomData,
    };
    match T::construct(&mut ctx, &args[..argc]) {
        Ok(target) => {
            // SAFETY: `ti` is valid; `private` and `per_io_data_size` belong to the target,
            // and accounting at submission suits deferred bios (`DeferredBio::submit`)
            // as much as remapped ones.
            unsafe {
                (*ti).private = KBox::into_raw(target).cast::<c_void>();
                (*ti).per_io_data_size = core::mem::size_of::<T::PerBio>() as c_uint;
                bindings::arepl_dm_set_accounts_remapped_io(ti);
            }
            0
        }
        Err(err) => fail(err),
    }
}

/// Device-mapper's `dtr`: drops the instance.
///
/// # Safety
///
/// Called by device-mapper only, once, for a target whose constructor succeeded.
unsafe extern "C" fn destroy_callback<T: Target>(ti: *mut bindings::dm_target) {
    // SAFETY: the destructor runs once, after a successful constructor stored a leaked
    // `KBox<T>` in `private`, and no callback of this target runs concurrently.
    drop(unsafe { KBox::from_raw((*ti).private.cast::<T>()) });
}

/// Device-mapper's `resume`.
///
/// # Safety
///
/// Called by device-mapper only, for a constructed target.
unsafe extern "C" fn resume_callback<T: Target>(ti: *mut bindings::dm_target) {
    // SAFETY: resume runs only between a successful constructor and the destructor,
    // which stored a leaked `KBox<T>` in `private`.
    unsafe { instance::<T>(ti) }.resume();
}

/// Device-mapper's `map`.
///
/// # Safety
///
/// Called by device-mapper only, for a constructed target and a bio it owns.
unsafe extern "C" fn map_callback<T: Target>(
    ti: *mut bindings::dm_target,
    bio: *mut bindings::bio,
) -> c_int {
    // SAFETY: map callbacks run only between a successful constructor and the destructor.
    let target = unsafe { instance::<T>(ti) };
    // SAFETY: `bio` is the bio being mapped and the wrapper dies with this callback;
    // `ti` is valid, so reading `begin` is sound.
    let mut bio = unsafe { Bio::from_raw(bio, (*ti).begin) };
    let per_bio = target.map(&mut bio);
    if bio.is_deferred() {
        // The target submits it later, with its per-bio value.
        return bindings::DM_MAPIO_SUBMITTED as c_int;
    }
    let Some(per_bio) = per_bio else {
        // Neither mapped nor taken over: a target bug; the bio fails rather than hangs.
        return bindings::DM_MAPIO_KILL as c_int;
    };
    // SAFETY: device-mapper reserved `per_io_data_size` = size_of::<T::PerBio>() bytes,
    // suitably aligned, for this bio; `end_io_callback` moves the value out again.
    unsafe { bio.per_bio_data::<T::PerBio>().write(per_bio) };
    bindings::DM_MAPIO_REMAPPED as c_int
}

/// Device-mapper's `end_io`: hands the per-bio value back to the target.
///
/// # Safety
///
/// Called by device-mapper only, once per bio that `map_callback` mapped.
unsafe extern "C" fn end_io_callback<T: Target>(
    ti: *mut bindings::dm_target,
    bio: *mut bindings::bio,
    error: *mut bindings::blk_status_t,
) -> c_int {
    // SAFETY: end_io runs only while the target is constructed.
    let target = unsafe { instance::<T>(ti) };
    // SAFETY: `bio` is the completing bio; `ti` is valid.
    let bio = unsafe { Bio::from_raw(bio, (*ti).begin) };
    // SAFETY: `map_callback` wrote a `T::PerBio` there and nothing read it since.
    let per_bio = unsafe { bio.per_bio_data::<T::PerBio>().read() };
    // SAFETY: device-mapper passes a valid status pointer.
    let failed = unsafe { *error } != 0;
    target.end_io(per_bio, failed);
    bindings::DM_ENDIO_DONE as c_int
}

/// Device-mapper's `status`: `dmsetup status` and `dmsetup table` output.
///
/// # Safety
///
/// Called by device-mapper only, for a constructed target and a `maxlen`-byte buffer.
unsafe extern "C" fn status_callback<T: Target>(
    ti: *mut bindings::dm_target,
    status_type: bindings::status_type_t,
    _status_flags: c_uint,
    result: *mut c_char,
    maxlen: c_uint,
) {
    if result.is_null() || maxlen == 0 {
        return;
    }
    // SAFETY: status callbacks run only while the target is constructed.
    let target = unsafe { instance::<T>(ti) };
    // SAFETY: device-mapper passes a writable buffer of `maxlen` bytes that nothing
    // else touches during the call.
    let buf = unsafe { core::slice::from_raw_parts_mut(result.cast::<u8>(), maxlen as usize) };
    let mut out = StatusWriter::new(buf);
    match status_type {
        bindings::status_type_t_STATUSTYPE_INFO => target.status(&mut out),
        bindings::status_type_t_STATUSTYPE_TABLE => target.table(&mut out),
        _ => {} // IMA measurement: nothing beyond the table is measured.
    }
}

/// Device-mapper's `message`: `dmsetup message <dev> 0 ...`.
///
/// # Safety
///
/// Called by device-mapper only, for a constructed target and `argc` argument strings.
unsafe extern "C" fn message_callback<T: Target>(
    ti: *mut bindings::dm_target,
    argc: c_uint,
    argv: *mut *mut c_char,
    _result: *mut c_char,
    _maxlen: c_uint,
) -> c_int {
    // SAFETY: messages are delivered only to constructed targets.
    let target = unsafe { instance::<T>(ti) };
    let mut args = [""; MAX_TABLE_ARGS];
    let argc = (argc as usize).min(MAX_TABLE_ARGS);
    for (i, arg) in args.iter_mut().take(argc).enumerate() {
        // SAFETY: device-mapper passes `argc` NUL-terminated strings, alive for the call.
        *arg = unsafe { CStr::from_char_ptr(*argv.add(i)) }
            .to_str()
            .unwrap_or("");
    }
    match target.message(&args[..argc]) {
        Ok(()) => 0,
        Err(reason) => {
            pr_err!("message refused: {}\n", reason);
            EINVAL.to_errno()
        }
    }
}

/// Device-mapper's `iterate_devices`: reports the data device for queue limits.
///
/// # Safety
///
/// Called by device-mapper only, for a constructed target.
unsafe extern "C" fn iterate_devices_callback<T: Target>(
    ti: *mut bindings::dm_target,
    callout: bindings::iterate_devices_callout_fn,
    data: *mut c_void,
) -> c_int {
    let Some(callout) = callout else {
        return 0;
    };
    // SAFETY: iterate_devices runs only while the target is constructed.
    let target = unsafe { instance::<T>(ti) };
    let dev = target.data_device();
    // SAFETY: the callout and `data` come from device-mapper as a pair; the device is
    // held by this target's table, and it covers the whole target from sector 0.
    unsafe { callout(ti, dev.dev, 0, (*ti).len, data) }
}
