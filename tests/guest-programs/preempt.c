/* Preemption: a thread spins without system calls until a flag is set;
 * the thread that sets it runs only if the spinner's time slice ends.
 * Then two processes, one spinning, the other writing: both finish. */
#include <pthread.h>
#include <signal.h>
#include <sys/time.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile int flag;
static volatile sig_atomic_t alarmed;
static void on_alarm(int sig) { (void)sig; alarmed = 1; }
static volatile unsigned long spins;

static void *spinner(void *arg) {
    (void)arg;
    while (!flag) spins++;
    return NULL;
}

int main(void) {
    pthread_t t;
    pthread_create(&t, NULL, spinner, NULL);
    usleep(1000); /* the spinner runs; this thread waits for its turn */
    flag = 1;
    pthread_join(t, NULL);
    printf("threads: flag seen\n");
    fflush(stdout);

    int fds[2];
    pipe(fds);
    pid_t child = fork();
    if (child == 0) {
        /* Spins until the parent's byte arrives in the pipe it cannot read
           without a system call: it polls with a non-blocking check only
           every 2^24 iterations, so mostly it runs on. */
        close(fds[1]);
        for (;;) {
            for (volatile unsigned long i = 0; i < (1UL << 24); i++) {
            }
            char c;
            struct timeval tv = {0, 0};
            fd_set r;
            FD_ZERO(&r);
            FD_SET(fds[0], &r);
            if (select(fds[0] + 1, &r, NULL, NULL, &tv) > 0 && read(fds[0], &c, 1) == 1) _exit(0);
        }
    }
    close(fds[0]);
    usleep(1000);
    write(fds[1], "x", 1);
    int status;
    waitpid(child, &status, 0);
    printf("processes: child exited %d\n", WEXITSTATUS(status));

    /* A timer signal reaches a program that spins without system calls. */
    signal(SIGALRM, on_alarm);
    struct itimerval it = {{0, 0}, {0, 20000}};
    setitimer(ITIMER_REAL, &it, NULL);
    while (!alarmed) spins++;
    printf("alarm: delivered while spinning\n");
    return 0;
}
