/* Jumps into the guest runtime's private code at CPL3. argv[1]:
 *   entry        the runtime's _start, with RDI = the boot info (a restart)
 *   entry-junk   the runtime's _start, with RDI = junk
 *   text OFF     RUNTIME_VA + OFF (hex), with junk in every register
 *   stub N       exception stub N, as if the CPU had delivered vector N
 *   syscall-exit the syscall entry with RAX = exit_group(7), RCX = a junk
 *                return address and RSP = junk: the entry takes it for a
 *                `syscall` instruction, so the program exits 7
 *   syscall-ret  the syscall entry with RAX = getpid, RCX = 0, RSP = junk:
 *                the "return" lands on address 0
 *   syscall-into the syscall entry with RAX = getpid and RCX = the entry
 *                itself / the runtime's _start: "returns" into the runtime
 *   syscall-rsp  the syscall entry with RSP = the runtime's own stack top
 * The addresses come from the runtime's header at RUNTIME_VA. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PHYS_BASE 0x7f0000000000UL
#define RUNTIME_VA (PHYS_BASE + 0x200000UL)
#define BOOT_INFO_VA (PHYS_BASE + 0xa000UL)

struct header { uint64_t magic; uint32_t abi, pad; uint64_t entry, syscall_entry, stubs, stride, stack_top, text_end, image_end; };

static void go(uint64_t rip, uint64_t rax, uint64_t rcx, uint64_t rdi, uint64_t rsp) {
    __asm__ volatile(
        "mov %[rsp], %%r8\n"
        "mov %[rip], %%r9\n"
        "mov $0xdead0000dead0000, %%rbx\n"
        "mov %%rbx, %%rbp\n"
        "mov %%rbx, %%rsi\n"
        "mov %%rbx, %%rdx\n"
        "mov %%rbx, %%r10\n"
        "mov $0x202, %%r11\n"
        "mov %%rbx, %%r12\n"
        "mov %%rbx, %%r13\n"
        "mov %%rbx, %%r14\n"
        "mov %%rbx, %%r15\n"
        "mov %%r8, %%rsp\n"
        "jmp *%%r9\n"
        :
        : [rip] "r"(rip), [rsp] "r"(rsp), "a"(rax), "c"(rcx), "D"(rdi)
        : "memory");
    __builtin_unreachable();
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *how = argv[1];
    struct header h = *(const struct header *)RUNTIME_VA;
    printf("magic ok=%d text=[%#lx, %#lx)\n", h.magic == 0x3130545242535648UL, (unsigned long)RUNTIME_VA,
           (unsigned long)h.text_end);
    fflush(stdout);
    const uint64_t junk = 0xdead0000dead0000UL;
    if (!strcmp(how, "entry")) go(h.entry, 0, 0, BOOT_INFO_VA, h.stack_top);
    if (!strcmp(how, "entry-junk")) go(h.entry, junk, junk, junk, junk);
    if (!strcmp(how, "text") && argc > 2) go(RUNTIME_VA + strtoull(argv[2], 0, 16), junk, junk, junk, junk);
    if (!strcmp(how, "stub") && argc > 2) go(h.stubs + h.stride * strtoull(argv[2], 0, 10), junk, junk, junk, junk);
    if (!strcmp(how, "syscall-exit")) go(h.syscall_entry, 231, junk, 7, junk);
    if (!strcmp(how, "syscall-ret")) go(h.syscall_entry, 39, 0, 0, junk);
    if (!strcmp(how, "syscall-into")) go(h.syscall_entry, 39, h.syscall_entry, 0, junk);
    if (!strcmp(how, "syscall-into-entry")) go(h.syscall_entry, 39, h.entry, BOOT_INFO_VA, junk);
    if (!strcmp(how, "syscall-rsp")) go(h.syscall_entry, 39, 0, 0, h.stack_top);
    return 2;
}
