/* Never finishes on its own; argv[1] says how:
 *   loop     a bare `jmp .` in the program
 *   alrm     raise(SIGALRM) whose handler spins
 *   usr1     kill(getpid(), SIGUSR1) whose handler spins
 *   nested   a SIGUSR1 handler that raises SIGUSR2 whose handler spins,
 *            with SA_NODEFER so the SIGUSR1 handler re-enters too
 *   sleep    nanosleep for ~300 years
 *   pause    pause() with no signal ever coming */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void spin(int sig) {
    (void)sig;
    for (;;) __asm__ volatile("" ::: "memory");
}

static void chain(int sig) {
    (void)sig;
    raise(SIGUSR2);
}

int main(int argc, char **argv) {
    const char *how = argc > 1 ? argv[1] : "loop";
    printf("spinning: %s\n", how);
    fflush(stdout);
    if (!strcmp(how, "loop")) {
        __asm__ volatile("1: jmp 1b");
    } else if (!strcmp(how, "alrm") || !strcmp(how, "usr1")) {
        int sig = how[0] == 'a' ? SIGALRM : SIGUSR1;
        struct sigaction sa = {0};
        sa.sa_handler = spin;
        sigaction(sig, &sa, 0);
        if (sig == SIGALRM)
            raise(sig);
        else
            kill(getpid(), sig);
    } else if (!strcmp(how, "nested")) {
        struct sigaction sa = {0};
        sa.sa_handler = chain;
        sa.sa_flags = SA_NODEFER;
        sigaction(SIGUSR1, &sa, 0);
        sa.sa_handler = spin;
        sigaction(SIGUSR2, &sa, 0);
        raise(SIGUSR1);
    } else if (!strcmp(how, "sleep")) {
        struct timespec ts = {10000000000L, 0};
        nanosleep(&ts, 0);
    } else if (!strcmp(how, "pause")) {
        pause();
    } else {
        return 2;
    }
    printf("returned\n");
    return 1;
}
