/* glibc's pthread_cancel of a thread blocked in a system call
 * (tests/processes.rs, run natively and in the guest): glibc sends
 * SIGCANCEL with tgkill and its handler acts only on a siginfo that says
 * SI_TKILL from its own process; the thread runs its cleanup handler and
 * ends as PTHREAD_CANCELED. (With every siginfo zero, the signal was
 * ignored and the join waited forever.) Then the same for a thread that
 * waits on a condition variable. */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t c = PTHREAD_COND_INITIALIZER;

static void cleanup(void *what) { printf("cleanup: %s\n", (const char *)what); }

static void *sleeper(void *a) {
    (void)a;
    pthread_cleanup_push(cleanup, "sleeper");
    for (;;) sleep(10);
    pthread_cleanup_pop(0);
    return NULL;
}

static void unlock(void *a) {
    (void)a;
    pthread_mutex_unlock(&m);
}

static void *waiter(void *a) {
    (void)a;
    pthread_mutex_lock(&m);
    pthread_cleanup_push(unlock, NULL);
    pthread_cleanup_push(cleanup, "waiter");
    for (;;) pthread_cond_wait(&c, &m);
    pthread_cleanup_pop(0);
    pthread_cleanup_pop(0);
    return NULL;
}

static void cancel(void *(*fn)(void *), const char *name) {
    pthread_t t;
    void *r = NULL;
    pthread_create(&t, NULL, fn, NULL);
    usleep(50000);
    int c1 = pthread_cancel(t);
    int j = pthread_join(t, &r);
    printf("%s: cancel %d join %d canceled %d\n", name, c1, j, r == PTHREAD_CANCELED);
}

int main(void) {
    cancel(sleeper, "sleeper");
    cancel(waiter, "waiter");
    /* The mutex is free again (the waiter's cleanup unlocked it). */
    int r = pthread_mutex_trylock(&m);
    printf("mutex free: %d\n", r == 0);
    return 0;
}
