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
//!
//! A fourth: blocks over 64 KiB are not mimalloc's ([`Allocator`]). mimalloc keeps
//! blocks of 84–512 KiB in pages of 4 MiB and a page stays whole while one block on it
//! lives: a table that a flood grew, reallocated once after it while its old copies
//! were freed around it, kept such a page in memory for good (the census of mimalloc's
//! pages two minutes after the INVITE flood: four pages of 2.3–4 MB, each held by one
//! live table). Blocks that large are few and long-lived (tables, socket buffers), so
//! each gets its own mapping, given back whole when it is freed.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

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

/// Blocks larger than this get their own mapping (mimalloc's medium pages, 512 KiB,
/// hold the blocks below).
const OWN_MAPPING_ABOVE: usize = 64 * 1024;

/// At most this many blocks have their own mapping at once; past it, mimalloc takes
/// them. Each mapping is one of the kernel's `vm.max_map_count` (65,530 by default),
/// which the runtimes' stacks and wasmtime's pools need too.
const MAX_OWN_MAPPINGS: usize = 16_384;

/// Blocks that have their own mapping now.
static OWN_MAPPINGS: AtomicUsize = AtomicUsize::new(0);

/// The server's allocator: mimalloc, with blocks over 64 KiB in mappings
/// of their own (see the module's notes).
#[derive(Debug, Default, Clone, Copy)]
pub struct Allocator;

/// Blocks mapped on their own now (for the memory report).
pub fn own_mappings() -> usize {
    OWN_MAPPINGS.load(Ordering::Relaxed)
}

fn wants_own_mapping(layout: Layout) -> bool {
    cfg!(target_os = "linux") && layout.size() > OWN_MAPPING_ABOVE && layout.align() <= 4096
}

fn mapping_len(size: usize) -> usize {
    size.next_multiple_of(4096)
}

/// A fresh zeroed mapping of `size` bytes, or `None` (over [`MAX_OWN_MAPPINGS`], or the
/// kernel refused).
#[allow(unsafe_code, reason = "mmap")]
fn map(size: usize) -> Option<*mut u8> {
    if OWN_MAPPINGS.fetch_add(1, Ordering::Relaxed) >= MAX_OWN_MAPPINGS {
        OWN_MAPPINGS.fetch_sub(1, Ordering::Relaxed);
        return None;
    }
    // SAFETY: an anonymous private mapping at an address the kernel picks touches no
    // existing memory.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            mapping_len(size),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        OWN_MAPPINGS.fetch_sub(1, Ordering::Relaxed);
        return None;
    }
    Some(p.cast())
}

/// Whether a block of a size that wants its own mapping got one: past
/// [`MAX_OWN_MAPPINGS`] it went to mimalloc, whose page map knows its blocks.
#[allow(
    unsafe_code,
    reason = "mi_is_in_heap_region reads mimalloc's page map only"
)]
fn is_own_mapping(ptr: *mut u8) -> bool {
    // SAFETY: the call only looks the address up.
    !unsafe { libmimalloc_sys::mi_is_in_heap_region(ptr.cast()) }
}

#[allow(unsafe_code, reason = "munmap of a mapping made by map")]
fn unmap(ptr: *mut u8, size: usize) {
    // SAFETY: ptr and size are those of a mapping made by `map` (or grown by mremap),
    // which the caller gives up.
    unsafe { libc::munmap(ptr.cast(), mapping_len(size)) };
    OWN_MAPPINGS.fetch_sub(1, Ordering::Relaxed);
}

// SAFETY: every block comes from mimalloc or from `map`, and goes back to where it came
// from: a block that wants its own mapping and is not in mimalloc's page map is one.
#[allow(unsafe_code, reason = "the global allocator")]
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if wants_own_mapping(layout)
            && let Some(p) = map(layout.size())
        {
            return p;
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if wants_own_mapping(layout)
            && let Some(p) = map(layout.size())
        {
            return p; // anonymous mappings are zeroed
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if wants_own_mapping(layout) && is_own_mapping(ptr) {
            unmap(ptr, layout.size());
        } else {
            // SAFETY: a block of mimalloc's, with its layout.
            unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY (all of it): the caller guarantees `layout` is the block's and that
        // `new_size`, rounded to its alignment, does not overflow.
        unsafe {
            let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
            let old_own = wants_own_mapping(layout) && is_own_mapping(ptr);
            if old_own && wants_own_mapping(new_layout) {
                let p = libc::mremap(
                    ptr.cast(),
                    mapping_len(layout.size()),
                    mapping_len(new_size),
                    libc::MREMAP_MAYMOVE,
                );
                return if p == libc::MAP_FAILED {
                    std::ptr::null_mut()
                } else {
                    p.cast()
                };
            }
            if !old_own && !wants_own_mapping(new_layout) {
                return mimalloc::MiMalloc.realloc(ptr, layout, new_size);
            }
            // Between the two: a new block, the bytes both hold copied, the old freed.
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `ptr` starts a mapping of its own in /proc/self/maps.
    fn starts_a_mapping(ptr: *mut u8) -> bool {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let addr = format!("{:x}-", ptr as usize);
        maps.lines().any(|l| l.starts_with(&addr))
    }

    fn mapped(ptr: *mut u8) -> bool {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let p = ptr as usize;
        maps.lines().any(|l| {
            let range = l.split(' ').next().unwrap();
            let (a, b) = range.split_once('-').unwrap();
            let (a, b) = (
                usize::from_str_radix(a, 16).unwrap(),
                usize::from_str_radix(b, 16).unwrap(),
            );
            a <= p && p < b
        })
    }

    #[test]
    #[allow(unsafe_code, reason = "calls the allocator directly")]
    fn a_large_block_has_its_own_mapping_and_gives_it_back_when_freed() {
        let big = Layout::from_size_align(300 * 1024, 8).unwrap();
        // SAFETY: each block is freed once with the layout it was made with.
        unsafe {
            let p = Allocator.alloc_zeroed(big);
            assert!(!p.is_null());
            assert!(
                is_own_mapping(p),
                "a 300 KiB block is outside mimalloc's pages"
            );
            assert!(mapped(p));
            assert_eq!(*p.add(big.size() - 1), 0, "zeroed");
            Allocator.dealloc(p, big);
            assert!(!mapped(p), "its memory went back to the system with it");

            let small = Layout::from_size_align(1000, 8).unwrap();
            let q = Allocator.alloc(small);
            assert!(!is_own_mapping(q), "small blocks stay mimalloc's");
            Allocator.dealloc(q, small);
        }
    }

    #[test]
    #[allow(unsafe_code, reason = "calls the allocator directly")]
    fn growing_and_shrinking_across_the_threshold_keeps_the_bytes() {
        let small = Layout::from_size_align(40 * 1024, 8).unwrap();
        // SAFETY: each block is used within its size and freed once with its layout.
        unsafe {
            let p = Allocator.alloc(small);
            for i in 0..small.size() {
                *p.add(i) = (i % 251) as u8;
            }
            // mimalloc → own mapping
            let q = Allocator.realloc(p, small, 200 * 1024);
            assert!(is_own_mapping(q) && starts_a_mapping(q));
            assert!((0..small.size()).all(|i| *q.add(i) == (i % 251) as u8));
            for i in small.size()..200 * 1024 {
                *q.add(i) = (i % 13) as u8;
            }
            // own mapping → a larger one (mremap)
            let mid = Layout::from_size_align(200 * 1024, 8).unwrap();
            let r = Allocator.realloc(q, mid, 1024 * 1024);
            assert!(is_own_mapping(r));
            assert!((0..small.size()).all(|i| *r.add(i) == (i % 251) as u8));
            assert!((small.size()..mid.size()).all(|i| *r.add(i) == (i % 13) as u8));
            // own mapping → mimalloc
            let large = Layout::from_size_align(1024 * 1024, 8).unwrap();
            let s = Allocator.realloc(r, large, 1000);
            assert!(!is_own_mapping(s));
            assert!(!mapped(r) || r == s, "the mapping was given back");
            assert!((0..1000).all(|i| *s.add(i) == (i % 251) as u8));
            Allocator.dealloc(s, Layout::from_size_align(1000, 8).unwrap());
        }
    }
}
