//! How the server's memory goes back to the system. mimalloc (the allocator `main`
//! installs) keeps freed memory for a while for reuse; left to its defaults, what a
//! flood took stayed after the flood (an INVITE flood's transactions, once their
//! timers ran: 35 MiB before, 110 MiB after, with nothing left in the core). Three
//! settings bring it back:
//!
//! - transparent huge pages off for the process ([`tune`]): mimalloc asks for them;
//!   a 2 MB page then stays whole while one object on it lives, and is cleared whole
//!   when first touched, inside the core's turn (idle server 76 MiB instead of 31;
//!   the REGISTER flood's legitimate p99 27 ms instead of 9);
//! - freed pages purged after 10 ms (mimalloc 2's default) instead of mimalloc 3's
//!   second ([`tune`]);
//! - once a minute ([`give_back`], from the driver) every thread of the two runtimes
//!   collects its heap when it next goes idle ([`on_thread_park`]): a page freed from
//!   another thread returns only when its own thread collects, and after a flood the
//!   threads that parsed its requests may allocate nothing for a long time.
//!
//! With mimalloc not the allocator (tests, benches), the calls reach its unused heap
//! and do nothing.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// mimalloc 3's `purge_delay` option (its place in `mi_option_e`; the crate names it
/// only for mimalloc 2) and its default there, checked before it is changed.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const MI_PURGE_DELAY_DEFAULT: std::ffi::c_long = 1000;

/// Bumped by [`give_back`]; each thread collects when it sees a new value.
static EPOCH: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static SEEN: Cell<u64> = const { Cell::new(0) };
}

/// Process-wide settings, first thing in `main`.
pub fn tune() {
    no_transparent_huge_pages();
    purge_freed_memory_soon();
}

#[allow(unsafe_code, reason = "prctl, which std does not wrap")]
fn no_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes an integer flag and touches no memory of ours.
    let r = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if r != 0 {
        // Kernels before 3.15: the server works the same, with more memory.
        eprintln!(
            "sipwasm: transparent huge pages left on: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// An operator's `MIMALLOC_PURGE_DELAY` (any value but the default) is left alone.
#[allow(unsafe_code, reason = "mi_option_get/mi_option_set, integers only")]
fn purge_freed_memory_soon() {
    // SAFETY: mimalloc's option calls take and return integers; the option index is
    // checked to hold purge_delay's default before it is set.
    unsafe {
        if libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) == MI_PURGE_DELAY_DEFAULT {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10);
        }
    }
}

/// Asks every runtime thread to collect its heap when it next parks, and collects this
/// one's now.
pub fn give_back() {
    EPOCH.fetch_add(1, Ordering::Relaxed);
    on_thread_park();
}

/// The runtimes' park hook: collects this thread's heap once per [`give_back`]. An
/// atomic load when there is nothing to do.
pub fn on_thread_park() {
    let epoch = EPOCH.load(Ordering::Relaxed);
    if SEEN.with(Cell::get) == epoch {
        return;
    }
    SEEN.with(|s| s.set(epoch));
    collect();
}

/// Gives the C allocator's free memory back (glibc's `malloc_trim`): SQLite
/// allocates there, not on mimalloc.
#[allow(unsafe_code, reason = "malloc_trim, which std does not wrap")]
pub fn trim_c_heap() {
    // SAFETY: malloc_trim takes a size and touches only the C allocator's own free
    // lists.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
}

#[allow(unsafe_code, reason = "mi_collect: a flag, no memory of ours")]
fn collect() {
    // SAFETY: mi_collect walks mimalloc's own heap and arenas only.
    unsafe { libmimalloc_sys::mi_collect(true) };
}
