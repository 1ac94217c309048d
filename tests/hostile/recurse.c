/* Overflows the stack by unbounded recursion. argv[1]:
 *   plain    no handler: the program dies of SIGSEGV
 *   handler  with a SIGSEGV handler but no alternate stack: the handler
 *            cannot run on the full stack, so the program still dies of
 *            SIGSEGV
 *   altstack with a SIGSEGV handler on a sigaltstack: the handler runs and
 *            exits 42 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#pragma GCC diagnostic ignored "-Winfinite-recursion"

static long depth;

static long recurse(long n) {
    volatile char frame[512];
    frame[0] = (char)n;
    depth = n;
    return recurse(n + 1) + frame[0]; /* not a tail call */
}

static void on_segv(int sig) {
    (void)sig;
    static const char msg[] = "caught SIGSEGV\n";
    write(1, msg, sizeof msg - 1);
    _exit(42);
}

int main(int argc, char **argv) {
    const char *how = argc > 1 ? argv[1] : "plain";
    if (strcmp(how, "plain")) {
        struct sigaction sa = {0};
        sa.sa_handler = on_segv;
        if (!strcmp(how, "altstack")) {
            static char alt[65536];
            stack_t ss = {.ss_sp = alt, .ss_size = sizeof alt};
            if (sigaltstack(&ss, 0)) {
                perror("sigaltstack");
                return 3;
            }
            sa.sa_flags = SA_ONSTACK;
        }
        sigaction(SIGSEGV, &sa, 0);
    }
    printf("recursing\n");
    fflush(stdout);
    return (int)recurse(0);
}
