#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
/* Maps four 12 MiB regions (each fits on its own) and touches them all.
   With argv[1] == "child" a forked child does it and the parent reports
   how the child ended. */
static int eat(void) {
    char *a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = mmap(0, 12 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (a[i] == MAP_FAILED) { printf("mmap %d failed\n", i); return 2; }
    }
    for (int i = 0; i < 4; i++) { memset(a[i], 1, 12 << 20); printf("touched %d\n", i); fflush(stdout); }
    return 0;
}
int main(int argc, char **argv) {
    printf("start\n");
    fflush(stdout);
    if (argc > 1) {
        pid_t c = fork();
        if (c == 0) _exit(eat());
        int st;
        waitpid(c, &st, 0);
        printf("child signaled=%d sig=%d\n", WIFSIGNALED(st), WIFSIGNALED(st) ? WTERMSIG(st) : 0);
        return 0;
    }
    return eat();
}
