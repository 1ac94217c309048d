/* A program with 6 MiB of read-only data in its file (a 0..255 pattern),
 * which the runtime maps in 2 MiB pages of the file's frames where the
 * host laid the file out 2 MiB-aligned. Whatever the page size, what the
 * program sees must be what it sees natively: the bytes, a page made
 * inaccessible and given back, a page unmapped, a write refused, and
 * forked children's views (one before the changes: its exit must leave
 * the file's frames alone). With the argument "meminfo" it first prints the
 * guest's FilePmdMapped (Linux's: page cache mapped in 2 MiB pages), and
 * again after the changes split some of those pages. */
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define BIG (6u << 20)

__asm__(".section .rodata\n"
        ".balign 4096\n"
        ".global big\n"
        "big:\n"
        ".rept 24576\n"
        ".byte 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31\n"
        ".byte 32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63\n"
        ".byte 64,65,66,67,68,69,70,71,72,73,74,75,76,77,78,79,80,81,82,83,84,85,86,87,88,89,90,91,92,93,94,95\n"
        ".byte 96,97,98,99,100,101,102,103,104,105,106,107,108,109,110,111,112,113,114,115,116,117,118,119,120,121,122,123,124,125,126,127\n"
        ".byte 128,129,130,131,132,133,134,135,136,137,138,139,140,141,142,143,144,145,146,147,148,149,150,151,152,153,154,155,156,157,158,159\n"
        ".byte 160,161,162,163,164,165,166,167,168,169,170,171,172,173,174,175,176,177,178,179,180,181,182,183,184,185,186,187,188,189,190,191\n"
        ".byte 192,193,194,195,196,197,198,199,200,201,202,203,204,205,206,207,208,209,210,211,212,213,214,215,216,217,218,219,220,221,222,223\n"
        ".byte 224,225,226,227,228,229,230,231,232,233,234,235,236,237,238,239,240,241,242,243,244,245,246,247,248,249,250,251,252,253,254,255\n"
        ".endr\n"
        ".text\n");
extern const unsigned char big[BIG];

static sigjmp_buf env;
static void on_fault(int sig) { siglongjmp(env, sig); }

/* Reads byte i of big: its value, or -signal if the read faulted. */
static int peek(unsigned i) {
    int sig = sigsetjmp(env, 1);
    if (sig) return -sig;
    return *(volatile const unsigned char *)&big[i];
}

static int poke(unsigned i) {
    int sig = sigsetjmp(env, 1);
    if (sig) return -sig;
    *(volatile unsigned char *)&big[i] = 1;
    return 0;
}

static unsigned long sum(void) {
    unsigned long s = 0;
    for (unsigned i = 0; i < BIG; i++) s += big[i] * (i % 7 + 1);
    return s;
}

static long file_pmd_kb(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "FilePmdMapped: %ld kB", &kb) == 1) break;
    if (f) fclose(f);
    return kb;
}

int main(int argc, char **argv) {
    int meminfo = argc > 1 && strcmp(argv[1], "meminfo") == 0;
    signal(SIGSEGV, on_fault);
    long before = file_pmd_kb();
    if (meminfo) printf("FilePmdMapped at start: %s\n", before >= 2048 ? "at least 2 MiB" : "less");
    printf("sum %lu\n", sum());
    /* A child forked while the pages are whole reads them too, and its
     * exit gives them up; memory taken after must not be those frames. */
    fflush(stdout);
    pid_t early = fork();
    if (early == 0) {
        printf("child before the changes: sum %lu\n", sum());
        fflush(stdout);
        _exit(0);
    }
    int status;
    waitpid(early, &status, 0);
    size_t more = 16u << 20;
    unsigned char *mem = mmap(0, more, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) return 4;
    memset(mem, 0xee, more);
    printf("child status %d; after 16 MiB more memory: sum %lu\n", status, sum());
    munmap(mem, more);
    unsigned long page = sysconf(_SC_PAGESIZE);
    /* A page in the middle of the data, and one 2 MiB further. */
    unsigned mid = (unsigned)((((unsigned long)big + BIG / 2) & ~(page - 1)) - (unsigned long)big);
    unsigned far = mid + (2u << 20);
    printf("byte %u: %d, write: %d\n", mid, peek(mid), poke(mid));
    if (mprotect((void *)&big[mid], page, PROT_NONE)) return 1;
    printf("made inaccessible: %d, the next page %d, the one before %d\n", peek(mid), peek(mid + page),
           peek(mid - 1));
    if (mprotect((void *)&big[mid], page, PROT_READ)) return 2;
    printf("given back: %d, sum %lu\n", peek(mid + 5), sum());
    if (munmap((void *)&big[far], page)) return 3;
    printf("unmapped: %d, around it %d %d\n", peek(far), peek(far - 1), peek(far + page));
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        printf("child: byte %u %d, unmapped %d, first %d, last %d\n", mid, peek(mid), peek(far), peek(0),
               peek(BIG - 1));
        fflush(stdout);
        _exit(0);
    }
    waitpid(child, &status, 0);
    printf("child status %d, parent's byte %d\n", status, peek(mid + 1));
    if (meminfo) {
        long after = file_pmd_kb();
        printf("FilePmdMapped after the changes: %s\n", after < before ? "less" : "not less");
    }
    return 0;
}
