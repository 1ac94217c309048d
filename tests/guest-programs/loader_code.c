/* What glibc's dynamic loader learnt from CPUID, and whether its code in
 * memory is its file's (tests/cpuid.rs): an entry snapshot rewrites the
 * loader's `cpuid` sites too, which must change nothing it computes.
 *
 * Prints the cache and CPU figures glibc derives from CPUID (sysconf's
 * cache sizes, __builtin_cpu_supports), then "loader code: N bytes
 * differ from its file" for the loader's executable segments. */
#define _GNU_SOURCE
#include <link.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static long differ = -1;

static int visit(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    (void)data;
    if (!strstr(info->dlpi_name, "ld-linux"))
        return 0;
    FILE *f = fopen(info->dlpi_name, "rb");
    if (!f)
        return 0;
    differ = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
            continue;
        const unsigned char *mem = (const unsigned char *)(info->dlpi_addr + ph->p_vaddr);
        unsigned char buf[4096];
        for (size_t done = 0; done < ph->p_filesz;) {
            size_t n = ph->p_filesz - done < sizeof buf ? ph->p_filesz - done : sizeof buf;
            if (fseek(f, (long)(ph->p_offset + done), SEEK_SET) != 0 || fread(buf, 1, n, f) != n)
                return differ = -2, 1;
            for (size_t k = 0; k < n; k++)
                differ += buf[k] != mem[done + k];
            done += n;
        }
    }
    fclose(f);
    return 1;
}

int main(void) {
    printf("L1d %ld/%ld, L2 %ld, L3 %ld\n", sysconf(_SC_LEVEL1_DCACHE_SIZE), sysconf(_SC_LEVEL1_DCACHE_LINESIZE),
           sysconf(_SC_LEVEL2_CACHE_SIZE), sysconf(_SC_LEVEL3_CACHE_SIZE));
    __builtin_cpu_init();
    printf("sse4.2 %d avx %d avx2 %d avx512f %d bmi2 %d\n", !!__builtin_cpu_supports("sse4.2"),
           !!__builtin_cpu_supports("avx"), !!__builtin_cpu_supports("avx2"), !!__builtin_cpu_supports("avx512f"),
           !!__builtin_cpu_supports("bmi2"));
    dl_iterate_phdr(visit, NULL);
    printf("loader code: %ld bytes differ from its file\n", differ);
    return 0;
}
