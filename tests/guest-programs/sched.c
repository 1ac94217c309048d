/* The scheduler calls, where privilege does not matter: the priority
   ranges of the policies, SCHED_OTHER with priority 0, an affinity with
   CPU 0, a time slice, ESRCH for a process that does not exist. (musl's
   sched_setscheduler and friends are stubs: the calls are made raw.) */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int main(void) {
    printf("priorities: other %d..%d, fifo %d..%d, rr %d..%d, bad policy %d\n", sched_get_priority_min(SCHED_OTHER),
           sched_get_priority_max(SCHED_OTHER), sched_get_priority_min(SCHED_FIFO), sched_get_priority_max(SCHED_FIFO),
           sched_get_priority_min(SCHED_RR), sched_get_priority_max(SCHED_RR), sched_get_priority_max(77));
    struct sched_param p = {0};
    int set = syscall(SYS_sched_setscheduler, 0, SCHED_OTHER, &p);
    int got = syscall(SYS_sched_getscheduler, 0);
    p.sched_priority = 7;
    int gp = syscall(SYS_sched_getparam, 0, &p);
    printf("setscheduler other %d, getscheduler %d, getparam %d priority %d\n", set, got, gp, p.sched_priority);
    cpu_set_t cpus;
    CPU_ZERO(&cpus);
    CPU_SET(0, &cpus);
    int aff = sched_setaffinity(0, sizeof cpus, &cpus);
    CPU_ZERO(&cpus);
    sched_getaffinity(0, sizeof cpus, &cpus);
    struct timespec ts = {-1, -1};
    int rr = sched_rr_get_interval(0, &ts);
    printf("setaffinity cpu 0: %d, cpu 0 in the mask: %d, rr_get_interval %d (%s)\n", aff, CPU_ISSET(0, &cpus), rr,
           ts.tv_sec >= 0 && ts.tv_nsec >= 0 ? "a time" : "none");
    errno = 0;
    int none = syscall(SYS_sched_getscheduler, 999999);
    printf("no such process: %d %s\n", none, errno == ESRCH ? "ESRCH" : strerror(errno));
    return 0;
}
