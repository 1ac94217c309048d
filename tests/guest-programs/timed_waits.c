/* Timed waits that time out, with 1, 2 and 8 threads in the process (the
 * others blocked or runnable): every wait must return 0 at its timeout.
 * Prints one line per case; the test compares the output with a native
 * run of the same binary. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

#define TIMEOUT_MS 15

static int idle[2];     /* a pipe that never becomes readable */
static int wakeup[2];   /* blocked helpers read from it */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int released;
static atomic_int stop;

/* Blocked helpers: in pthread_cond_wait (a futex) or in read on a pipe. */
static void *blocked_helper(void *arg) {
    if ((long)arg % 2 == 0) {
        pthread_mutex_lock(&mu);
        while (!released) pthread_cond_wait(&cv, &mu);
        pthread_mutex_unlock(&mu);
    } else {
        char c;
        while (read(wakeup[0], &c, 1) < 0 && errno == EINTR) {}
    }
    return 0;
}

/* Runnable helpers: spin, yielding the CPU. */
static void *runnable_helper(void *arg) {
    (void)arg;
    while (!atomic_load(&stop)) sched_yield();
    return 0;
}

static int one_wait(const char *kind, int ep) {
    struct timespec ts = {0, TIMEOUT_MS * 1000000L};
    struct timeval tv = {0, TIMEOUT_MS * 1000L};
    struct pollfd pfd = {.fd = idle[0], .events = POLLIN};
    struct epoll_event ev;
    fd_set rd;
    sigset_t none;
    sigemptyset(&none);
    FD_ZERO(&rd);
    FD_SET(idle[0], &rd);
    if (!strcmp(kind, "epoll_wait")) return epoll_wait(ep, &ev, 1, TIMEOUT_MS);
    if (!strcmp(kind, "epoll_pwait")) return epoll_pwait(ep, &ev, 1, TIMEOUT_MS, &none);
    if (!strcmp(kind, "poll")) return poll(&pfd, 1, TIMEOUT_MS);
    if (!strcmp(kind, "ppoll")) return ppoll(&pfd, 1, &ts, &none);
    if (!strcmp(kind, "select")) return select(idle[0] + 1, &rd, 0, 0, &tv);
    if (!strcmp(kind, "pselect")) return pselect(idle[0] + 1, &rd, 0, 0, &ts, &none);
    if (!strcmp(kind, "nanosleep")) return nanosleep(&ts, 0);
    if (!strcmp(kind, "cond_timedwait")) {
        struct timespec abs;
        clock_gettime(CLOCK_REALTIME, &abs);
        abs.tv_nsec += TIMEOUT_MS * 1000000L;
        if (abs.tv_nsec >= 1000000000L) { abs.tv_sec++; abs.tv_nsec -= 1000000000L; }
        pthread_mutex_lock(&mu);
        int r = pthread_cond_timedwait(&cv, &mu, &abs);
        pthread_mutex_unlock(&mu);
        return r;
    }
    return -2;
}

static const char *kinds[] = {"epoll_wait", "epoll_pwait", "poll", "ppoll", "select", "pselect",
                              "nanosleep", "cond_timedwait"};

static void round_with(int threads, int runnable, int ep) {
    pthread_t t[8];
    int extra = threads - 1;
    released = 0;
    atomic_store(&stop, 0);
    for (int i = 0; i < extra; i++)
        pthread_create(&t[i], 0, runnable ? runnable_helper : blocked_helper, (void *)(long)i);
    /* Let the blocked helpers reach their waits. */
    usleep(2000);
    for (unsigned k = 0; k < sizeof kinds / sizeof *kinds; k++) {
        errno = 0;
        int r = one_wait(kinds[k], ep);
        printf("%s threads=%d %s ret=%d errno=%d\n", kinds[k], threads,
               extra == 0 ? "alone" : runnable ? "runnable" : "blocked", r, r < 0 ? errno : 0);
    }
    atomic_store(&stop, 1);
    pthread_mutex_lock(&mu);
    released = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < extra; i++) write(wakeup[1], "x", 1);
    for (int i = 0; i < extra; i++) pthread_join(t[i], 0);
}

/* A wait that another thread's activity keeps waking (events on another
 * pipe) must still end at its own timeout, not start over each time: the
 * writer stops when the wait is over or after WRITES rounds (much longer
 * than the timeout, natively and in the guest). */
#define WRITES 100000
static atomic_int poll_done;
static int busy[2];
static void *writer(void *arg) {
    (void)arg;
    int n = 0;
    while (!atomic_load(&poll_done) && n < WRITES) {
        char c = 'x';
        write(busy[1], &c, 1);
        read(busy[0], &c, 1);
        sched_yield();
        n++;
    }
    return (void *)(long)(n < WRITES);
}

static void woken_wait(const char *kind, int ep) {
    pthread_t w;
    void *res;
    atomic_store(&poll_done, 0);
    pthread_create(&w, 0, writer, 0);
    int r = one_wait(kind, ep);
    atomic_store(&poll_done, 1);
    pthread_join(w, &res);
    printf("%s under activity ret=%d timed_out_first=%ld\n", kind, r, (long)res);
}

int main(void) {
    setvbuf(stdout, 0, _IOLBF, 0);
    if (pipe(idle) || pipe(wakeup) || pipe(busy)) return 1;
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN};
    epoll_ctl(ep, EPOLL_CTL_ADD, idle[0], &ev);
    round_with(1, 0, ep);
    for (int runnable = 0; runnable < 2; runnable++) {
        round_with(2, runnable, ep);
        round_with(8, runnable, ep);
    }
    for (int k = 0; k < 6; k++) woken_wait(kinds[k], ep);
    return 0;
}
