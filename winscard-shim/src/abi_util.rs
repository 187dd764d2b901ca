//! The unsafe helpers both ABI layers share: the panic barrier, caller
//! buffers (NULL → needed length, short → INSUFFICIENT_BUFFER,
//! SCARD_AUTOALLOCATE → memory only SCardFreeMemory releases) and C strings.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

use crate::error::{ScardError, ScardResult};

/// The integer type an ABI uses for lengths (`DWORD`).
pub(crate) trait Dword: Copy + PartialEq {
    const AUTOALLOCATE: Self;
    fn get(self) -> usize;
    fn make(v: usize) -> Self;
}

impl Dword for u32 {
    const AUTOALLOCATE: Self = u32::MAX;
    fn get(self) -> usize {
        self as usize
    }
    fn make(v: usize) -> Self {
        v as u32
    }
}

impl Dword for u64 {
    const AUTOALLOCATE: Self = u64::MAX;
    fn get(self) -> usize {
        self as usize
    }
    fn make(v: usize) -> Self {
        v as u64
    }
}

/// A caller's element count, checked before any slice is made of it:
/// `from_raw_parts` is undefined behaviour for more than `isize::MAX`
/// bytes, which a DWORD reaches on 32-bit targets, and `limit` (the most
/// the call can use, say one extended APDU) keeps a wild length from
/// being read at all. `None` when the count is unusable.
pub(crate) fn slice_len<T>(count: usize, limit: usize) -> Option<usize> {
    let most = isize::MAX as usize / std::mem::size_of::<T>().max(1);
    (count <= limit.min(most)).then_some(count)
}

/// Runs an export's body; a panic becomes SCARD_F_INTERNAL_ERROR instead
/// of unwinding into C (undefined behaviour) or aborting the host process.
pub(crate) fn guard(name: &'static str, f: impl FnOnce() -> ScardResult<()>) -> ScardResult<()> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => {
            tracing::trace!("{name} -> SCARD_S_SUCCESS");
            Ok(())
        }
        Ok(Err(e)) => {
            tracing::debug!("{name} -> {e}");
            Err(e)
        }
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!("{name} panicked: {what}");
            Err(ScardError::InternalError)
        }
    }
}

/// Autoallocated buffers by address, 8-byte aligned whatever they hold.
static ALLOCATIONS: Mutex<Option<HashMap<usize, Box<[u64]>>>> = Mutex::new(None);

fn allocate<T: Copy>(data: &[T]) -> *mut T {
    let bytes = std::mem::size_of_val(data);
    let mut block = vec![0u64; bytes.div_ceil(8).max(1)].into_boxed_slice();
    let p = block.as_mut_ptr() as *mut T;
    // SAFETY: the block holds at least `bytes` bytes, is 8-aligned (enough
    // for u8/u16) and does not overlap `data`.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
    let mut g = ALLOCATIONS.lock().unwrap_or_else(|e| e.into_inner());
    g.get_or_insert_with(HashMap::new).insert(p as usize, block);
    p
}

/// Releases an autoallocated buffer; false when `p` is not one of ours.
pub(crate) fn free(p: *const core::ffi::c_void) -> bool {
    let mut g = ALLOCATIONS.lock().unwrap_or_else(|e| e.into_inner());
    g.get_or_insert_with(HashMap::new)
        .remove(&(p as usize))
        .is_some()
}

/// Hands `data` to the caller through a `(buffer, length)` pair, in
/// elements of T (bytes or UTF-16 units).
///
/// # Safety
/// `buf` and `len` must be what the caller passed: `len` NULL or valid;
/// `buf` NULL, or valid for `*len` elements, or (with `*len` =
/// SCARD_AUTOALLOCATE) a valid `*mut *mut T`.
pub(crate) unsafe fn write_out<T: Copy, D: Dword>(
    data: &[T],
    buf: *mut T,
    len: *mut D,
    autoallocate: bool,
) -> ScardResult<()> {
    if len.is_null() {
        return Err(ScardError::InvalidParameter);
    }
    // Length pointers are read and written unaligned, like the buffers.
    let have = len.read_unaligned();
    if autoallocate && have == D::AUTOALLOCATE {
        if buf.is_null() {
            return Err(ScardError::InvalidParameter);
        }
        // Unaligned: the caller's pointer variable may sit anywhere.
        (buf as *mut *mut T).write_unaligned(allocate(data));
        len.write_unaligned(D::make(data.len()));
        return Ok(());
    }
    len.write_unaligned(D::make(data.len()));
    if buf.is_null() {
        return Ok(());
    }
    if have.get() < data.len() {
        return Err(ScardError::InsufficientBuffer);
    }
    // Bytewise: x86 callers may hand UTF-16 buffers at odd addresses, and a
    // typed copy to one aborts debug builds (misaligned pointer).
    std::ptr::copy_nonoverlapping(
        data.as_ptr().cast::<u8>(),
        buf.cast::<u8>(),
        std::mem::size_of_val(data),
    );
    Ok(())
}

/// Writes one value to an optional out-pointer.
///
/// # Safety
/// `p` NULL or valid for a write of T.
pub(crate) unsafe fn put<T>(p: *mut T, v: T) {
    if !p.is_null() {
        // Unaligned: callers may keep a DWORD anywhere (x86 allows it).
        p.write_unaligned(v);
    }
}

/// Hands a result to a caller's fixed-size buffer (SCardControl): the
/// length goes to `returned` (when given) in every case, and a result that
/// does not fit, or a NULL buffer for a non-empty one, is
/// SCARD_E_INSUFFICIENT_BUFFER.
///
/// # Safety
/// `buf` NULL or valid for `cap` bytes; `returned` NULL or valid.
pub(crate) unsafe fn copy_fixed<D: Dword>(
    data: &[u8],
    buf: *mut u8,
    cap: usize,
    returned: *mut D,
) -> ScardResult<()> {
    put(returned, D::make(data.len()));
    if data.is_empty() {
        return Ok(());
    }
    if buf.is_null() || data.len() > cap {
        return Err(ScardError::InsufficientBuffer);
    }
    std::ptr::copy_nonoverlapping(data.as_ptr(), buf, data.len());
    Ok(())
}

/// A NUL-terminated 8-bit string (ANSI; our names are ASCII).
///
/// # Safety
/// `p` NULL or a valid NUL-terminated string.
pub(crate) unsafe fn cstr(p: *const u8) -> Option<String> {
    if p.is_null() {
        return None;
    }
    Some(String::from_utf8_lossy(std::ffi::CStr::from_ptr(p.cast()).to_bytes()).into_owned())
}

#[cfg(windows)]
/// A NUL-terminated UTF-16 string, read unaligned: x86 Windows callers may
/// pass one at an odd address (a plain read aborts debug builds).
///
/// # Safety
/// `p` NULL or a valid NUL-terminated UTF-16 string.
pub(crate) unsafe fn wstr(p: *const u16) -> Option<String> {
    if p.is_null() {
        return None;
    }
    let mut units = Vec::new();
    loop {
        let c = p.add(units.len()).read_unaligned();
        if c == 0 {
            break;
        }
        units.push(c);
    }
    Some(String::from_utf16_lossy(&units))
}

/// A multi-string (`a\0b\0\0`) of 8-bit strings.
///
/// # Safety
/// `p` NULL or a valid double-NUL-terminated multi-string.
pub(crate) unsafe fn multi_cstr(mut p: *const u8) -> Option<Vec<String>> {
    if p.is_null() {
        return None;
    }
    let mut out = Vec::new();
    while *p != 0 {
        let s = std::ffi::CStr::from_ptr(p.cast());
        out.push(String::from_utf8_lossy(s.to_bytes()).into_owned());
        p = p.add(s.to_bytes().len() + 1);
    }
    Some(out)
}

#[cfg(windows)]
/// A multi-string of UTF-16 strings.
///
/// # Safety
/// `p` NULL or a valid double-NUL-terminated UTF-16 multi-string.
pub(crate) unsafe fn multi_wstr(mut p: *const u16) -> Option<Vec<String>> {
    if p.is_null() {
        return None;
    }
    let mut out = Vec::new();
    while p.read_unaligned() != 0 {
        let s = wstr(p).unwrap_or_default();
        p = p.add(s.encode_utf16().count() + 1);
        out.push(s);
    }
    Some(out)
}

/// `a\0b\0\0` (an empty list is `\0\0`, as Windows returns it).
pub(crate) fn multi_a(items: &[String]) -> Vec<u8> {
    let mut v = Vec::new();
    for s in items {
        v.extend_from_slice(s.as_bytes());
        v.push(0);
    }
    if items.is_empty() {
        v.push(0);
    }
    v.push(0);
    v
}

#[cfg(windows)]
/// UTF-16 `a\0b\0\0`.
pub(crate) fn multi_w(items: &[String]) -> Vec<u16> {
    let mut v = Vec::new();
    for s in items {
        v.extend(s.encode_utf16());
        v.push(0);
    }
    if items.is_empty() {
        v.push(0);
    }
    v.push(0);
    v
}

/// One NUL-terminated 8-bit string.
pub(crate) fn one_a(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

#[cfg(windows)]
/// One NUL-terminated UTF-16 string.
pub(crate) fn one_w(s: &str) -> Vec<u16> {
    s.encode_utf16().chain([0]).collect()
}

#[cfg(test)]
mod length_tests {
    use super::slice_len;

    #[test]
    fn lengths_are_checked_against_the_limit_and_the_address_space() {
        assert_eq!(slice_len::<u8>(5, 10), Some(5));
        assert_eq!(slice_len::<u8>(10, 10), Some(10));
        assert_eq!(slice_len::<u8>(11, 10), None);
        // What a 32-bit caller's (DWORD)-1 becomes, and anything a slice
        // of this element size cannot span.
        assert_eq!(
            slice_len::<u8>(u32::MAX as usize, crate::consts::MAX_APDU),
            None
        );
        assert_eq!(slice_len::<u8>(usize::MAX, usize::MAX), None);
        let most = isize::MAX as usize / 64;
        assert_eq!(slice_len::<[u8; 64]>(most, usize::MAX), Some(most));
        assert_eq!(slice_len::<[u8; 64]>(most + 1, usize::MAX), None);
    }
}
