#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
/* Prints the average cost, in nanoseconds, of clock_gettime(CLOCK_MONOTONIC)
   through libc (the vDSO where there is one), of the same call made as a
   system call, and of gettimeofday through the legacy vsyscall page (or
   -1 when argv[1] is not "vsyscall": natively that page may be absent). */
static double per_call(struct timespec a, struct timespec b, long n) {
    return ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n;
}

int main(int argc, char **argv) {
    struct timespec a, b, t;
    long n = 200000;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) clock_gettime(CLOCK_MONOTONIC, &t);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double vdso = per_call(a, b, n);
    long m = 20000;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < m; i++) syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &t);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double sys = per_call(a, b, m);
    double vsys = -1;
    if (argc > 1) {
        int (*gtod)(void *, void *) = (int (*)(void *, void *))0xffffffffff600000UL;
        char tv[16];
        clock_gettime(CLOCK_MONOTONIC, &a);
        for (long i = 0; i < n; i++) gtod(tv, NULL);
        clock_gettime(CLOCK_MONOTONIC, &b);
        vsys = per_call(a, b, n);
    }
    printf("%.1f %.1f %.1f\n", vdso, sys, vsys);
    return 0;
}
