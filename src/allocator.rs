//! The process's allocator: mimalloc for small blocks, the system allocator (glibc) for large
//! ones.
//!
//! The request path allocates and frees many small blocks per request (hyper's and h2's
//! frames and tasks, header maps, the upstream request); mimalloc's thread-local free lists
//! serve those for 4-17% less CPU per request than glibc's bins (docs/performance.md). The
//! revocation dictionary is the opposite: a few very large tables that double as it grows,
//! where mimalloc kept the freed tables resident (104 B per entry at a million entries
//! against glibc's 54 B, over the 64 B budget), while glibc hands an `mmap`-ed table back to
//! the kernel the moment it is freed. So each block goes by its size: below [`LARGE`] to
//! mimalloc, from it up to the system allocator.
//!
//! `GlobalAlloc` passes the block's layout back on `dealloc` and `realloc` (the same size it
//! was allocated with), so the owner of every block is known from its size alone, with no
//! header and no lookup. A `realloc` across the boundary moves the block from one allocator
//! to the other.

use std::alloc::{GlobalAlloc, Layout, System};

use mimalloc::MiMalloc;

/// Blocks of this many bytes or more go to the system allocator. glibc serves blocks from
/// 128 KiB up (its default `mmap` threshold) with their own mapping, which a `free` unmaps;
/// smaller "large" blocks are rare (a few buffers per connection) and cheap either way.
pub const LARGE: usize = 64 * 1024;

/// The global allocator of the `portcullis` binary (and of the examples that measure it).
pub struct SplitAllocator;

fn is_large(size: usize) -> bool {
    size >= LARGE
}

// GlobalAlloc is an unsafe trait: its methods hand out raw memory.
#[allow(unsafe_code)]
// SAFETY (the whole impl): every block is allocated and freed by the allocator its size
// selects, and a block's size never changes except through `realloc` below, which moves the
// block whenever the new size selects the other allocator. Both allocators honour `Layout`'s
// alignment; the caller's contract (non-zero size, the layout it allocated with) is passed on
// unchanged.
unsafe impl GlobalAlloc for SplitAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_large(layout.size()) {
            unsafe { System.alloc(layout) }
        } else {
            unsafe { MiMalloc.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_large(layout.size()) {
            unsafe { System.alloc_zeroed(layout) }
        } else {
            unsafe { MiMalloc.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_large(layout.size()) {
            unsafe { System.dealloc(ptr, layout) }
        } else {
            unsafe { MiMalloc.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match (is_large(layout.size()), is_large(new_size)) {
            (true, true) => unsafe { System.realloc(ptr, layout, new_size) },
            (false, false) => unsafe { MiMalloc.realloc(ptr, layout, new_size) },
            _ => {
                // Across the boundary: a new block from the other allocator, the contents
                // copied, the old block freed by its own.
                let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
                    return std::ptr::null_mut();
                };
                let new = unsafe { self.alloc(new_layout) };
                if !new.is_null() {
                    unsafe {
                        std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                }
                new
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(unsafe_code)]
    fn round_trip(from: usize, to: usize) {
        let a = SplitAllocator;
        let layout = Layout::from_size_align(from, 16).unwrap();
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            for i in 0..from {
                *p.add(i) = (i % 251) as u8;
            }
            let q = a.realloc(p, layout, to);
            assert!(!q.is_null());
            assert_eq!(q as usize % 16, 0, "alignment kept");
            for i in 0..from.min(to) {
                assert_eq!(*q.add(i), (i % 251) as u8, "byte {i} of {from} -> {to}");
            }
            a.dealloc(q, Layout::from_size_align(to, 16).unwrap());
        }
    }

    #[test]
    fn realloc_keeps_contents_within_and_across_the_boundary() {
        round_trip(100, 200); // small to small
        round_trip(LARGE - 8, LARGE + 8); // small to large
        round_trip(LARGE + 8, LARGE - 8); // large to small
        round_trip(LARGE * 2, LARGE * 4); // large to large
    }

    #[test]
    fn zeroed_blocks_are_zero_on_both_sides() {
        let a = SplitAllocator;
        for size in [64, LARGE * 2] {
            let layout = Layout::from_size_align(size, 8).unwrap();
            #[allow(unsafe_code)]
            unsafe {
                let p = a.alloc_zeroed(layout);
                assert!(!p.is_null());
                assert!((0..size).all(|i| *p.add(i) == 0), "size {size}");
                a.dealloc(p, layout);
            }
        }
    }
}
