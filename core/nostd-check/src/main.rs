//! A `#![no_std]` binary that uses the core. See Cargo.toml for why it exists.
#![no_std]
#![no_main]

use core::panic::PanicInfo;

#[panic_handler]
fn panic(_: &PanicInfo<'_>) -> ! {
    loop {}
}

/// Touch the core's API so that it is really part of this crate graph.
#[no_mangle]
pub extern "C" fn weft_mesh_nostd_check() -> usize {
    let id = weft_mesh::NodeId::from_bytes([0; 32]);
    weft_mesh::frame::HEADER_LEN + id.as_bytes().len()
}

/// The core needs `alloc`; a no_std binary must name an allocator. This one is never
/// run (CI only type-checks the crate) and always reports allocation failure.
struct NoAlloc;

// SAFETY: returning null is the documented way for `alloc` to report failure, and
// `dealloc` can only be called with pointers `alloc` returned, of which there are none.
unsafe impl core::alloc::GlobalAlloc for NoAlloc {
    unsafe fn alloc(&self, _layout: core::alloc::Layout) -> *mut u8 {
        core::ptr::null_mut()
    }
    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: core::alloc::Layout) {}
}

#[global_allocator]
static ALLOCATOR: NoAlloc = NoAlloc;
