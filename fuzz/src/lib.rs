//! The fuzz targets' shared part: the host file service and its contract
//! checks, compiled from the hvsandbox crate's own sources (its `fs`
//! module is private), so the targets fuzz exactly the code that serves
//! the guest. Each function takes the fuzzer's bytes; the checks panic on
//! a broken contract.

// What the targets do not call of the service.
#[allow(dead_code)]
#[path = "../../sandbox/src/fs.rs"]
mod fs;
// The checks name the service's items as `super::...`.
use fs::*;
#[path = "../../sandbox/src/fs_check.rs"]
mod check;

/// A run's caps, then file service requests (lookup, read, readdir,
/// readlink, stat, FILE_OUT, more files) against a host tree made once
/// per process under the temp dir, checked against its model.
pub fn fs_requests(data: &[u8]) {
    check::run_requests(check::Tree::shared(), data, false);
}

/// A run's caps, then FILE_OUT requests only: the collector's paths,
/// offsets, lengths and caps.
pub fn file_out(data: &[u8]) {
    check::run_requests(check::Tree::shared(), data, true);
}

/// The manifest decoder on any bytes, and encode -> decode on records.
pub fn manifest(data: &[u8]) {
    check::check_manifest_bytes(data);
    check::check_manifest_roundtrip(&check::manifest_records(&mut check::Input(data)));
}

/// Readdir paging and the dirent decoder.
pub fn dirents(data: &[u8]) {
    check::dirents_from_bytes(data);
}

/// Stat records, errno results and guest path checks.
pub fn records(data: &[u8]) {
    check::records_from_bytes(data);
}
