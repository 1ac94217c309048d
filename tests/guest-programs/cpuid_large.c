/* cpuid.c with more than 4 MiB of code (tests/cpuid.rs): a file that
 * large has its `cpuid` sites rewritten from its second start in a VM,
 * not its first, since scanning its code costs more than the probes it
 * saves. The filler is never run. */
#include "cpuid.c"

__asm__(".text\n"
        ".globl large_filler\n"
        "large_filler:\n"
        ".fill 5242880, 1, 0xcc\n");
