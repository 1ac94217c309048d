//! An x86-64 instruction LENGTH decoder (64-bit mode), for the system-call
//! rewriter (`rewrite.rs`): sweeping a function from its start tells
//! whether an address is the start of an instruction. It knows the
//! general-purpose, x87, SSE/AVX (VEX and EVEX) encodings compilers emit
//! and refuses (None) anything else — privileged, 3DNow!, XOP or invalid
//! in 64-bit mode — so a sweep that meets one gives up instead of
//! guessing.

/// What follows an opcode: a ModRM byte, and an immediate.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    /// Not decodable here (invalid in 64-bit mode, or unknown).
    X,
    /// Nothing.
    N,
    /// ModRM.
    M,
    /// ModRM and imm8.
    MB,
    /// ModRM and imm16/32 (operand size).
    MZ,
    /// imm8.
    B,
    /// imm16 (or imm32 with operand size 32/64).
    Z,
    /// imm16.
    W,
    /// imm16 and imm8 (`enter`).
    WB,
    /// imm8/16/32/64 (`mov r, imm`: imm64 with REX.W).
    V,
    /// A 64-bit absolute address (`mov al/eax, moffs`; 32-bit with 0x67).
    Moffs,
    /// ModRM; an immediate whose size is the operand size when ModRM.reg
    /// is 0 or 1 (`test`), none otherwise: `F6` passes imm8, `F7` immZ.
    Grp3b,
    Grp3z,
}

use Op::*;

/// The one-byte opcode map (prefixes, REX, 0F, VEX and EVEX escapes are
/// handled before it is consulted).
#[rustfmt::skip]
const ONE: [Op; 256] = [
    // 0x00
    M, M, M, M, B, Z, X, X, M, M, M, M, B, Z, X, X,
    // 0x10
    M, M, M, M, B, Z, X, X, M, M, M, M, B, Z, X, X,
    // 0x20
    M, M, M, M, B, Z, X, X, M, M, M, M, B, Z, X, X,
    // 0x30
    M, M, M, M, B, Z, X, X, M, M, M, M, B, Z, X, X,
    // 0x40 (REX, handled before)
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    // 0x50
    N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N,
    // 0x60
    X, X, X, M, X, X, X, X, Z, MZ, B, MB, N, N, N, N,
    // 0x70
    B, B, B, B, B, B, B, B, B, B, B, B, B, B, B, B,
    // 0x80
    MB, MZ, X, MB, M, M, M, M, M, M, M, M, M, M, M, M,
    // 0x90
    N, N, N, N, N, N, N, N, N, N, X, N, N, N, N, N,
    // 0xa0
    Moffs, Moffs, Moffs, Moffs, N, N, N, N, B, Z, N, N, N, N, N, N,
    // 0xb0
    B, B, B, B, B, B, B, B, V, V, V, V, V, V, V, V,
    // 0xc0
    MB, MB, W, N, X, X, MB, MZ, WB, N, W, N, N, B, X, N,
    // 0xd0
    M, M, M, M, X, X, X, N, M, M, M, M, M, M, M, M,
    // 0xe0
    B, B, B, B, B, B, B, B, Z, Z, X, B, N, N, N, N,
    // 0xf0
    X, N, X, X, N, N, Grp3b, Grp3z, N, N, N, N, N, N, M, M,
];

/// The two-byte map (0F xx); 0F 38 and 0F 3A are handled before.
#[rustfmt::skip]
const TWO: [Op; 256] = [
    // 0x00
    M, M, M, M, X, N, N, N, N, N, X, N, X, M, N, X,
    // 0x10
    M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M,
    // 0x20 (mov to/from control and debug registers: privileged)
    X, X, X, X, X, X, X, X, M, M, M, M, M, M, M, M,
    // 0x30
    N, N, N, N, N, N, X, N, X, X, X, X, X, X, X, X,
    // 0x40
    M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M,
    // 0x50
    M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M,
    // 0x60
    M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M,
    // 0x70
    MB, MB, MB, MB, M, M, M, N, M, M, X, X, M, M, M, M,
    // 0x80
    Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z, Z,
    // 0x90
    M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M,
    // 0xa0
    N, N, N, M, MB, M, X, X, N, N, N, M, MB, M, M, M,
    // 0xb0
    M, M, M, M, M, M, M, M, M, M, MB, M, M, M, M, M,
    // 0xc0
    M, M, MB, M, MB, MB, MB, M, N, N, N, N, N, N, N, N,
    // 0xd0
    M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M,
    // 0xe0
    M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M,
    // 0xf0
    M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M,
];

/// Longest x86 instruction.
const MAX_LEN: usize = 15;

/// The length of the instruction at the start of `code`, or None if it
/// is not one this decoder knows (or `code` ends first).
pub fn length(code: &[u8]) -> Option<usize> {
    let mut i = 0;
    let mut opsize16 = false;
    let mut addr32 = false;
    // Legacy prefixes, any order.
    loop {
        match *code.get(i)? {
            0x66 => opsize16 = true,
            0x67 => addr32 = true,
            0xf0 | 0xf2 | 0xf3 | 0x2e | 0x36 | 0x3e | 0x26 | 0x64 | 0x65 => {}
            _ => break,
        }
        i += 1;
        if i >= MAX_LEN {
            return None;
        }
    }
    let mut rex_w = false;
    if code.get(i).is_some_and(|&b| b & 0xf0 == 0x40) {
        rex_w = code[i] & 8 != 0;
        i += 1;
    }
    let op = *code.get(i)?;
    i += 1;
    let imm_z = if opsize16 && !rex_w { 2 } else { 4 };
    let kind = match op {
        0x0f => {
            let op2 = *code.get(i)?;
            i += 1;
            match op2 {
                0x38 => {
                    i += 1;
                    M
                }
                0x3a => {
                    i += 1;
                    MB
                }
                _ => TWO[op2 as usize],
            }
        }
        0xc4 | 0xc5 | 0x62 => return vex(code, i - 1),
        0x8f if code.get(i).is_some_and(|m| m & 0x38 != 0) => return None, // XOP
        0xe8 | 0xe9 if opsize16 => return None,
        _ => ONE[op as usize],
    };
    let (modrm, imm) = match kind {
        X => return None,
        N => (false, 0),
        M => (true, 0),
        MB => (true, 1),
        MZ => (true, imm_z),
        B => (false, 1),
        Z => (false, imm_z),
        W => (false, 2),
        WB => (false, 3),
        V => (false, if rex_w { 8 } else { imm_z }),
        Moffs => (false, if addr32 { 4 } else { 8 }),
        Grp3b | Grp3z => {
            let reg = (*code.get(i)? >> 3) & 7;
            let size = if kind == Grp3b { 1 } else { imm_z };
            (true, if reg < 2 { size } else { 0 })
        }
    };
    if modrm {
        i += modrm_len(code.get(i..)?)?;
    }
    let len = i + imm;
    (len <= MAX_LEN && len <= code.len()).then_some(len)
}

/// Bytes of a ModRM byte with its SIB and displacement (64-bit mode: the
/// 32- and 64-bit address forms have the same lengths).
fn modrm_len(code: &[u8]) -> Option<usize> {
    let m = *code.first()?;
    let (md, rm) = (m >> 6, m & 7);
    if md == 3 {
        return Some(1);
    }
    let mut n = 1;
    if rm == 4 {
        let sib = *code.get(1)?;
        n += 1;
        if md == 0 && sib & 7 == 5 {
            return Some(n + 4);
        }
    } else if md == 0 && rm == 5 {
        return Some(n + 4); // RIP-relative
    }
    Some(n + [0, 1, 4][md as usize])
}

/// A VEX (C4, C5) or EVEX (62) instruction at `code[at..]`.
fn vex(code: &[u8], at: usize) -> Option<usize> {
    let (map, op_at) = match code[at] {
        0xc5 => (1, at + 2),
        0xc4 => (code.get(at + 1)? & 0x1f, at + 3),
        _ => (code.get(at + 1)? & 0x07, at + 4),
    };
    let op = *code.get(op_at)?;
    let imm = match map {
        1 if op == 0x77 && code[at] != 0x62 => return Some(op_at + 1 - at), // vzeroupper/all
        1 => matches!(op, 0x70..=0x73 | 0xc2 | 0xc4..=0xc6) as usize,
        2 => 0,
        3 => 1,
        _ => return None,
    };
    let len = op_at + 1 + modrm_len(code.get(op_at + 1..)?)? + imm - at;
    (len <= MAX_LEN && at + len <= code.len()).then_some(len)
}

/// Whether the instruction at the start of `code` does the same wherever
/// it runs once copied (the rewriter copies it into a stub): a legacy
/// encoding (one-byte or `0F` opcode, no VEX/EVEX) that neither transfers
/// control (jumps, calls, returns, interrupts, `syscall`, `ud2`) nor is
/// privileged. Its length, and where in it a RIP-relative operand's
/// 32-bit displacement lies, if it has one (to be moved by as much as the
/// instruction moves: [`relocate`]).
pub fn movable(code: &[u8]) -> Option<(usize, Option<usize>)> {
    let len = length(code)?;
    let mut i = 0;
    while matches!(code[i], 0x66 | 0x67 | 0xf0 | 0xf2 | 0xf3 | 0x2e | 0x36 | 0x3e | 0x26 | 0x64 | 0x65) {
        i += 1;
    }
    if code[i] & 0xf0 == 0x40 {
        i += 1;
    }
    let op = code[i];
    let (kind, modrm_at) = if op == 0x0f {
        let op2 = code[i + 1];
        let control = matches!(op2, 0x00..=0x0b | 0x0d..=0x0f | 0x20..=0x27 | 0x30 | 0x32..=0x37 | 0x80..=0x8f)
            || matches!(op2, 0x38 | 0x3a | 0x78 | 0x79 | 0xa1 | 0xa9 | 0xaa | 0xb9 | 0xff);
        if control {
            return None;
        }
        (TWO[op2 as usize], i + 2)
    } else {
        let control = matches!(op, 0x70..=0x7f | 0x9a | 0xc2 | 0xc3 | 0xca..=0xcf | 0xe0..=0xe3 | 0xe8..=0xeb)
            || matches!(op, 0xc4 | 0xc5 | 0x62 | 0x8f | 0xd8..=0xdf | 0xe4..=0xe7 | 0xec..=0xef | 0xf4 | 0xfa | 0xfb)
            || matches!(op, 0x6c..=0x6f | 0x9b);
        if control {
            return None;
        }
        if op == 0xff && code.get(i + 1).is_some_and(|m| (2..=5).contains(&((m >> 3) & 7))) {
            return None; // call, jmp (near and far) through a register or memory
        }
        (ONE[op as usize], i + 1)
    };
    let has_modrm = matches!(kind, M | MB | MZ | Grp3b | Grp3z);
    if has_modrm {
        let m = *code.get(modrm_at)?;
        if m >> 6 == 0 && m & 7 == 5 {
            // RIP-relative: the displacement follows the ModRM byte.
            return (modrm_at + 5 <= len).then_some((len, Some(modrm_at + 1)));
        }
    }
    Some((len, None))
}

/// Rewrites in place the instructions `code` (whole ones, [`movable`]
/// each), copied from `from` to `to`, so that they do there what they did
/// where they were: each RIP-relative displacement moves by `from - to`.
/// False if one does not fit 32 bits (or `code` is not such instructions).
pub fn relocate(code: &mut [u8], from: u64, to: u64) -> bool {
    let delta = from.wrapping_sub(to) as i64;
    let mut i = 0;
    while i < code.len() {
        let Some((n, disp)) = movable(&code[i..]) else { return false };
        if let Some(d) = disp {
            let at = i + d;
            let old = i32::from_le_bytes([code[at], code[at + 1], code[at + 2], code[at + 3]]);
            let Ok(new) = i32::try_from(i64::from(old) + delta) else { return false };
            code[at..at + 4].copy_from_slice(&new.to_le_bytes());
        }
        i += n;
    }
    true
}

/// Where the instruction at the start of `code` (at address `at`) may
/// send execution other than to the next instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jump {
    /// Nowhere (or only back to a caller: `ret`, an indirect call).
    None,
    /// A direct jump, conditional jump or call to this address.
    To(u64),
    /// A jump through a register or memory (a jump table, a computed
    /// goto): anywhere.
    Indirect,
}

/// The [`Jump`] of `code`, one whole instruction (as [`length`] found
/// it) at `at`.
pub fn jump(code: &[u8], at: u64) -> Jump {
    let len = code.len();
    let mut i = 0;
    let mut opsize16 = false;
    while i < len && matches!(code[i], 0x66 | 0x67 | 0xf0 | 0xf2 | 0xf3 | 0x2e | 0x36 | 0x3e | 0x26 | 0x64 | 0x65) {
        opsize16 |= code[i] == 0x66;
        i += 1;
    }
    if i < len && code[i] & 0xf0 == 0x40 {
        i += 1;
    }
    if i >= len {
        return Jump::None;
    }
    let next = at.wrapping_add(len as u64);
    let rel8 = || Jump::To(next.wrapping_add(code[len - 1] as i8 as u64));
    let rel32 = || {
        let d = i32::from_le_bytes([code[len - 4], code[len - 3], code[len - 2], code[len - 1]]);
        Jump::To(next.wrapping_add(d as i64 as u64))
    };
    let op = code[i];
    let j = match op {
        0x70..=0x7f | 0xe0..=0xe3 | 0xeb if len >= i + 2 => rel8(),
        0xe8 | 0xe9 if len >= i + 5 => rel32(),
        0x0f if code.get(i + 1).is_some_and(|b| matches!(b, 0x80..=0x8f)) && len >= i + 6 => rel32(),
        0xff if code.get(i + 1).is_some_and(|m| matches!((m >> 3) & 7, 4 | 5)) => Jump::Indirect,
        _ => Jump::None,
    };
    // An operand-size prefix on a relative jump cuts its target to 16
    // bits on some CPUs: where it goes is not known.
    if opsize16 && matches!(j, Jump::To(_)) {
        Jump::Indirect
    } else {
        j
    }
}

/// Whether a linear sweep from the start of `code` meets an instruction
/// that starts exactly at `target` (every instruction before it known):
/// the tests' reference (the rewriter's proofs sweep with `sitefind`'s
/// `Sweep`, which keeps what it found).
#[cfg(test)]
pub fn reaches(code: &[u8], target: usize) -> bool {
    let mut i = 0;
    while i < target {
        match length(&code[i..]) {
            Some(n) => i += n,
            None => return false,
        }
    }
    i == target
}

#[cfg(test)]
mod tests {
    use super::*;

    fn len_of(bytes: &[u8]) -> Option<usize> {
        // Trailing bytes so that a decoder reading too far is caught by
        // the length, not by the end of the slice.
        let mut v = bytes.to_vec();
        v.extend_from_slice(&[0x90; 16]);
        length(&v)
    }

    #[test]
    fn only_instructions_that_run_the_same_anywhere_are_movable() {
        let reloc = |b: &[u8]| {
            let mut v = b.to_vec();
            v.extend_from_slice(&[0x90; 16]);
            movable(&v).filter(|m| m.1.is_none()).map(|m| m.0)
        };
        // movups %xmm0,0x2d8(%rbx); mov %rsi,0x10(%rsi); mov $0x9e,%eax; mov $1,%edi
        assert_eq!(reloc(&[0x0f, 0x11, 0x83, 0xd8, 0x02, 0, 0]), Some(7));
        assert_eq!(reloc(&[0x48, 0x89, 0x76, 0x10]), Some(4));
        assert_eq!(reloc(&[0xb8, 0x9e, 0, 0, 0]), Some(5));
        assert_eq!(reloc(&[0x48, 0xc7, 0xc0, 0x0f, 0, 0, 0]), Some(7));
        // lea 0x10(%rip),%rdi: reads RIP, so its displacement must move.
        assert_eq!(movable(&[0x48, 0x8d, 0x3d, 0x10, 0, 0, 0]), Some((7, Some(3))));
        assert_eq!(reloc(&[0x48, 0x8d, 0x3d, 0x10, 0, 0, 0]), None);
        // jumps, calls, returns, interrupts, syscall, ud2
        for b in [
            &[0xe9, 1, 0, 0, 0][..],
            &[0xe8, 1, 0, 0, 0],
            &[0xeb, 5],
            &[0x74, 5],
            &[0x0f, 0x84, 1, 0, 0, 0],
            &[0xff, 0xd0],
            &[0xff, 0x25, 0, 0, 0, 0],
            &[0xff, 0x60, 0x08],
            &[0xc3],
            &[0xcc],
            &[0xcd, 0x80],
            &[0x0f, 0x05],
            &[0x0f, 0x0b],
            &[0xe2, 0xfe],
        ] {
            assert_eq!(reloc(b), None, "{b:02x?}");
        }
        // VEX: left alone.
        assert_eq!(reloc(&[0xc5, 0xf8, 0x11, 0x03]), None);
        // push/pop and inc through memory are fine.
        assert_eq!(reloc(&[0xff, 0x30]), Some(2));
        assert_eq!(reloc(&[0x53]), Some(1));
    }

    #[test]
    fn rip_relative_operands_move_with_the_instruction() {
        // mov %ebx,0x1daead(%rip); mov %edx,0x10(%rip); mov 0x10(%rip),%eax
        let mut code = [0x89, 0x1d, 0xad, 0xae, 0x1d, 0x00, 0x89, 0x15, 0x10, 0, 0, 0];
        assert_eq!(movable(&code), Some((6, Some(2))));
        assert_eq!(movable(&[0x8b, 0x05, 0x10, 0, 0, 0]), Some((6, Some(2))));
        // movl $1, 0x10(%rip): the immediate follows the displacement.
        assert_eq!(movable(&[0xc7, 0x05, 0x10, 0, 0, 0, 1, 0, 0, 0]), Some((10, Some(2))));
        // Copied 0x1000 bytes lower: each displacement grows by 0x1000.
        assert!(relocate(&mut code, 0x40_1000, 0x40_0000));
        assert_eq!(code, [0x89, 0x1d, 0xad, 0xbe, 0x1d, 0x00, 0x89, 0x15, 0x10, 0x10, 0, 0]);
        // Out of a rel32's reach.
        let mut far = [0x8b, 0x05, 0, 0, 0, 0x7f];
        assert!(!relocate(&mut far, 0x1_0000_0000, 0));
        // Not relocatable at all: a jump.
        assert!(!relocate(&mut [0xeb, 0x00], 0x1000, 0));
        // No RIP-relative operand: unchanged.
        let mut plain = [0x48, 0x89, 0x76, 0x10];
        assert!(relocate(&mut plain, 0x5000, 0));
        assert_eq!(plain, [0x48, 0x89, 0x76, 0x10]);
    }

    #[test]
    fn common_instructions_have_their_lengths() {
        let cases: &[&[u8]] = &[
            &[0x0f, 0x05],                                  // syscall
            &[0xb8, 0x27, 0, 0, 0],                         // mov eax, 39
            &[0x48, 0xb8, 1, 2, 3, 4, 5, 6, 7, 8],          // movabs rax, imm64
            &[0x66, 0xb8, 1, 2],                            // mov ax, imm16
            &[0xc7, 0x45, 0xb8, 0x27, 0, 0, 0],             // mov dword [rbp-0x48], 39
            &[0x48, 0xc7, 0xc0, 0xff, 0xff, 0xff, 0xff],    // mov rax, -1
            &[0x66, 0xc7, 0x45, 0xf0, 1, 0],                // mov word [rbp-16], 1
            &[0x48, 0x3d, 0x01, 0xf0, 0xff, 0xff],          // cmp rax, -4095
            &[0x48, 0x8b, 0x44, 0x24, 0x08],                // mov rax, [rsp+8]
            &[0x48, 0x8b, 0x04, 0x25, 0, 0, 0, 0],          // mov rax, [abs32]
            &[0x48, 0x8b, 0x05, 1, 2, 3, 4],                // mov rax, [rip+x]
            &[0x8b, 0x84, 0x24, 0x00, 0x01, 0x00, 0x00],    // mov eax, [rsp+256]
            &[0x64, 0x48, 0x8b, 0x04, 0x25, 0x28, 0, 0, 0], // mov rax, fs:[0x28]
            &[0xf3, 0x0f, 0x1e, 0xfa],                      // endbr64
            &[0x0f, 0x1f, 0x44, 0x00, 0x00],                // nop dword [rax+rax]
            &[0x66, 0x0f, 0x1f, 0x84, 0, 0, 0, 0, 0],       // nop word [rax+rax+0]
            &[0x66, 0x2e, 0x0f, 0x1f, 0x84, 0, 0, 0, 0, 0], // cs nop word
            &[0xe8, 1, 2, 3, 4],                            // call rel32
            &[0x0f, 0x84, 1, 2, 3, 4],                      // je rel32
            &[0x74, 0x05],                                  // je rel8
            &[0xf6, 0x45, 0x08, 0x01],                      // test byte [rbp+8], 1
            &[0xf7, 0xc7, 1, 0, 0, 0],                      // test edi, 1
            &[0xf7, 0xd8],                                  // neg eax
            &[0xc3],                                        // ret
            &[0xc2, 8, 0],                                  // ret 8
            &[0xc8, 16, 0, 0],                              // enter 16, 0
            &[0x66, 0x0f, 0x3a, 0x0f, 0xc1, 0x08],          // palignr xmm0, xmm1, 8
            &[0x66, 0x0f, 0x38, 0x00, 0xc1],                // pshufb xmm0, xmm1
            &[0xc5, 0xf9, 0x6f, 0x07],                      // vmovdqa xmm0, [rdi]
            &[0xc4, 0xe3, 0x79, 0x0f, 0xc1, 0x08],          // vpalignr
            &[0xc5, 0xf8, 0x77],                            // vzeroupper
            &[0x62, 0xf1, 0x7c, 0x48, 0x10, 0x47, 0x01],    // vmovups zmm0, [rdi+64]
            &[0xa1, 1, 2, 3, 4, 5, 6, 7, 8],                // mov eax, [moffs64]
            &[0x0f, 0xb6, 0x07],                            // movzx eax, byte [rdi]
            &[0x48, 0x0f, 0xba, 0xe0, 0x05],                // bt rax, 5
            &[0xdd, 0x04, 0x24],                            // fld qword [rsp]
            &[0x41, 0x5c],                                  // pop r12
            &[0x8f, 0x00],                                  // pop qword [rax]
        ];
        for c in cases {
            assert_eq!(len_of(c), Some(c.len()), "{c:02x?}");
        }
    }

    #[test]
    fn unknown_and_privileged_encodings_are_refused() {
        let cases: &[&[u8]] = &[
            &[0x06],                         // push es (invalid in 64-bit mode)
            &[0x0f, 0x22, 0xd8],             // mov cr3, rax
            &[0x0f, 0x0f, 0xc1, 0x9e],       // 3DNow!
            &[0x8f, 0xe9, 0x78, 0xc2, 0xc0], // XOP
            &[0xc4, 0xe4, 0x79, 0x0f, 0xc1], // VEX map 4
            &[0x66, 0xe8, 1, 2],             // call with an operand-size prefix
        ];
        for c in cases {
            assert_eq!(len_of(c), None, "{c:02x?}");
        }
        assert_eq!(length(&[0x48, 0xb8, 1, 2]), None, "runs past the end");
        assert_eq!(length(&[0x66; 16]), None, "too many prefixes");
    }

    #[test]
    fn jumps_and_their_targets_are_known() {
        let at = 0x1000;
        assert_eq!(jump(&[0x75, 0x05], at), Jump::To(0x1007), "jne +5");
        assert_eq!(jump(&[0xeb, 0xfe], at), Jump::To(0x1000), "jmp to itself");
        assert_eq!(jump(&[0xe9, 0x00, 0x01, 0, 0], at), Jump::To(0x1105), "jmp rel32");
        assert_eq!(jump(&[0x0f, 0x84, 0xfb, 0xff, 0xff, 0xff], at), Jump::To(0x1001), "je rel32 back");
        assert_eq!(jump(&[0xe8, 0, 0, 0, 0], at), Jump::To(0x1005), "call");
        assert_eq!(jump(&[0xe3, 0x10], at), Jump::To(0x1012), "jrcxz");
        assert_eq!(jump(&[0x3e, 0x74, 0x02], at), Jump::To(0x1005), "a branch hint prefix");
        assert_eq!(jump(&[0xff, 0xe0], at), Jump::Indirect, "jmp rax");
        assert_eq!(jump(&[0x3e, 0xff, 0xe0], at), Jump::Indirect, "notrack jmp rax");
        assert_eq!(jump(&[0xff, 0x24, 0xc5, 0, 0, 0, 0], at), Jump::Indirect, "jmp [table + rax*8]");
        assert_eq!(jump(&[0xff, 0xd0], at), Jump::None, "call rax returns here");
        assert_eq!(jump(&[0xc3], at), Jump::None, "ret");
        assert_eq!(jump(&[0x48, 0x89, 0xc3], at), Jump::None, "mov rbx, rax");
        assert_eq!(jump(&[0x0f, 0xa2], at), Jump::None, "cpuid");
    }

    #[test]
    fn a_sweep_lands_on_instruction_starts_only() {
        // mov dword [rbp-0x48], 39; syscall: bytes 2..7 look like
        // `mov eax, 39` followed by the syscall, but are not one.
        let code = [0xc7, 0x45, 0xb8, 0x27, 0, 0, 0, 0x0f, 0x05];
        assert!(reaches(&code, 7), "the syscall");
        assert!(!reaches(&code, 2), "the b8 inside the earlier instruction");
        // mov eax, 39; syscall
        let real = [0x90, 0xb8, 0x27, 0, 0, 0, 0x0f, 0x05];
        assert!(reaches(&real, 1) && reaches(&real, 6));
        assert!(!reaches(&[0x06, 0x90], 1), "an unknown byte stops the sweep");
    }
}
