/* Two processes that each keep their own values in the vector registers
 * a task switch must save (AVX-512's zmm16 and zmm1's upper half, and the
 * opmask k1; with only AVX, ymm1's upper half) while they spin without a
 * system call, so that the only switches between them are preemptions.
 * Prints, for the parent and the child, whether every check found its own
 * values. Then the same across signal handlers that set those registers
 * to values of their own (a 1 ms interval timer), which their frames must
 * undo. Prints "vector state: skip" where the CPU or OS lacks AVX. */
#include <cpuid.h>
#include <signal.h>
#include <stdint.h>
#include <sys/auxv.h>
#include <sys/time.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static unsigned xcr0(void) {
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return lo;
}

/* 2: AVX-512 (F, with its three state components enabled); 1: AVX; 0. */
static int level(void) {
    unsigned a, b, c, d;
    __cpuid(1, a, b, c, d);
    if (!(c & (1u << 27)) || !(c & (1u << 28))) return 0;
    if ((xcr0() & 0x6) != 0x6) return 0;
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & (1u << 16)) && (xcr0() & 0xe6) == 0xe6) return 2;
    return 1;
}

static void set(int lvl, uint64_t v) {
    if (lvl == 2) {
        __asm__ volatile("vpbroadcastq %0, %%zmm16\n\t"
                         "vpbroadcastq %0, %%zmm1\n\t"
                         "kmovq %0, %%k1" ::"r"(v));
    } else {
        __asm__ volatile("vmovq %0, %%xmm1\n\tvpbroadcastq %%xmm1, %%ymm1" ::"r"(v));
    }
}

/* Mismatches found in `rounds` checks. */
static long check(int lvl, uint64_t v, long rounds) {
    long bad = 0;
    uint64_t z16[8] __attribute__((aligned(64))), z1[8] __attribute__((aligned(64))), k;
    for (long r = 0; r < rounds; r++) {
        if (lvl == 2) {
            __asm__ volatile("vmovdqu64 %%zmm16, %0\n\tvmovdqu64 %%zmm1, %1\n\tkmovq %%k1, %2"
                             : "=m"(z16), "=m"(z1), "=r"(k));
            for (int i = 0; i < 8; i++) bad += (z16[i] != v) + (z1[i] != v);
            bad += k != v;
        } else {
            __asm__ volatile("vmovdqu %%ymm1, %0" : "=m"(*(uint64_t(*)[4])z1));
            for (int i = 0; i < 4; i++) bad += z1[i] != v;
        }
    }
    return bad;
}

static int handler_level;
static volatile long handled;

static void on_alarm(int sig) {
    (void)sig;
    set(handler_level, 0x3333333333333333ull);
    handled++;
}

/* The main program's values survive `n` signal handlers. */
static int across_signals(int lvl, long n) {
    handler_level = lvl;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {{0, 1000}, {0, 1000}};
    setitimer(ITIMER_REAL, &it, NULL);
    uint64_t v = 0x4444444444444444ull;
    set(lvl, v);
    long bad = 0;
    while (handled < n) bad += check(lvl, v, 1000);
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    return bad == 0;
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    int lvl = level();
    if (lvl == 0) {
        puts("vector state: skip");
        return 0;
    }
    /* Long enough to be preempted many times (~0.2 s each natively). */
    const long rounds = 20000000;
    pid_t child = fork();
    uint64_t v = child == 0 ? 0x1111111111111111ull : 0x2222222222222222ull;
    set(lvl, v);
    long bad = check(lvl, v, rounds);
    if (child == 0) {
        printf("child kept its vector state: %s\n", bad ? "no" : "yes");
        return 0;
    }
    int st;
    waitpid(child, &st, 0);
    printf("parent kept its vector state: %s\n", bad ? "no" : "yes");
    printf("kept across signal handlers: %s\n", across_signals(lvl, 50) ? "yes" : "no");
    /* The kernel says how much stack a signal frame needs (51 is
       AT_MINSIGSTKSZ): with the XSAVE image, more than the old 2048. */
    printf("AT_MINSIGSTKSZ above 2048: %s\n", getauxval(51) > 2048 ? "yes" : "no");
    return 0;
}
