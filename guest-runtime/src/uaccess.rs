//! Access to the program's memory: every pointer it passes is checked
//! against its mappings before the runtime touches it.

use crate::errno::*;
use crate::mm::{self, PROT_READ, PROT_WRITE};

pub fn user_bytes(va: u64, len: u64) -> Result<&'static [u8], i64> {
    if !mm::user_access_ok(va, len, PROT_READ) || !mm::populate(va, len) {
        return Err(EFAULT);
    }
    if len == 0 {
        return Ok(&[]);
    }
    // SAFETY: the whole range is mapped readable in the current address
    // space (checked above) and stays mapped for this system call.
    Ok(unsafe { core::slice::from_raw_parts(va as *const u8, len as usize) })
}

pub fn user_bytes_mut(va: u64, len: u64) -> Result<&'static mut [u8], i64> {
    if !mm::user_access_ok(va, len, PROT_WRITE) || !mm::populate_write(va, len) {
        return Err(EFAULT);
    }
    if len == 0 {
        return Ok(&mut []);
    }
    // SAFETY: the whole range is mapped writable (checked above); the
    // runtime holds no other reference into program memory meanwhile.
    Ok(unsafe { core::slice::from_raw_parts_mut(va as *mut u8, len as usize) })
}

pub fn put_user<const N: usize>(va: u64, bytes: [u8; N]) -> Result<(), i64> {
    user_bytes_mut(va, N as u64)?.copy_from_slice(&bytes);
    Ok(())
}

pub fn put_u64s(va: u64, words: &[u64]) -> Result<(), i64> {
    let out = user_bytes_mut(va, 8 * words.len() as u64)?;
    for (chunk, w) in out.chunks_exact_mut(8).zip(words) {
        chunk.copy_from_slice(&w.to_le_bytes());
    }
    Ok(())
}

pub fn get_u32(va: u64) -> Result<u32, i64> {
    let b = user_bytes(va, 4)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

pub fn get_u64(va: u64) -> Result<u64, i64> {
    let b = user_bytes(va, 8)?;
    Ok(u64::from_le_bytes(b.try_into().map_err(|_| EFAULT)?))
}

/// A NUL-terminated string of at most `max` bytes (without the NUL).
pub fn user_cstr(va: u64, max: u64) -> Result<&'static [u8], i64> {
    let mut len = 0u64;
    loop {
        // Check page by page so a string at the end of a mapping is fine.
        let page_left = mm::PAGE - ((va + len) & (mm::PAGE - 1));
        let chunk = user_bytes(va + len, page_left)?;
        if let Some(n) = chunk.iter().position(|&b| b == 0) {
            return user_bytes(va, len + n as u64);
        }
        len += page_left;
        if len > max {
            return Err(ERANGE);
        }
    }
}

/// A timespec's seconds and nanoseconds as nanoseconds (saturating), or
/// EINVAL for a nanosecond field out of range or negative seconds.
pub fn timespec_ns(sec: u64, nsec: u64) -> Result<u64, i64> {
    if nsec >= 1_000_000_000 || sec > i64::MAX as u64 {
        return Err(EINVAL);
    }
    Ok(sec.saturating_mul(1_000_000_000).saturating_add(nsec))
}

/// Reads the program's `struct timespec` at `ts` (see [`timespec_ns`]).
pub fn read_timespec(ts: u64) -> Result<u64, i64> {
    let b = user_bytes(ts, 16)?;
    let sec = u64::from_le_bytes(b[0..8].try_into().map_err(|_| EFAULT)?);
    let nsec = u64::from_le_bytes(b[8..16].try_into().map_err(|_| EFAULT)?);
    timespec_ns(sec, nsec)
}

/// A path argument: a NUL-terminated string of less than PATH_MAX bytes
/// (ENAMETOOLONG otherwise).
pub fn path_arg(ptr: u64) -> Result<&'static [u8], i64> {
    match user_cstr(ptr, hvsandbox_abi::fs::PATH_MAX as u64) {
        Err(ERANGE) => Err(ENAMETOOLONG),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timespecs_are_checked_and_saturate() {
        assert_eq!(timespec_ns(0, 0), Ok(0));
        assert_eq!(timespec_ns(2, 5), Ok(2_000_000_005));
        assert_eq!(timespec_ns(0, 999_999_999), Ok(999_999_999));
        assert_eq!(timespec_ns(0, 1_000_000_000), Err(EINVAL));
        assert_eq!(timespec_ns(-1i64 as u64, 0), Err(EINVAL), "negative seconds");
        assert_eq!(timespec_ns(i64::MAX as u64, 999_999_999), Ok(u64::MAX));
    }
}
