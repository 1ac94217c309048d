//! Guest memory access: plain data and bytes at guest-physical addresses
//! (through `vm-memory`, bounds-checked), guest-virtual buffers through
//! the physmap or a walk of the guest's own page tables.

use std::os::fd::{AsRawFd, BorrowedFd};

use hvsandbox_abi as abi;
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryMmap};

use super::Vm;
use crate::error::{Result, VmError};
use crate::layout::{PTE_ADDR, PTE_P, PTE_PS};

/// Writes `bytes` at guest-physical `gpa` of `memory`, bounds-checked.
pub(super) fn write_to(memory: &GuestMemoryMmap, gpa: u64, bytes: &[u8]) -> Result<()> {
    memory
        .write_slice(bytes, GuestAddress(gpa))
        .map_err(|_| VmError::GuestAccess { addr: gpa, len: bytes.len() as u64 })
}

/// What to read into guest RAM: (guest-physical address, file, file
/// offset, length).
pub(super) type FileRead<'a> = (u64, BorrowedFd<'a>, u64, u64);

/// [`Vm::read_file_into`] for guest RAM `memory`, mapped at `host_addr`
/// with `mem_size` bytes (a [`super::RamLoader`]'s before its VM exists).
pub(super) fn read_file_to(memory: &GuestMemoryMmap, host_addr: u64, mem_size: u64, read: FileRead<'_>) -> Result<()> {
    let len = read.3;
    let done = pread_to(memory, host_addr, mem_size, read).map_err(VmError::ImageRead)?;
    if done < len {
        return Err(VmError::ImageRead(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("the file ended at {done} of {len} bytes (it changed while it was run)"),
        )));
    }
    Ok(())
}

/// [`Vm::pread_into`] for guest RAM `memory` (see [`read_file_to`]): the
/// caller's `memory` keeps the mapping at `host_addr` alive.
fn pread_to(memory: &GuestMemoryMmap, host_addr: u64, mem_size: u64, read: FileRead<'_>) -> std::io::Result<u64> {
    let _alive = memory;
    let (gpa, fd, offset, len) = read;
    match gpa.checked_add(len) {
        Some(end) if end <= mem_size => {}
        _ => return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput)),
    }
    let mut done = 0u64;
    while done < len {
        // At most 1 GiB a call (a single read is capped near 2 GiB).
        let chunk = (len - done).min(1 << 30) as usize;
        let at = (host_addr + gpa + done) as *mut libc::c_void;
        let file_at = offset
            .checked_add(done)
            .and_then(|o| libc::off_t::try_from(o).ok())
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        // SAFETY: [gpa + done, gpa + done + chunk) lies inside guest RAM
        // (checked above), which is mapped read-write at `host_addr` for
        // as long as `memory` (borrowed for this call) lives; pread writes
        // nothing else.
        let n = unsafe { libc::pread(fd.as_raw_fd(), at, chunk, file_at) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        done += n as u64;
    }
    Ok(done)
}

impl Vm {
    /// Reads a plain-data value at a guest-physical address.
    pub fn read_obj<T: ByteValued>(&self, gpa: u64) -> Result<T> {
        self.memory
            .read_obj(GuestAddress(gpa))
            .map_err(|_| VmError::GuestAccess { addr: gpa, len: std::mem::size_of::<T>() as u64 })
    }

    /// Writes a plain-data value at a guest-physical address.
    pub(super) fn write_obj<T: ByteValued>(&self, gpa: u64, value: &T) -> Result<()> {
        self.write(gpa, value.as_slice())
    }

    pub(super) fn write(&self, gpa: u64, bytes: &[u8]) -> Result<()> {
        write_to(&self.memory, gpa, bytes)
    }

    /// The arguments of the current hypercall.
    pub fn hypercall_args(&self) -> Result<abi::Hypercall> {
        self.read_obj(abi::HCALL_GPA)
    }

    /// Sets the result the guest finds after its hypercall returns.
    pub fn set_hypercall_result(&self, ret: u64) -> Result<()> {
        let off = std::mem::offset_of!(abi::Hypercall, ret) as u64;
        self.write(abi::HCALL_GPA + off, &ret.to_le_bytes())
    }

    /// Sets host request bits ([`abi::HOST_FLAG_FLUSH`],
    /// [`abi::HOST_FLAG_STDIN`]) for the runtime to see; call only while the
    /// vCPU is stopped (the runtime clears bits without a lock).
    pub fn raise_host_flags(&self, bits: u64) -> Result<()> {
        let at = abi::HCALL_GPA + std::mem::offset_of!(abi::Hypercall, host_flags) as u64;
        let old: u64 = self.read_obj(at)?;
        if old & bits != bits {
            self.write(at, &(old | bits).to_le_bytes())?;
        }
        Ok(())
    }

    /// Translates a guest buffer `[va, va + len)` given by the runtime in
    /// the physmap into a guest-physical address, checking it lies
    /// entirely inside RAM and is at most `max` bytes long.
    pub fn physmap_range(&self, va: u64, len: u64, max: u64) -> Result<u64> {
        let bad = VmError::GuestAccess { addr: va, len };
        if len > max {
            return Err(bad);
        }
        let gpa = va.checked_sub(abi::PHYS_BASE).ok_or(VmError::GuestAccess { addr: va, len })?;
        match gpa.checked_add(len) {
            Some(end) if end <= self.mem_size => Ok(gpa),
            _ => Err(bad),
        }
    }

    /// Translates guest-virtual `va` through the guest's current page
    /// tables (CR3 `cr3`): the guest-physical address and the bytes left in
    /// its page. The tables are guest data: every entry is read with a
    /// bounds check and the result must lie in RAM.
    fn translate(&self, cr3: u64, va: u64) -> Option<(u64, u64)> {
        if ((va as i64) << 16 >> 16) as u64 != va {
            return None; // not canonical
        }
        let mut table = cr3 & PTE_ADDR;
        for level in (0..4u32).rev() {
            let shift = 12 + 9 * level;
            let entry: u64 = self.read_obj(table + ((va >> shift) & 0x1ff) * 8).ok()?;
            if entry & PTE_P == 0 {
                return None;
            }
            if level == 0 || ((level == 1 || level == 2) && entry & PTE_PS != 0) {
                let size = 1u64 << shift;
                let gpa = (entry & PTE_ADDR & !(size - 1)) + (va & (size - 1));
                let left = size - (va & (size - 1));
                return (gpa < self.mem_size).then_some((gpa, left.min(self.mem_size - gpa)));
            }
            table = entry & PTE_ADDR;
        }
        None
    }

    /// Calls `f(gpa, offset, len)` for each guest-physical piece of the
    /// guest-virtual buffer `[va, va + len)`: one piece when it lies in the
    /// physmap, else one per page of the guest's current page tables.
    fn for_each_piece(&self, va: u64, len: u64, mut f: impl FnMut(u64, usize, usize) -> Result<()>) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        if let Ok(gpa) = self.physmap_range(va, len, len) {
            return f(gpa, 0, len as usize);
        }
        let cr3 = self.guest_cr3()?;
        let mut done = 0u64;
        while done < len {
            let at = va.checked_add(done).ok_or(VmError::GuestAccess { addr: va, len })?;
            let (gpa, left) = self.translate(cr3, at).ok_or(VmError::GuestAccess { addr: at, len: len - done })?;
            let n = left.min(len - done);
            f(gpa, done as usize, n as usize).map_err(|_| VmError::GuestAccess { addr: at, len: n })?;
            done += n;
        }
        Ok(())
    }

    /// The root of the guest's current page tables: as the runtime last
    /// told it in the hypercall block, else KVM's CR3.
    fn guest_cr3(&self) -> Result<u64> {
        let at = abi::HCALL_GPA + std::mem::offset_of!(abi::Hypercall, cr3) as u64;
        match self.read_obj::<u64>(at)? {
            0 => Ok(self.vcpu.get_sregs().map_err(VmError::kvm("KVM_GET_SREGS"))?.cr3),
            told => Ok(told),
        }
    }

    /// Copies the guest buffer at guest-virtual `va` (in the physmap or
    /// anywhere the guest's page tables map) into `buf`. A buffer that is
    /// not entirely mapped is a [`VmError::GuestAccess`].
    pub fn read_virt(&self, va: u64, buf: &mut [u8]) -> Result<()> {
        let len = buf.len() as u64;
        self.for_each_piece(va, len, |gpa, off, n| self.read_bytes(gpa, &mut buf[off..off + n]))
    }

    /// Copies `buf` into the guest buffer at guest-virtual `va` (see
    /// [`Vm::read_virt`]).
    pub fn write_virt(&self, va: u64, buf: &[u8]) -> Result<()> {
        self.for_each_piece(va, buf.len() as u64, |gpa, off, n| self.write(gpa, &buf[off..off + n]))
    }

    /// Copies guest bytes (a range checked by [`Vm::physmap_range`]).
    pub fn read_bytes(&self, gpa: u64, buf: &mut [u8]) -> Result<()> {
        self.memory
            .read_slice(buf, GuestAddress(gpa))
            .map_err(|_| VmError::GuestAccess { addr: gpa, len: buf.len() as u64 })
    }

    /// Reads `len` bytes of the file `fd` from file offset `offset`
    /// straight into guest RAM at `gpa` (with `pread`, so the descriptor's
    /// offset is left alone). A file that ends first is a
    /// [`VmError::ImageRead`].
    pub(super) fn read_file_into(&self, gpa: u64, fd: BorrowedFd<'_>, offset: u64, len: u64) -> Result<()> {
        read_file_to(&self.memory, self.host_addr, self.mem_size, (gpa, fd, offset, len))
    }

    /// Reads up to `len` bytes of the file `fd` from file offset `offset`
    /// straight into guest RAM at `gpa` (`pread`: the descriptor's offset
    /// is left alone); returns how many, fewer only at the end of the
    /// file. A range outside guest RAM is an `InvalidInput` error.
    pub fn pread_into(&self, gpa: u64, fd: BorrowedFd<'_>, offset: u64, len: u64) -> std::io::Result<u64> {
        pread_to(&self.memory, self.host_addr, self.mem_size, (gpa, fd, offset, len))
    }

    /// Calls `f` with guest RAM `[gpa, gpa + len)` as bytes, say to check
    /// what [`Vm::pread_into`] just put there. `&mut self`: the vCPU does
    /// not run and nothing writes through this VM meanwhile.
    pub fn with_guest_bytes<R>(&mut self, gpa: u64, len: u64, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        match gpa.checked_add(len) {
            Some(end) if end <= self.mem_size && usize::try_from(len).is_ok() => {}
            _ => return Err(VmError::GuestAccess { addr: gpa, len }),
        }
        // SAFETY: [gpa, gpa + len) lies inside guest RAM (checked above),
        // mapped readable at `host_addr` for as long as `self` lives; with
        // `self` borrowed mutably no vCPU run or host write through this VM
        // changes it while `f` holds the slice.
        let bytes = unsafe { std::slice::from_raw_parts((self.host_addr + gpa) as *const u8, len as usize) };
        Ok(f(bytes))
    }

    /// Copies bytes into guest memory.
    pub fn write_bytes(&self, gpa: u64, buf: &[u8]) -> Result<()> {
        self.write(gpa, buf)
    }

    /// The runtime's counters.
    pub fn runtime_stats(&self) -> Result<abi::RuntimeStats> {
        self.read_obj(abi::STATS_GPA)
    }
}
