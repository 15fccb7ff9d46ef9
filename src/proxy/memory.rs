//! Giving memory back. glibc's allocator keeps freed memory for reuse and, by default, raises its mmap
//! threshold to the largest block freed so far, so after one burst of large buffers every later one comes
//! from the heap and is never returned: RSS stays at the burst's peak. replscope fixes the threshold
//! (large buffers are mapped on their own and unmapped when freed) and trims the heap once buffers were
//! freed. Elsewhere than glibc these do nothing.
//!
//! The only `unsafe` in the crate (two calls into libc), allowed here and denied everywhere else.
#![allow(unsafe_code)]

/// Blocks at least this large are mapped on their own (and so returned to the system when freed).
const MMAP_THRESHOLD: i32 = 128 * 1024;

/// Sets the allocator up to return large blocks when they are freed. Call once, at start.
pub fn return_large_blocks() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before the runtime starts threads.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Returns the heap's free memory to the system.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the allocator's own locks; it is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}
