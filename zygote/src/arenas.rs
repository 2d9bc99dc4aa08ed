//! Where the zygote's Python objects live: obmalloc's arenas carved out of 2 MiB-aligned
//! chunks, so that zygote.py can make them transparent huge pages once its imports are done.
//!
//! Every request forks the zygote, and the fork copies a page table entry for each of its
//! anonymous pages; the child's exit takes them down again, and its copy-on-write faults map
//! its own copies. On 4 KiB pages that is one entry, one reference count and one rmap update a
//! page, ~4,400 pages for a numpy zygote. A 2 MiB huge page is one entry at fork and one at
//! exit, and where a child writes into it the kernel splits only the child's mapping, counting
//! the 512 pages as one folio. CPython 3.11 maps each 1 MiB arena on its own, at whatever
//! address mmap gives, so few of them line up with a 2 MiB boundary; these do.
//!
//! Installed by zygote.py before it imports anything of its own (`PyObject_SetArenaAllocator`
//! with `faas_arenas_allocator()`, after `PyObject_GetArenaAllocator` filled
//! `faas_arenas_previous()`): the arenas the interpreter made at its start stay where they are,
//! and are handed back to the previous allocator when CPython frees them.
//!
//! Only obmalloc's arenas (1 MiB on 64-bit CPython 3.10 and later) come from the chunks; other
//! users of the same hook (3.11's interpreter stack chunks, `_PyObject_VirtualAlloc`) get the
//! previous allocator at once. A thread state's stack chunks can be freed without the GIL, so
//! the chunks and the free list are behind a lock of their own.

use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, Ordering};

/// CPython's `PyObjectArenaAllocator`.
#[repr(C)]
pub struct ArenaAllocator {
    ctx: *mut c_void,
    alloc: Option<unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void>,
    free: Option<unsafe extern "C" fn(*mut c_void, *mut c_void, usize)>,
}

/// A huge page on x86-64 and aarch64 with 4 KiB pages.
const CHUNK: usize = 2 << 20;
/// obmalloc's arena (ARENA_SIZE, `1 << 20` where pointers are 64 bits).
const ARENA: usize = 1 << 20;
/// 512 MiB of arenas; past that, arenas come from the previous allocator.
const MAX_CHUNKS: usize = 256;
/// Freed arenas kept for reuse; past that, their pages go back but their addresses are not reused.
const MAX_FREE: usize = 64;

struct Arenas {
    previous: ArenaAllocator,
    ours: ArenaAllocator,
    chunks: [usize; MAX_CHUNKS],
    chunks_len: usize,
    /// The next arena's address in the last chunk, and the end of that chunk.
    next: usize,
    end: usize,
    free: [usize; MAX_FREE],
    free_len: usize,
}

struct Shared(UnsafeCell<Arenas>);

// SAFETY: `previous` is written once, before the allocator is installed, and only read after;
// `ours` is only read; the rest only under LOCK.
unsafe impl Sync for Shared {}

static LOCK: AtomicBool = AtomicBool::new(false);

/// Holds LOCK while it lives.
struct Locked;

impl Locked {
    fn take() -> Locked {
        while LOCK.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            core::hint::spin_loop();
        }
        Locked
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        LOCK.store(false, Ordering::Release);
    }
}

static ARENAS: Shared = Shared(UnsafeCell::new(Arenas {
    previous: ArenaAllocator { ctx: core::ptr::null_mut(), alloc: None, free: None },
    ours: ArenaAllocator { ctx: core::ptr::null_mut(), alloc: Some(alloc), free: Some(free) },
    chunks: [0; MAX_CHUNKS],
    chunks_len: 0,
    next: 0,
    end: 0,
    free: [0; MAX_FREE],
    free_len: 0,
}));

/// The struct for `PyObject_GetArenaAllocator` to fill with the allocator in use before ours.
#[no_mangle]
pub extern "C" fn faas_arenas_previous() -> *mut ArenaAllocator {
    // SAFETY: a field's address; nothing is read or written here.
    unsafe { &raw mut (*ARENAS.0.get()).previous }
}

/// Our allocator, for `PyObject_SetArenaAllocator` (which copies it), once `previous` is filled.
#[no_mangle]
pub extern "C" fn faas_arenas_allocator() -> *mut ArenaAllocator {
    // SAFETY: as above.
    unsafe { &raw mut (*ARENAS.0.get()).ours }
}

/// A fresh 2 MiB-aligned chunk: twice its size mapped, the unaligned ends unmapped.
fn map_chunk() -> Option<usize> {
    // SAFETY: a new private anonymous mapping; no memory of ours is touched.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            2 * CHUNK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    let start = p as usize;
    let aligned = start.checked_add(CHUNK - 1)? & !(CHUNK - 1);
    let head = aligned - start;
    let tail = CHUNK - head;
    if head > 0 {
        // SAFETY: the part of our own fresh mapping before the aligned chunk.
        unsafe { libc::munmap(p, head) };
    }
    if tail > 0 {
        // SAFETY: the part of our own fresh mapping after it.
        unsafe { libc::munmap((aligned + CHUNK) as *mut c_void, tail) };
    }
    Some(aligned)
}

unsafe extern "C" fn alloc(_ctx: *mut c_void, size: usize) -> *mut c_void {
    if size == ARENA {
        let _locked = Locked::take();
        // SAFETY: under LOCK (see `Shared`).
        let a = unsafe { &mut *ARENAS.0.get() };
        if a.free_len > 0 {
            a.free_len -= 1;
            return a.free[a.free_len] as *mut c_void;
        }
        if a.next == a.end && a.chunks_len < MAX_CHUNKS {
            if let Some(chunk) = map_chunk() {
                a.chunks[a.chunks_len] = chunk;
                a.chunks_len += 1;
                a.next = chunk;
                a.end = chunk + CHUNK;
            }
        }
        if a.next < a.end {
            let p = a.next;
            a.next += ARENA;
            return p as *mut c_void;
        }
    }
    // SAFETY: `previous` is only read once installed (see `Shared`).
    let previous = unsafe { &(*ARENAS.0.get()).previous };
    match previous.alloc {
        // SAFETY: CPython's previous allocator, called as CPython would.
        Some(f) => unsafe { f(previous.ctx, size) },
        None => core::ptr::null_mut(),
    }
}

unsafe extern "C" fn free(_ctx: *mut c_void, ptr: *mut c_void, size: usize) {
    if size == ARENA {
        let _locked = Locked::take();
        // SAFETY: under LOCK (see `Shared`).
        let a = unsafe { &mut *ARENAS.0.get() };
        let p = ptr as usize;
        if a.chunks.get(..a.chunks_len).is_some_and(|c| c.iter().any(|&c| p >= c && p < c + CHUNK)) {
            // Its pages go back to the kernel; the address is kept for the next arena.
            // SAFETY: an arena of ours that CPython no longer uses.
            unsafe { libc::madvise(ptr, size, libc::MADV_DONTNEED) };
            if a.free_len < MAX_FREE {
                a.free[a.free_len] = p;
                a.free_len += 1;
            }
            return;
        }
    }
    // SAFETY: `previous` is only read once installed (see `Shared`).
    let previous = unsafe { &(*ARENAS.0.get()).previous };
    if let Some(f) = previous.free {
        // SAFETY: memory the previous allocator made, handed back to it.
        unsafe { f(previous.ctx, ptr, size) };
    }
}
