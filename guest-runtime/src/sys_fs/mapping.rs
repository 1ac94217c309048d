//! File mappings: mmap of a file (`syscalls.rs` maps anonymous memory
//! and hands file mappings here).

use crate::errno::*;
use crate::mm::{self, PROT_WRITE};
use crate::vfs::{Dev, NodeKind};

use super::SysResult;

/// mmap of a file: MAP_PRIVATE gets a private copy of the pages (or, read
/// only, the file's frames pinned in place); MAP_SHARED of an in-memory
/// file shows the file's own frames (`shm.rs`); MAP_SHARED of a read-only
/// host file is allowed read-only, as a private mapping (nothing writes
/// the file behind it while the program runs).
#[allow(clippy::too_many_arguments)] // mmap's own arguments
pub fn mmap_file(
    addr: u64,
    len: u64,
    prot: u32,
    shared: bool,
    fixed: bool,
    noreplace: bool,
    fd: u64,
    off: u64,
) -> SysResult {
    let f = crate::fds::get(fd)?;
    if !off.is_multiple_of(mm::PAGE) {
        return Err(EINVAL);
    }
    if !f.readable() {
        return Err(EACCES);
    }
    let node = f.node().ok_or(ENODEV)?.clone();
    let NodeKind::File(data) = &node.kind else {
        return match &node.kind {
            NodeKind::Dev(Dev::Zero) if shared => crate::shm::map_anon(addr, len, prot, fixed, noreplace),
            NodeKind::Dev(Dev::Zero) => mm::mmap_anon(addr, len, prot, fixed, noreplace),
            _ => Err(ENODEV),
        };
    };
    if shared && !node.readonly() {
        return crate::shm::map_file(&node, &f, addr, len, prot, fixed, noreplace, off);
    }
    if shared && prot & PROT_WRITE != 0 {
        return Err(EACCES);
    }
    // A file with shared mappings changes under them: a private mapping
    // gets copies rather than pinning its frames.
    let in_place = data.borrow().shared.maps == 0;
    let file_pages = node.size().div_ceil(mm::PAGE);
    let first = off / mm::PAGE;
    let mut frame = |i: u64| -> Result<Option<u64>, i64> {
        let index = first + i;
        if index >= file_pages {
            return Ok(None);
        }
        let mut d = data.borrow_mut();
        if prot & PROT_WRITE == 0 && in_place {
            d.pin();
        }
        d.frame(index as usize).map(Some)
    };
    mm::map_file(addr, len, prot, fixed, noreplace, in_place, &mut frame)
}
