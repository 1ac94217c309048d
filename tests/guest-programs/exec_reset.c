/* What an execve resets, as on Linux: the alternate signal stack (the new
   program's SA_ONSTACK handler runs on its own stack, not at an address
   of the old program's), while ignored signals and the signal mask stay.
   The parent sets up an alternate stack, ignores SIGUSR2 and blocks
   SIGWINCH, then forks a child that execs this program again ("child"). */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile int handled;
static void on_usr1(int sig) {
    (void)sig;
    handled = 1;
}

static int child(void) {
    stack_t old;
    sigaltstack(NULL, &old);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_ONSTACK;
    sigaction(SIGUSR1, &sa, NULL);
    raise(SIGUSR1);
    struct sigaction usr2;
    sigaction(SIGUSR2, NULL, &usr2);
    sigset_t mask;
    sigprocmask(SIG_BLOCK, NULL, &mask);
    printf("child: alternate stack %s, handler ran %d, SIGUSR2 %s, SIGWINCH %s\n",
           old.ss_flags & SS_DISABLE ? "none" : "inherited", handled,
           usr2.sa_handler == SIG_IGN ? "ignored" : "default", sigismember(&mask, SIGWINCH) ? "blocked" : "open");
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "child") == 0) return child();
    stack_t ss = {.ss_sp = malloc(1 << 16), .ss_size = 1 << 16, .ss_flags = 0};
    sigaltstack(&ss, NULL);
    signal(SIGUSR2, SIG_IGN);
    sigset_t winch;
    sigemptyset(&winch);
    sigaddset(&winch, SIGWINCH);
    sigprocmask(SIG_BLOCK, &winch, NULL);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/proc/self/exe", argv[0], "child", (char *)NULL);
        _exit(127);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    printf("parent: child %s\n", WIFEXITED(st) && WEXITSTATUS(st) == 0 ? "exited 0"
                                 : WIFSIGNALED(st)                     ? "killed by a signal"
                                                                       : "failed");
    return 0;
}
