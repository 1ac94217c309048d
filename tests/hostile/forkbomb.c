/* An exponential fork bomb: every process forks until fork fails, then
 * sleeps forever holding its slot. The first process reports the errno of
 * its first failed fork and exits 0 (its children die with the run). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(void) {
    pid_t root = getpid();
    long forks = 0;
    for (;;) {
        pid_t pid = fork();
        if (pid < 0) break;
        if (pid > 0) forks++;
        /* Parent and child both go on forking. */
    }
    int err = errno;
    if (getpid() == root) {
        printf("root: forks=%ld errno=%d %s\n", forks, err, strerror(err));
        return 0;
    }
    for (;;) pause();
}
