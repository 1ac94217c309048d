//! Shared memory: MAP_SHARED mappings of the in-memory files (`/dev/shm`,
//! `/tmp`, memfds, ...) and of anonymous memory, which is an unnamed
//! in-memory file as on Linux.
//!
//! A mapping shows the file's own frames (`mm::map_shared`), so a store
//! through it is what read(2) returns and what every other process
//! mapping the file sees, and write(2) is seen through the mappings; a
//! fork maps the same frames again. The mapping holds the file (an
//! [`ShmFile`] in its VMA), and the file frees no frame a page table may
//! still map: a truncate of a mapped file ([`truncate`]) first takes the
//! pages past the new end out of every process's page tables (a touch
//! there is a SIGBUS, as on Linux).

use alloc::rc::Rc;
use core::cell::RefCell;

use crate::errno::*;
use crate::file::OpenFile;
use crate::mm::{self, Shared, PROT_WRITE};
use crate::vfs::{self, FileData, NodeKind, NodeRef};
use crate::vma::SharedObject;

const MAX_FILE: u64 = 1 << 40;

/// What the mappings of `node` are known by (futex keys, truncate).
fn key_of(node: &NodeRef) -> usize {
    Rc::as_ptr(node) as *const u8 as usize
}

/// A file behind shared mappings (one per mmap call; its VMAs share it).
pub struct ShmFile {
    node: NodeRef,
}

impl ShmFile {
    fn new(node: NodeRef) -> Result<Rc<ShmFile>, i64> {
        let NodeKind::File(d) = &node.kind else { return Err(ENODEV) };
        let mut d = d.try_borrow_mut().map_err(|_| EBUSY)?;
        d.prepare_shared()?;
        d.shared.maps += 1;
        drop(d);
        Ok(Rc::new(ShmFile { node }))
    }
}

impl Drop for ShmFile {
    fn drop(&mut self) {
        if let NodeKind::File(d) = &self.node.kind {
            if let Ok(mut d) = d.try_borrow_mut() {
                d.shared.maps -= 1;
            }
        }
    }
}

impl SharedObject for ShmFile {
    fn page(&self, index: u64) -> Result<Option<u64>, i64> {
        let NodeKind::File(d) = &self.node.kind else { return Ok(None) };
        // Busy only if the runtime touches a mapping of a file while it
        // changes that file (it takes program buffers first): a fault.
        let mut d = d.try_borrow_mut().map_err(|_| EFAULT)?;
        if index >= d.size.div_ceil(mm::PAGE) {
            return Ok(None);
        }
        d.frame(index as usize).map(Some)
    }

    fn key(&self) -> usize {
        key_of(&self.node)
    }
}

/// Truncates in-memory file `node` (its data `d`) to `len`: with shared
/// mappings, the pages past the new end leave every page table first.
pub fn truncate(node: &NodeRef, d: &RefCell<FileData>, len: u64) -> Result<(), i64> {
    if d.borrow().shared.maps == 0 {
        return d.borrow_mut().truncate(len);
    }
    if len > MAX_FILE {
        return Err(EFBIG);
    }
    let key = key_of(node);
    let first = len.div_ceil(mm::PAGE);
    for p in crate::task::live_processes() {
        if let Some(space) = crate::task::space_of(&p) {
            mm::drop_object_pages(space.get(), key, first);
        }
    }
    d.borrow_mut().truncate_unmapped(len)
}

/// mmap(MAP_SHARED) of an in-memory file open as `f`, from byte `off`.
#[allow(clippy::too_many_arguments)] // mmap's own arguments
pub fn map_file(
    node: &NodeRef,
    f: &OpenFile,
    addr: u64,
    len: u64,
    prot: u32,
    fixed: bool,
    noreplace: bool,
    off: u64,
) -> Result<u64, i64> {
    if len == 0 {
        return Err(EINVAL);
    }
    if prot & PROT_WRITE != 0 && !f.writable() {
        return Err(EACCES);
    }
    // Files end before 1 TiB (`vfs::FileData`): a mapping from past
    // there could never show a page.
    if off.checked_add(len).is_none_or(|end| end > MAX_FILE) {
        return Err(EOVERFLOW);
    }
    let obj = ShmFile::new(node.clone())?;
    let shared = Shared { obj, pgoff: off / mm::PAGE, may_write: f.writable() };
    mm::map_shared(addr, len, prot, fixed, noreplace, shared)
}

/// mmap(MAP_SHARED | MAP_ANONYMOUS) (and MAP_SHARED of /dev/zero): zeroed
/// memory that stays shared with the children forked from now on.
pub fn map_anon(addr: u64, len: u64, prot: u32, fixed: bool, noreplace: bool) -> Result<u64, i64> {
    if len == 0 {
        return Err(EINVAL);
    }
    let size = mm::page_up(len);
    if size == 0 || size > hvsandbox_abi::user::ADDR_LIMIT {
        return Err(ENOMEM);
    }
    // As for private memory: a mapping that could never be backed is
    // refused up front.
    if size / mm::PAGE > mm::spare_frames() {
        return Err(ENOMEM);
    }
    let node = vfs::new_file(0o600);
    if let NodeKind::File(d) = &node.kind {
        d.borrow_mut().truncate(size)?;
    }
    let obj = ShmFile::new(node)?;
    let shared = Shared { obj, pgoff: 0, may_write: true };
    mm::map_shared(addr, len, prot, fixed, noreplace, shared)
}
