/* alarm, setitimer and getitimer (ITIMER_REAL), as judge harnesses and
 * in-program time limits use them: SIGALRM wakes a blocked pause/read or
 * sleep, interval timers repeat, alarm(0) cancels and returns the seconds
 * that were left, a child does not inherit its parent's timer, and the
 * default action of SIGALRM ends the process. Prints what a program can
 * rely on (no times): the test compares it with a native run. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t alarms;
static void on_alrm(int sig) { (void)sig; alarms++; }

int main(void) {
    setvbuf(stdout, 0, _IOLBF, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alrm;
    sigaction(SIGALRM, &sa, 0);

    /* alarm wakes pause(). */
    printf("alarm(1) first: %u\n", alarm(1));
    pause();
    printf("after pause: alarms=%d\n", alarms);

    /* alarm(0) cancels and says what was left (rounded up). */
    alarm(5);
    unsigned left = alarm(0);
    printf("cancel: left=%u\n", left);

    /* A one-shot 50 ms timer interrupts a blocking read of a pipe. */
    int p[2];
    if (pipe(p)) return 1;
    struct itimerval it = {.it_value = {0, 50000}};
    setitimer(ITIMER_REAL, &it, 0);
    char c;
    errno = 0;
    long r = read(p[0], &c, 1);
    printf("read: %ld %s alarms=%d\n", r, errno == EINTR ? "EINTR" : "other", alarms);

    /* An interval timer fires again and again; getitimer reports it. */
    struct itimerval iv = {.it_interval = {0, 20000}, .it_value = {0, 20000}}, got;
    setitimer(ITIMER_REAL, &iv, 0);
    getitimer(ITIMER_REAL, &got);
    printf("interval: %ld us, value set: %d\n", (long)got.it_interval.tv_usec, got.it_value.tv_sec > 0 || got.it_value.tv_usec > 0);
    int before = alarms;
    while (alarms < before + 3) pause();
    struct itimerval off = {0}, old;
    setitimer(ITIMER_REAL, &off, &old);
    printf("repeated: %d, old interval %ld us\n", alarms - before >= 3, (long)old.it_interval.tv_usec);
    getitimer(ITIMER_REAL, &got);
    printf("stopped: %ld %ld\n", (long)got.it_value.tv_sec, (long)got.it_value.tv_usec);

    /* Bad arguments. */
    errno = 0;
    r = setitimer(99, &it, 0);
    printf("bad which: %ld %s\n", r, errno == EINVAL ? "EINVAL" : "other");
    struct itimerval bad = {.it_value = {0, 1000000}};
    errno = 0;
    r = setitimer(ITIMER_REAL, &bad, 0);
    printf("bad usec: %ld %s\n", r, errno == EINVAL ? "EINVAL" : "other");

    /* A child does not inherit the timer; SIGALRM's default action ends a
     * process. */
    alarm(10);
    pid_t child = fork();
    if (child == 0) {
        printf("child: inherited %u\n", alarm(0));
        signal(SIGALRM, SIG_DFL);
        struct itimerval once = {.it_value = {0, 30000}};
        setitimer(ITIMER_REAL, &once, 0);
        for (;;) pause();
    }
    int status;
    waitpid(child, &status, 0);
    printf("child: signaled=%d sig=%d\n", WIFSIGNALED(status), WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    printf("parent: left>0=%d\n", alarm(0) > 0);
    return 0;
}
