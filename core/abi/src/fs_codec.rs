//! The one encoder and the one decoder of each file-service record the
//! host writes for the guest: [`Stat`], packed [`Dirent`]s (FS_READDIR)
//! and [`ManifestEntry`]s (the boot manifest). Little-endian, at the
//! offsets of the `repr(C)` structs, so that neither side depends on
//! reading a struct's memory directly. No allocation: encoders write into
//! the caller's buffer, decoders borrow from the caller's bytes and never
//! panic, whatever the bytes (the guest decodes what the host wrote, and a
//! decoder that trusted its input would turn one side's bug into the
//! other's crash).
//!
//! Re-exported from [`crate::fs`].

use core::mem::{offset_of, size_of};

use crate::fs::{entry_size, Dirent, ManifestEntry, Stat, ENTRY_CWD, ENTRY_MOUNT, NAME_MAX, PATH_MAX};

/// Why bytes are not a record (decoding) or a record does not fit
/// (encoding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodecError {
    /// The bytes end inside a record (or the output is too short for it).
    Truncated,
    /// A manifest record of a kind this contract does not define.
    UnknownKind,
    /// A reserved field or padding byte is not zero.
    NonzeroReserved,
    /// A path of `PATH_MAX` bytes or more (a name of more than `NAME_MAX`).
    TooLong,
}

impl CodecError {
    /// A short description, for messages.
    pub const fn as_str(self) -> &'static str {
        match self {
            CodecError::Truncated => "truncated record",
            CodecError::UnknownKind => "unknown record kind",
            CodecError::NonzeroReserved => "nonzero reserved field or padding",
            CodecError::TooLong => "path or name too long",
        }
    }
}

/// Size of an encoded [`Stat`].
pub const STAT_SIZE: usize = size_of::<Stat>();
/// Size of a [`Dirent`] header (its name follows).
pub const DIRENT_SIZE: usize = size_of::<Dirent>();
/// Size of a [`ManifestEntry`] header (its path and padding follow).
pub const ENTRY_SIZE: usize = size_of::<ManifestEntry>();

fn put(out: &mut [u8], at: usize, bytes: &[u8]) {
    out[at..at + bytes.len()].copy_from_slice(bytes);
}

/// `N` bytes at `at` of `b`, which the caller has checked is long enough.
fn take<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut v = [0u8; N];
    v.copy_from_slice(&b[at..at + N]);
    v
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(take(b, at))
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(take(b, at))
}

// ---------------------------------------------------------------------
// Stat
// ---------------------------------------------------------------------

/// A [`Stat`] as the guest reads it; `_pad` is written as zero.
pub fn encode_stat(st: &Stat) -> [u8; STAT_SIZE] {
    let mut b = [0u8; STAT_SIZE];
    put(&mut b, offset_of!(Stat, mode), &st.mode.to_le_bytes());
    put(&mut b, offset_of!(Stat, nlink), &st.nlink.to_le_bytes());
    put(&mut b, offset_of!(Stat, size), &st.size.to_le_bytes());
    put(&mut b, offset_of!(Stat, ino), &st.ino.to_le_bytes());
    put(&mut b, offset_of!(Stat, mtime_sec), &st.mtime_sec.to_le_bytes());
    put(&mut b, offset_of!(Stat, mtime_nsec), &st.mtime_nsec.to_le_bytes());
    b
}

/// The [`Stat`] at the start of `b` (bytes past it are ignored).
pub fn decode_stat(b: &[u8]) -> Result<Stat, CodecError> {
    let b = b.get(..STAT_SIZE).ok_or(CodecError::Truncated)?;
    Ok(Stat {
        mode: le_u32(b, offset_of!(Stat, mode)),
        nlink: le_u32(b, offset_of!(Stat, nlink)),
        size: le_u64(b, offset_of!(Stat, size)),
        ino: le_u64(b, offset_of!(Stat, ino)),
        mtime_sec: i64::from_le_bytes(take(b, offset_of!(Stat, mtime_sec))),
        mtime_nsec: le_u32(b, offset_of!(Stat, mtime_nsec)),
        _pad: le_u32(b, offset_of!(Stat, _pad)),
    })
}

// ---------------------------------------------------------------------
// Directory records (FS_READDIR)
// ---------------------------------------------------------------------

/// One directory record: a [`Dirent`] header and its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirentView<'a> {
    pub ino: u64,
    /// `DT_*` type.
    pub dtype: u8,
    /// At most `NAME_MAX` (255) bytes.
    pub name: &'a [u8],
}

/// Bytes one record with a name of `name_len` bytes takes.
pub const fn dirent_size(name_len: usize) -> usize {
    DIRENT_SIZE + name_len
}

/// Writes one record at the start of `out`; returns its size.
pub fn encode_dirent(out: &mut [u8], d: &DirentView<'_>) -> Result<usize, CodecError> {
    let name_len = u8::try_from(d.name.len()).map_err(|_| CodecError::TooLong)?;
    let size = dirent_size(d.name.len());
    let rec = out.get_mut(..size).ok_or(CodecError::Truncated)?;
    put(rec, offset_of!(Dirent, ino), &d.ino.to_le_bytes());
    put(rec, offset_of!(Dirent, dtype), &[d.dtype]);
    put(rec, offset_of!(Dirent, name_len), &[name_len]);
    put(rec, DIRENT_SIZE, d.name);
    Ok(size)
}

/// The records packed back to back in `bytes`: each whole one, then one
/// `Err(Truncated)` if the bytes end inside a record, then nothing.
pub fn dirents(bytes: &[u8]) -> Dirents<'_> {
    Dirents { rest: bytes }
}

/// Iterator of [`dirents`].
#[derive(Clone, Debug)]
pub struct Dirents<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Dirents<'a> {
    type Item = Result<DirentView<'a>, CodecError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let bytes = core::mem::take(&mut self.rest);
        let Some(head) = bytes.get(..DIRENT_SIZE) else { return Some(Err(CodecError::Truncated)) };
        let size = dirent_size(head[offset_of!(Dirent, name_len)] as usize);
        let Some(name) = bytes.get(DIRENT_SIZE..size) else { return Some(Err(CodecError::Truncated)) };
        self.rest = &bytes[size..];
        Some(Ok(DirentView {
            ino: le_u64(head, offset_of!(Dirent, ino)),
            dtype: head[offset_of!(Dirent, dtype)],
            name,
        }))
    }
}

// ---------------------------------------------------------------------
// The boot manifest
// ---------------------------------------------------------------------

/// One manifest record: a [`ManifestEntry`] and its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ManifestView<'a> {
    /// One of `ENTRY_*`.
    pub kind: u32,
    pub mode: u32,
    pub handle: u64,
    pub size: u64,
    /// The guest path (the host writes absolute, normalised UTF-8 paths;
    /// the decoder checks only its length).
    pub path: &'a [u8],
    /// An [`ENTRY_MOUNT`]'s root status; None for every other kind.
    pub root: Option<Stat>,
}

/// Writes one record (header, path, zero padding to 8 bytes, a mount's
/// root status) at the start of `out`; returns its size, [`entry_size`].
/// A mount without its root status, or another kind with one, is
/// [`CodecError::UnknownKind`].
pub fn encode_manifest_entry(out: &mut [u8], r: &ManifestView<'_>) -> Result<usize, CodecError> {
    if r.path.len() >= PATH_MAX {
        return Err(CodecError::TooLong);
    }
    if !(ENTRY_MOUNT..=ENTRY_CWD).contains(&r.kind) || r.root.is_some() != (r.kind == ENTRY_MOUNT) {
        return Err(CodecError::UnknownKind);
    }
    let size = entry_size(r.kind, r.path.len());
    let e = out.get_mut(..size).ok_or(CodecError::Truncated)?;
    e.fill(0);
    put(e, offset_of!(ManifestEntry, kind), &r.kind.to_le_bytes());
    put(e, offset_of!(ManifestEntry, mode), &r.mode.to_le_bytes());
    put(e, offset_of!(ManifestEntry, handle), &r.handle.to_le_bytes());
    put(e, offset_of!(ManifestEntry, size), &r.size.to_le_bytes());
    put(e, offset_of!(ManifestEntry, path_len), &(r.path.len() as u32).to_le_bytes());
    put(e, ENTRY_SIZE, r.path);
    if let Some(st) = &r.root {
        put(e, size - STAT_SIZE, &encode_stat(st));
    }
    Ok(size)
}

/// The records of a manifest, strictly: each whole, of a known kind, with
/// a path shorter than `PATH_MAX` and zero reserved field and padding, so
/// that what decodes is exactly what [`encode_manifest_entry`] makes of
/// it. A record that fails a check of its contents gives an `Err` and the
/// next record follows; bytes that end inside a record (or a path too
/// long to frame) give one `Err` and then nothing.
pub fn manifest_entries(bytes: &[u8]) -> ManifestEntries<'_> {
    ManifestEntries { rest: bytes }
}

/// Iterator of [`manifest_entries`].
#[derive(Clone, Debug)]
pub struct ManifestEntries<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for ManifestEntries<'a> {
    type Item = Result<ManifestView<'a>, CodecError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let bytes = core::mem::take(&mut self.rest);
        let Some(e) = bytes.get(..ENTRY_SIZE) else { return Some(Err(CodecError::Truncated)) };
        let path_len = le_u32(e, offset_of!(ManifestEntry, path_len)) as usize;
        if path_len >= PATH_MAX {
            return Some(Err(CodecError::TooLong));
        }
        let kind = le_u32(e, offset_of!(ManifestEntry, kind));
        let size = entry_size(kind, path_len);
        let Some(record) = bytes.get(..size) else { return Some(Err(CodecError::Truncated)) };
        self.rest = &bytes[size..];
        if !(ENTRY_MOUNT..=ENTRY_CWD).contains(&kind) {
            return Some(Err(CodecError::UnknownKind));
        }
        let (head, root) = match kind {
            ENTRY_MOUNT => record.split_at(size - STAT_SIZE),
            _ => (record, &[][..]),
        };
        let (path, padding) = head[ENTRY_SIZE..].split_at(path_len);
        let root = match kind {
            ENTRY_MOUNT => match decode_stat(root) {
                Ok(st) if st._pad == 0 => Some(st),
                Ok(_) => return Some(Err(CodecError::NonzeroReserved)),
                Err(e) => return Some(Err(e)),
            },
            _ => None,
        };
        if le_u32(e, offset_of!(ManifestEntry, _pad)) != 0 || padding.iter().any(|&b| b != 0) {
            return Some(Err(CodecError::NonzeroReserved));
        }
        Some(Ok(ManifestView {
            kind,
            mode: le_u32(e, offset_of!(ManifestEntry, mode)),
            handle: le_u64(e, offset_of!(ManifestEntry, handle)),
            size: le_u64(e, offset_of!(ManifestEntry, size)),
            path,
            root,
        }))
    }
}

const _: () = assert!(NAME_MAX <= u8::MAX as usize);

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;
    use crate::fs::{ENTRY_COLLECT, ENTRY_DIR, ENTRY_FILE};

    #[test]
    fn stat_round_trips_at_the_struct_offsets() {
        let st = Stat { mode: 0o100644, nlink: 2, size: 3, ino: 4, mtime_sec: -5, mtime_nsec: 6, _pad: 0 };
        let b = encode_stat(&st);
        assert_eq!(b.len(), STAT_SIZE);
        assert_eq!(&b[0..4], &0o100644u32.to_le_bytes());
        assert_eq!(&b[24..32], &(-5i64).to_le_bytes());
        assert_eq!(decode_stat(&b), Ok(st));
        // Extra bytes are ignored; a short record is an error.
        let mut long = [0xffu8; STAT_SIZE + 3];
        long[..STAT_SIZE].copy_from_slice(&b);
        assert_eq!(decode_stat(&long), Ok(st));
        for n in 0..STAT_SIZE {
            assert_eq!(decode_stat(&b[..n]), Err(CodecError::Truncated), "{n} bytes");
        }
        // The reserved field is not written, but is read back as is.
        let with_pad = Stat { _pad: 7, ..st };
        assert_eq!(decode_stat(&encode_stat(&with_pad)), Ok(st));
    }

    #[test]
    fn dirents_round_trip_and_stop_at_a_cut() {
        let recs = [
            DirentView { ino: 1, dtype: 4, name: b"dir" },
            DirentView { ino: u64::MAX, dtype: 8, name: &[b'x'; 255] },
            DirentView { ino: 0, dtype: 0, name: b"" },
        ];
        let mut buf = [0u8; 512];
        let mut at = 0;
        for r in &recs {
            at += encode_dirent(&mut buf[at..], r).unwrap();
        }
        assert_eq!(at, recs.iter().map(|r| dirent_size(r.name.len())).sum::<usize>());
        let bytes = &buf[..at];
        let mut got = dirents(bytes);
        for r in &recs {
            assert_eq!(got.next(), Some(Ok(*r)));
        }
        assert_eq!(got.next(), None);
        assert_eq!(dirents(&[]).count(), 0);
        // Every cut: the whole records before it, then one error if it
        // falls inside a record, then the end.
        let ends = [dirent_size(3), dirent_size(3) + dirent_size(255), at];
        for cut in 0..=at {
            let items: Vec<_> = dirents(&bytes[..cut]).collect();
            let whole = ends.iter().filter(|&&e| e <= cut).count();
            for (i, r) in recs[..whole].iter().enumerate() {
                assert_eq!(items[i], Ok(*r), "cut {cut}");
            }
            if cut == 0 || ends.contains(&cut) {
                assert_eq!(items.len(), whole, "cut {cut}");
            } else {
                assert_eq!(items[whole..], [Err(CodecError::Truncated)], "cut {cut}");
            }
        }
    }

    #[test]
    fn dirent_encoder_refuses_what_does_not_fit() {
        let mut small = [0u8; 12];
        assert_eq!(
            encode_dirent(&mut small, &DirentView { ino: 1, dtype: 8, name: b"abc" }),
            Err(CodecError::Truncated)
        );
        assert_eq!(encode_dirent(&mut small, &DirentView { ino: 1, dtype: 8, name: b"ab" }), Ok(12));
        let long = [b'n'; 256];
        let mut big = [0u8; 300];
        assert_eq!(encode_dirent(&mut big, &DirentView { ino: 1, dtype: 8, name: &long }), Err(CodecError::TooLong));
    }

    const ROOT: Stat =
        Stat { mode: 0o40755, nlink: 3, size: 4096, ino: 77, mtime_sec: -5, mtime_nsec: 999_999_999, _pad: 0 };

    fn sample() -> [ManifestView<'static>; 6] {
        [
            ManifestView { kind: ENTRY_DIR, mode: 0o700, handle: 0, size: 0, path: b"/tmp", root: None },
            ManifestView { kind: ENTRY_MOUNT, mode: 0, handle: 1, size: 0, path: b"/mnt", root: Some(ROOT) },
            ManifestView { kind: ENTRY_FILE, mode: 0o644, handle: 2, size: 5, path: b"/data/x.txt", root: None },
            ManifestView { kind: ENTRY_DIR, mode: 0o755, handle: 0, size: 0, path: b"/12345678", root: None },
            ManifestView { kind: ENTRY_COLLECT, mode: 0, handle: 0, size: 0, path: b"/", root: None },
            ManifestView { kind: ENTRY_CWD, mode: 0, handle: u64::MAX, size: u64::MAX, path: b"/w", root: None },
        ]
    }

    fn encode_all(recs: &[ManifestView<'_>], buf: &mut [u8]) -> usize {
        let mut at = 0;
        for r in recs {
            at += encode_manifest_entry(&mut buf[at..], r).unwrap();
        }
        at
    }

    #[test]
    fn manifest_round_trips_aligned() {
        let recs = sample();
        let mut buf = [0xa5u8; 512];
        let len = encode_all(&recs, &mut buf);
        assert_eq!(len, recs.iter().map(|r| entry_size(r.kind, r.path.len())).sum::<usize>());
        assert_eq!(len % 8, 0);
        // Header fields at the struct's offsets.
        assert_eq!(&buf[0..4], &ENTRY_DIR.to_le_bytes());
        assert_eq!(&buf[24..28], &4u32.to_le_bytes());
        assert_eq!(&buf[ENTRY_SIZE..ENTRY_SIZE + 4], b"/tmp");
        assert!(buf[ENTRY_SIZE + 4..entry_size(ENTRY_DIR, 4)].iter().all(|&b| b == 0), "padding zeroed");
        // The mount's root status follows its padded path.
        let mount = entry_size(ENTRY_DIR, 4);
        assert_eq!(entry_size(ENTRY_MOUNT, 4), entry_size(ENTRY_DIR, 4) + STAT_SIZE);
        let root_at = mount + entry_size(ENTRY_DIR, 4);
        assert_eq!(&buf[root_at..root_at + STAT_SIZE], &encode_stat(&ROOT));
        let mut it = manifest_entries(&buf[..len]);
        for r in &recs {
            assert_eq!(it.next(), Some(Ok(*r)));
        }
        assert_eq!(it.next(), None);
    }

    #[test]
    fn manifest_decoder_refuses_cut_or_altered_records() {
        let recs = sample();
        let mut buf = [0u8; 512];
        let len = encode_all(&recs, &mut buf);
        let bytes = &buf[..len];
        for cut in 1..len {
            let (mut oks, mut errs) = (0, 0);
            for item in manifest_entries(&bytes[..cut]) {
                match item {
                    Ok(r) => {
                        assert_eq!(errs, 0, "no record after an error at cut {cut}");
                        assert_eq!(r, recs[oks]);
                        oks += 1;
                    }
                    Err(e) => {
                        assert_eq!(e, CodecError::Truncated, "cut {cut}");
                        errs += 1;
                    }
                }
            }
            let boundary = recs.iter().scan(0, |a, r| {
                *a += entry_size(r.kind, r.path.len());
                Some(*a)
            });
            let at_boundary = boundary.clone().any(|b| b == cut);
            assert_eq!(errs, usize::from(!at_boundary), "cut {cut}");
            assert_eq!(oks, boundary.take_while(|&b| b <= cut).count(), "cut {cut}");
        }
        // An unknown kind, a nonzero reserved field or padding: an error
        // for that record, and the next one still decodes.
        for (at, value, want) in [
            (0, 0u8, CodecError::UnknownKind),
            (0, 6, CodecError::UnknownKind),
            (28, 1, CodecError::NonzeroReserved),
            (ENTRY_SIZE + 5, 1, CodecError::NonzeroReserved),
        ] {
            let mut bad = [0u8; 512];
            bad[..len].copy_from_slice(bytes);
            bad[at] = value;
            let mut it = manifest_entries(&bad[..len]);
            assert_eq!(it.next(), Some(Err(want)), "byte {at} = {value}");
            assert_eq!(it.next(), Some(Ok(recs[1])));
        }
        // A mount's root status with a nonzero reserved field: the same.
        let mut bad = [0u8; 512];
        bad[..len].copy_from_slice(bytes);
        let pad_at = entry_size(ENTRY_DIR, 4) + entry_size(ENTRY_MOUNT, 4) - STAT_SIZE + offset_of!(Stat, _pad);
        bad[pad_at] = 1;
        let mut it = manifest_entries(&bad[..len]);
        assert_eq!(it.next(), Some(Ok(recs[0])));
        assert_eq!(it.next(), Some(Err(CodecError::NonzeroReserved)));
        assert_eq!(it.next(), Some(Ok(recs[2])));
        // A path length of PATH_MAX or more cannot be framed: the end.
        let mut huge = [0u8; ENTRY_SIZE + 8];
        huge[..4].copy_from_slice(&ENTRY_DIR.to_le_bytes());
        huge[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut it = manifest_entries(&huge);
        assert_eq!(it.next(), Some(Err(CodecError::TooLong)));
        assert_eq!(it.next(), None);
    }

    #[test]
    fn manifest_encoder_checks_its_record_and_room() {
        let r = ManifestView { kind: ENTRY_DIR, mode: 0, handle: 0, size: 0, path: b"/abc", root: None };
        let mut buf = [0u8; 128];
        assert_eq!(encode_manifest_entry(&mut buf[..entry_size(ENTRY_DIR, 4) - 1], &r), Err(CodecError::Truncated));
        assert_eq!(encode_manifest_entry(&mut buf, &ManifestView { kind: 9, ..r }), Err(CodecError::UnknownKind));
        // A mount carries its root's status, and only a mount does.
        let mount = ManifestView { kind: ENTRY_MOUNT, root: Some(ROOT), ..r };
        assert_eq!(
            encode_manifest_entry(&mut buf, &ManifestView { root: None, ..mount }),
            Err(CodecError::UnknownKind)
        );
        assert_eq!(
            encode_manifest_entry(&mut buf, &ManifestView { root: Some(ROOT), ..r }),
            Err(CodecError::UnknownKind)
        );
        assert_eq!(
            encode_manifest_entry(&mut buf[..entry_size(ENTRY_MOUNT, 4) - 1], &mount),
            Err(CodecError::Truncated)
        );
        assert_eq!(encode_manifest_entry(&mut buf, &mount), Ok(entry_size(ENTRY_MOUNT, 4)));
        let long = [b'/'; PATH_MAX];
        let mut big = [0u8; PATH_MAX + 64];
        assert_eq!(encode_manifest_entry(&mut big, &ManifestView { path: &long, ..r }), Err(CodecError::TooLong));
        assert_eq!(
            encode_manifest_entry(&mut big, &ManifestView { path: &long[1..], ..r }),
            Ok(entry_size(ENTRY_DIR, PATH_MAX - 1))
        );
    }

    /// Every byte string, small: decoding never panics, every record it
    /// accepts encodes back to the same bytes.
    #[test]
    fn decoders_take_any_bytes() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut bytes = [0u8; 96];
        for round in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 97) as usize;
            for (i, b) in bytes.iter_mut().enumerate() {
                let x = seed.rotate_left(i as u32 * 7);
                // Mostly small values, so lengths and kinds are plausible.
                *b = if round % 2 == 0 { (x % 8) as u8 } else { x as u8 };
            }
            let bytes = &bytes[..len];
            let _ = decode_stat(bytes);
            let mut at = 0;
            for d in dirents(bytes) {
                let Ok(d) = d else { break };
                let mut out = [0u8; 300];
                let n = encode_dirent(&mut out, &d).unwrap();
                assert_eq!(&out[..n], &bytes[at..at + n]);
                at += n;
            }
            let mut at = 0;
            for r in manifest_entries(bytes) {
                let Ok(r) = r else { break };
                let mut out = [0u8; 160];
                let n = encode_manifest_entry(&mut out, &r).unwrap();
                assert_eq!(&out[..n], &bytes[at..at + n]);
                at += n;
            }
        }
    }
}
