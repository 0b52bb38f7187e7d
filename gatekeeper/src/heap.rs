//! How the gatekeeper's processes use glibc's heap: frames come and go by the thousand a
//! second, so their memory is kept for the next ones instead of handed back to the kernel.

/// Allocations up to this size (every frame, every chunk) come from the heap, not a mapping
/// of their own; larger ones (a commit's manifest and chunk table, read back) are mapped and
/// handed back when freed. At 4 MiB, the heap kept what those left behind, and the flood
/// test's peak rose by 3-5 MiB.
const HEAP_UP_TO_BYTES: i32 = (1 << 20) + (64 << 10);
const _: () = assert!(vault_core::push::relay::MAX_RELAY_FRAME < HEAP_UP_TO_BYTES as usize);
/// Freed heap up to this much is kept for the next frames instead of handed back.
const KEEP_FREED_BYTES: i32 = 128 << 20;
/// At most this many heaps (arenas): glibc gives threads heaps of their own, up to 8 a CPU, and
/// what one keeps the others cannot use. The daemon's sessions run on two runtime threads and
/// hash on blocking ones; with a heap each, its peak with 8 concurrent pushes was 43-47 MiB,
/// with two 38 MiB (28-31 MiB with glibc's defaults, which hand freed heap back).
const HEAPS_AT_MOST: i32 = 2;

/// Keeps the memory of frames for the next ones. With glibc's defaults, freed heap was handed
/// back and faulted in again, page by page, for every few frames:
/// - in the session worker, which copies each frame (up to 1 MiB) into a relay message of its
///   own and frees it once the daemon has it: 85 000 page faults for a 2 GiB push (2 300 with
///   this), about a third of its kernel time;
/// - in the daemon, whose sessions' frames are decoded on one thread, hashed on another and
///   freed on a third ([`crate::push_server`]): 0.4-0.6 s more CPU for the same push, most of
///   it page faults, until this was set there too.
///
/// What is kept was in use before, but a heap keeps it for its own threads: see
/// [`HEAPS_AT_MOST`]. Memory stays bounded by the relay credit of the sessions (and, in the
/// worker, its address-space limit).
/// Called while the process has one thread, before any runtime starts.
pub fn keep_freed_heap() {
    // SAFETY: mallopt only sets the allocator's thresholds; it is called while the process has
    // one thread, and a refused setting changes nothing.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, HEAP_UP_TO_BYTES);
        libc::mallopt(libc::M_TRIM_THRESHOLD, KEEP_FREED_BYTES);
        libc::mallopt(libc::M_ARENA_MAX, HEAPS_AT_MOST);
    }
}
