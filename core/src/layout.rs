//! The privileged structures the host builds before the first instruction:
//! page tables (physmap + doorbell), GDT, IDT and TSS. The guest starts
//! directly at CPL3 on top of them and never needs to run ring-0 set-up
//! code, which this host would emulate instruction by instruction.

use hvsandbox_abi as abi;

/// Page-table entry bits (x86-64, 4-level), for the tables built here and
/// for reading the guest's own (`vm`): the ABI's, which the runtime uses
/// for the tables it writes.
pub use abi::pte::{
    ACCESSED as PTE_A, ADDR as PTE_ADDR, DIRTY as PTE_D, HUGE as PTE_PS, NO_EXECUTE as PTE_NX, PRESENT as PTE_P,
    USER as PTE_US, WRITABLE as PTE_RW,
};
/// Non-leaf entries: present, writable, user, accessed (preset so the CPU
/// never has to write it back).
const TABLE: u64 = PTE_P | PTE_RW | PTE_US | PTE_A;
/// Leaf entries also carry the dirty bit preset.
const LEAF: u64 = TABLE | PTE_D;

/// A page to write into guest RAM at a guest-physical address.
pub struct Page {
    pub gpa: u64,
    pub data: Box<[u64; 512]>,
}

impl Page {
    fn new(gpa: u64) -> Page {
        Page { gpa, data: Box::new([0; 512]) }
    }
    /// The page as the guest sees it (little-endian entries).
    pub fn bytes(&self) -> [u8; 4096] {
        let mut bytes = [0u8; 4096];
        for (b, v) in bytes.chunks_exact_mut(8).zip(self.data.iter()) {
            b.copy_from_slice(&v.to_le_bytes());
        }
        bytes
    }
}

fn index(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * level)) & 0x1ff) as usize
}

/// The top-level slots given an empty table at boot: a program's low
/// addresses (non-PIE images and their break), PIE images, the top of the
/// program's range (its stack and mappings), the runtime's heap and the
/// vsyscall page.
const PRELINKED_SLOTS: [usize; 5] = [
    0,
    (abi::user::PIE_BASE >> 39) as usize,
    ((abi::user::ADDR_LIMIT - 1) >> 39) as usize,
    ((abi::RUNTIME_HEAP_VA >> 39) & 0x1ff) as usize,
    511,
];

/// Builds the initial page tables for `mem_size` bytes of RAM: all of RAM
/// at [`abi::PHYS_BASE`] in 2 MiB pages, and the doorbell page. Returns the
/// pages (the PML4 first) and the first free GPA after them.
pub fn page_tables(mem_size: u64) -> (Vec<Page>, u64) {
    let mut next = abi::PAGE_TABLES_GPA;
    let mut alloc = |pages: &mut Vec<Page>| {
        let gpa = next;
        next += abi::PAGE_SIZE;
        pages.push(Page::new(gpa));
        pages.len() - 1
    };
    let mut pages = Vec::new();
    let pml4 = alloc(&mut pages);
    let pdpt = alloc(&mut pages);
    debug_assert_eq!(index(abi::PHYS_BASE, 3), index(abi::DOORBELL_VA, 3));
    pages[pml4].data[index(abi::PHYS_BASE, 3)] = pages[pdpt].gpa | TABLE;

    let gib = 1u64 << 30;
    let n_pd = mem_size.div_ceil(gib);
    for i in 0..n_pd {
        let pd = alloc(&mut pages);
        let va = abi::PHYS_BASE + i * gib;
        pages[pdpt].data[index(va, 2)] = pages[pd].gpa | TABLE;
        for j in 0..512u64 {
            let gpa = i * gib + j * abi::HUGE_PAGE_SIZE;
            if gpa >= mem_size {
                break;
            }
            pages[pd].data[j as usize] = gpa | LEAF | PTE_PS;
        }
    }

    // Empty tables under the top-level slots the runtime fills in nearly
    // every run, so that it need not write the top-level table while the
    // CPU runs on it: the hypervisor write-protects that table, and each
    // such write costs a fault and an emulated instruction on a
    // shadow-paging host (~50 µs here; a cold `busybox true` made four).
    for slot in PRELINKED_SLOTS {
        let t = alloc(&mut pages);
        pages[pml4].data[slot] = pages[t].gpa | TABLE;
    }

    let pd = alloc(&mut pages);
    let pt = alloc(&mut pages);
    pages[pdpt].data[index(abi::DOORBELL_VA, 2)] = pages[pd].gpa | TABLE;
    pages[pd].data[index(abi::DOORBELL_VA, 1)] = pages[pt].gpa | TABLE;
    pages[pt].data[index(abi::DOORBELL_VA, 0)] = abi::DOORBELL_GPA | LEAF;
    (pages, next)
}

fn segment(base: u32, limit: u32, access: u8, flags: u8) -> u64 {
    (limit as u64 & 0xffff)
        | ((base as u64 & 0xff_ffff) << 16)
        | ((access as u64) << 40)
        | (((limit as u64 >> 16) & 0xf) << 48)
        | (((flags as u64) & 0xf) << 52)
        | (((base as u64 >> 24) & 0xff) << 56)
}

/// Size of the 64-bit TSS.
pub const TSS_LIMIT: u32 = 0x67;
/// TSS type: 64-bit TSS, busy.
pub const TSS_TYPE_BUSY: u8 = 0xb;

/// The GDT: selectors as in [`abi::KERNEL_CS`] etc.
pub fn gdt() -> Page {
    let mut page = Page::new(abi::GDT_GPA);
    let g = &mut page.data;
    g[2] = segment(0, 0xfffff, 0x9a, 0xa); // kernel code, 64-bit
    g[3] = segment(0, 0xfffff, 0x92, 0xc); // kernel data
    g[5] = segment(0, 0xfffff, 0xf2, 0xc); // user data
    g[6] = segment(0, 0xfffff, 0xfa, 0xa); // user code, 64-bit
    let tss = abi::phys_to_virt(abi::TSS_GPA);
    g[8] = segment(tss as u32, TSS_LIMIT, 0x80 | TSS_TYPE_BUSY, 0);
    g[9] = tss >> 32;
    page
}

/// Number of GDT bytes in use (limit + 1).
pub const GDT_SIZE: u16 = 10 * 8;

/// The TSS: ring-0 stack for exceptions, IST1 for double faults, no I/O
/// permission bitmap.
pub fn tss() -> Page {
    let mut page = Page::new(abi::TSS_GPA);
    let mut bytes = [0u8; 4096];
    let rsp0 = abi::phys_to_virt(abi::RING0_STACK_GPA + abi::RING0_STACK_SIZE);
    let ist1 = abi::phys_to_virt(abi::IST_STACK_GPA + abi::IST_STACK_SIZE);
    bytes[4..12].copy_from_slice(&rsp0.to_le_bytes());
    bytes[0x24..0x2c].copy_from_slice(&ist1.to_le_bytes());
    bytes[0x66..0x68].copy_from_slice(&((TSS_LIMIT as u16) + 1).to_le_bytes());
    for (i, chunk) in bytes.chunks_exact(8).enumerate() {
        page.data[i] = u64::from_le_bytes(chunk.try_into().expect("8-byte chunk"));
    }
    page
}

/// The IDT: vectors 0..32 go to the runtime's exception stubs (ring 0).
/// `#BP` is reachable from CPL3 (so `int3` gives SIGTRAP, as on Linux);
/// `#DF` runs on IST1.
pub fn idt(stubs: u64, stride: u64) -> Page {
    let mut page = Page::new(abi::IDT_GPA);
    for v in 0..abi::EXCEPTION_VECTORS as u64 {
        let handler = stubs + v * stride;
        let dpl: u64 = if v == abi::vector::BREAKPOINT || v == abi::vector::OVERFLOW { 3 } else { 0 };
        let ist: u64 = if v == abi::vector::DOUBLE_FAULT { 1 } else { 0 };
        let attr = 0x8e | (dpl << 5); // present, 64-bit interrupt gate
        page.data[(2 * v) as usize] = (handler & 0xffff)
            | ((abi::KERNEL_CS as u64) << 16)
            | (ist << 32)
            | (attr << 40)
            | (((handler >> 16) & 0xffff) << 48);
        page.data[(2 * v + 1) as usize] = handler >> 32;
    }
    page
}

/// IDT limit for the vectors above.
pub const IDT_SIZE: u16 = (abi::EXCEPTION_VECTORS * 16) as u16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_code_segment_matches_known_good_value() {
        assert_eq!(gdt().data[6], 0x00affa000000ffff);
        assert_eq!(gdt().data[2], 0x00af9a000000ffff);
    }

    #[test]
    fn physmap_covers_memory_with_huge_pages() {
        let mem = 64 << 20;
        let (pages, end) = page_tables(mem);
        assert_eq!(end, abi::PAGE_TABLES_GPA + pages.len() as u64 * 4096);
        let pd = &pages[2];
        assert_eq!(pd.data[0], LEAF | PTE_PS);
        assert_eq!(pd.data[31], (31 << 21) | LEAF | PTE_PS);
        assert_eq!(pd.data[32], 0, "nothing mapped past the end of RAM");
        let pt = pages.last().unwrap();
        assert_eq!(pt.data[0], abi::DOORBELL_GPA | LEAF);
        // The prelinked slots point at empty tables of their own.
        let pml4 = &pages[0];
        let mut tables: Vec<u64> = PRELINKED_SLOTS.iter().map(|&s| pml4.data[s] & PTE_ADDR).collect();
        assert!(PRELINKED_SLOTS.iter().all(|&s| pml4.data[s] & TABLE == TABLE && s != index(abi::PHYS_BASE, 3)));
        assert!(tables.iter().all(|&t| pages.iter().any(|p| p.gpa == t && p.data.iter().all(|&e| e == 0))));
        tables.sort_unstable();
        tables.dedup();
        assert_eq!(tables.len(), PRELINKED_SLOTS.len());
    }
}
