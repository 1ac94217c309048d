//! The guest's host filesystem hypercalls, served for a [`Runner`].

use hvsandbox_core::{abi, Vm, VmError};

use super::Runner;
use crate::error::{Error, Result};
use crate::fs::{self, errno_result};

impl Runner<'_> {
    /// Serves one filesystem hypercall. Buffers may be anywhere the
    /// guest has mapped (the runtime passes heap buffers); one that is not
    /// mapped or is over its limit is a hostile request (an error that
    /// ends the run), while a bad handle, name or offset is just `-errno`
    /// for the guest.
    pub(super) fn fs_hypercall(&mut self, vm: &Vm, nr: u64, args: [u64; 6]) -> Result<u64> {
        use abi::fs::{NAME_MAX, PATH_MAX};
        let bad = |what: &str, va: u64, len: u64| {
            let what = what.to_string();
            move |e: VmError| match e {
                VmError::GuestAccess { .. } => {
                    Error::GuestCrashed { detail: format!("{what} hypercall with a bad buffer {va:#x}+{len:#x}") }
                }
                other => Error::from(other),
            }
        };
        let check_len = |what: &str, va: u64, len: u64, max: u64| {
            if len > max {
                return Err(bad(what, va, len)(VmError::GuestAccess { addr: va, len }));
            }
            Ok(len as usize)
        };
        Ok(match nr {
            abi::hc::FS_LOOKUP => {
                let (dir, name_va, name_len, stat_va) = (args[0], args[1], args[2], args[3]);
                if name_len > NAME_MAX as u64 {
                    return Ok(errno_result(libc::ENAMETOOLONG));
                }
                let mut name = [0u8; NAME_MAX];
                let name = &mut name[..name_len as usize];
                vm.read_virt(name_va, name).map_err(bad("lookup", name_va, name_len))?;
                match self.input.fs.lookup(dir, name) {
                    Ok((handle, st)) => {
                        let st = fs::stat_bytes(&st);
                        vm.write_virt(stat_va, &st).map_err(bad("lookup", stat_va, st.len() as u64))?;
                        handle
                    }
                    Err(e) => errno_result(e),
                }
            }
            abi::hc::FS_READ => {
                let (handle, offset, va, len) = (args[0], args[1], args[2], args[3]);
                let len = check_len("fs read", va, len, abi::HCALL_MAX_LEN)?;
                if self.scratch.len() < len {
                    self.scratch.resize(len, 0);
                }
                match self.input.fs.read(handle, offset, &mut self.scratch[..len]) {
                    Ok(n) => {
                        vm.write_virt(va, &self.scratch[..n]).map_err(bad("fs read", va, n as u64))?;
                        n as u64
                    }
                    Err(e) => errno_result(e),
                }
            }
            abi::hc::FS_READDIR => {
                let (handle, index, va, len) = (args[0], args[1], args[2], args[3]);
                let len = check_len("readdir", va, len, abi::HCALL_MAX_LEN)?;
                match self.input.fs.readdir(handle, index, len) {
                    Ok(records) => {
                        vm.write_virt(va, &records).map_err(bad("readdir", va, records.len() as u64))?;
                        records.len() as u64
                    }
                    Err(e) => errno_result(e),
                }
            }
            abi::hc::FS_READLINK => {
                let (handle, va, len) = (args[0], args[1], args[2]);
                let len = check_len("readlink", va, len, abi::HCALL_MAX_LEN)?;
                match self.input.fs.readlink(handle) {
                    // As readlink(2): the target, cut to the buffer.
                    Ok(target) => {
                        let n = target.len().min(len);
                        vm.write_virt(va, &target[..n]).map_err(bad("readlink", va, n as u64))?;
                        n as u64
                    }
                    Err(e) => errno_result(e),
                }
            }
            abi::hc::FS_STAT => {
                let (handle, va) = (args[0], args[1]);
                match self.input.fs.stat(handle) {
                    Ok(st) => {
                        let st = fs::stat_bytes(&st);
                        vm.write_virt(va, &st).map_err(bad("stat", va, st.len() as u64))?;
                        0
                    }
                    Err(e) => errno_result(e),
                }
            }
            abi::hc::FILE_OUT => {
                // The mode (args[5]) is not kept: Output::files holds bytes.
                let (path_va, path_len, data_va, data_len, offset) = (args[0], args[1], args[2], args[3], args[4]);
                let len = check_len("file out", data_va, data_len, abi::HCALL_MAX_LEN)?;
                if path_len >= PATH_MAX as u64 {
                    return Ok(errno_result(libc::ENAMETOOLONG));
                }
                let mut path = vec![0u8; path_len as usize];
                vm.read_virt(path_va, &mut path).map_err(bad("file out", path_va, path_len))?;
                if self.scratch.len() < len {
                    self.scratch.resize(len, 0);
                }
                vm.read_virt(data_va, &mut self.scratch[..len]).map_err(bad("file out", data_va, data_len))?;
                match self.input.collector.file_out(&path, offset, &self.scratch[..len]) {
                    Ok(()) => 0,
                    Err(e) => errno_result(e),
                }
            }
            abi::hc::FS_READ_FRAMES => {
                let (handle, offset, list_va, count) = (args[0], args[1], args[2], args[3]);
                let frames = read_frame_list(vm, list_va, count)?;
                match self.input.fs.read_source(handle) {
                    Ok(source) => match read_into_frames(vm, source, offset, &frames) {
                        Ok(n) => n,
                        Err(e) => errno_result(e),
                    },
                    Err(e) => errno_result(e),
                }
            }
            abi::hc::FS_WALK => {
                let (mut dir, names_va, names_len, out_va, room) = (args[0], args[1], args[2], args[3], args[4]);
                if names_len == 0 || names_len > PATH_MAX as u64 {
                    return Ok(errno_result(if names_len == 0 { libc::EINVAL } else { libc::ENAMETOOLONG }));
                }
                let mut names = vec![0u8; names_len as usize];
                vm.read_virt(names_va, &mut names).map_err(bad("walk", names_va, names_len))?;
                let room = room.min(abi::fs::WALK_MAX as u64);
                let (mut filled, mut failed) = (0u64, 0u64);
                for name in names.split(|&c| c == b'/') {
                    if filled == room {
                        break;
                    }
                    match self.input.fs.lookup(dir, name) {
                        Ok((handle, st)) => {
                            let mut record = [0u8; abi::fs::WALK_RECORD];
                            record[..8].copy_from_slice(&handle.to_le_bytes());
                            record[8..].copy_from_slice(&fs::stat_bytes(&st));
                            let at = out_va.wrapping_add(filled * abi::fs::WALK_RECORD as u64);
                            vm.write_virt(at, &record).map_err(bad("walk", at, record.len() as u64))?;
                            filled += 1;
                            if st.mode & libc::S_IFMT != libc::S_IFDIR {
                                break;
                            }
                            dir = handle;
                        }
                        Err(e) => {
                            failed = e as u64;
                            break;
                        }
                    }
                }
                filled | (failed << 32)
            }
            other => return Err(Error::GuestCrashed { detail: format!("unknown hypercall {other:#x}") }),
        })
    }
}

/// The frame list of an [`abi::hc::FS_READ_FRAMES`] call, as runs of
/// adjacent frames: (guest-physical address, bytes). A list that is not
/// mapped, too long, or names a frame that is not a whole page of guest
/// RAM is a hostile request.
fn read_frame_list(vm: &Vm, va: u64, count: u64) -> Result<Vec<(u64, u64)>> {
    let bad = |why: &str| Error::GuestCrashed { detail: format!("fs read into frames: {why} (list {va:#x}, {count})") };
    if count > abi::hc::FS_READ_FRAMES_MAX {
        return Err(bad("too many frames"));
    }
    let mut bytes = vec![0u8; count as usize * 8];
    vm.read_virt(va, &mut bytes).map_err(|_| bad("a list that is not mapped"))?;
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for word in bytes.chunks_exact(8) {
        let gpa = u64::from_le_bytes(word.try_into().unwrap_or_default());
        if !gpa.is_multiple_of(abi::PAGE_SIZE) || gpa.checked_add(abi::PAGE_SIZE).is_none_or(|end| end > vm.mem_size())
        {
            return Err(bad("a frame that is not a page of guest RAM"));
        }
        match runs.last_mut() {
            Some((start, len)) if *start + *len == gpa => *len += abi::PAGE_SIZE,
            _ => runs.push((gpa, abi::PAGE_SIZE)),
        }
    }
    Ok(runs)
}

/// Reads a file from `offset` into `runs` of guest RAM in order; returns
/// the bytes read (fewer at the end of the file) or an errno.
fn read_into_frames(vm: &Vm, source: fs::ReadSource<'_>, offset: u64, runs: &[(u64, u64)]) -> Result<u64, i32> {
    let mut done = 0u64;
    for &(gpa, len) in runs {
        let at = offset.checked_add(done).ok_or(libc::EINVAL)?;
        let n = match &source {
            fs::ReadSource::Bytes(data) => {
                let data = fs::bytes_from(data, at);
                let n = data.len().min(len as usize);
                vm.write_bytes(gpa, &data[..n]).map_err(|_| libc::EIO)?;
                n as u64
            }
            fs::ReadSource::Host(fd) => {
                vm.pread_into(gpa, *fd, at, len).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?
            }
        };
        done += n;
        if n < len {
            break;
        }
    }
    Ok(done)
}
