/* Forks children that block forever until fork fails, then reports how
 * many forks succeeded and the error: "forks=N error=<strerror>". Exits 0
 * when fork failed, 1 if it never did (up to a safety cap). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(void) {
    int forks = 0;
    for (; forks < 100000; forks++) {
        pid_t pid = fork();
        if (pid == 0) {
            for (;;) pause();
        }
        if (pid < 0) {
            int err = errno;
            printf("forks=%d error=%s errno=%d\n", forks, strerror(err), err);
            return 0;
        }
    }
    printf("forks=%d never failed\n", forks);
    return 1;
}
