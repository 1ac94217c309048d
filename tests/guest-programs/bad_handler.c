/* A signal handler (argv[1] "handler") or a sigreturn target ("return")
 * at a non-canonical address: the process dies of SIGSEGV, as on Linux. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <ucontext.h>

static void redirect(int sig, siginfo_t *si, void *ctx) {
    (void)sig;
    (void)si;
    ((ucontext_t *)ctx)->uc_mcontext.gregs[REG_RIP] = (greg_t)0xdead000000000000ULL;
}

int main(int argc, char **argv) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    if (argc > 1 && !strcmp(argv[1], "handler")) {
        sa.sa_handler = (void (*)(int))0xdead000000000000ULL;
    } else {
        sa.sa_sigaction = redirect;
        sa.sa_flags = SA_SIGINFO;
    }
    sigaction(SIGUSR1, &sa, 0);
    printf("raising\n");
    fflush(stdout);
    raise(SIGUSR1);
    printf("survived\n");
    return 0;
}
