#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>
#include <sys/time.h>
#include <sys/utsname.h>
/* Prints what the system tells a program: time, identity, randomness, page size. */
int main(void) {
    struct timespec rt, m1, m2;
    clock_gettime(CLOCK_REALTIME, &rt);
    clock_gettime(CLOCK_MONOTONIC, &m1);
    struct timespec req = {0, 20 * 1000 * 1000};
    nanosleep(&req, NULL);
    clock_gettime(CLOCK_MONOTONIC, &m2);
    long slept_ms = (m2.tv_sec - m1.tv_sec) * 1000 + (m2.tv_nsec - m1.tv_nsec) / 1000000;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct utsname u;
    uname(&u);
    unsigned char r1[16], r2[16];
    long g1 = getrandom(r1, sizeof r1, 0), g2 = getrandom(r2, sizeof r2, 0);
    printf("realtime=%lld\n", (long long)rt.tv_sec);
    printf("gettimeofday=%lld\n", (long long)tv.tv_sec);
    printf("time=%lld\n", (long long)time(NULL));
    printf("slept_ms=%ld\n", slept_ms);
    printf("sysname=%s machine=%s\n", u.sysname, u.machine);
    printf("uid=%d euid=%d gid=%d pid_positive=%d\n", (int)getuid(), (int)geteuid(), (int)getgid(), getpid() > 0);
    printf("getrandom=%ld,%ld differ=%d\n", g1, g2, memcmp(r1, r2, 16) != 0);
    printf("pagesize=%ld\n", sysconf(_SC_PAGESIZE));
    printf("isatty=%d\n", isatty(1));
    return 0;
}
