/* Takes memory until the guest says no. argv[1]:
 *   grab   map anonymous memory in 256 KiB steps (backed at once) until
 *          mmap fails, gives it back, then grows the brk heap the same
 *          way until brk fails; prints the counts and the errno; exits 0
 *   touch  map 1 MiB chunks (backed lazily) until mmap fails or 4 GiB are
 *          mapped, then write to every page of them: more than the guest
 *          has, so the run cannot finish normally
 *   touch-child  the same in a child process; the parent reports how the
 *          child ended and exits 0 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define STEP (256 << 10)
#define CHUNK (1 << 20)
#define MAX_CHUNKS 4096

static void *chunks[MAX_CHUNKS];

int main(int argc, char **argv) {
    const char *how = argc > 1 ? argv[1] : "grab";
    if (!strcmp(how, "grab")) {
        static void *maps[4096];
        long n = 0;
        int map_err = 0;
        for (; n < 4096; n++) {
            maps[n] = mmap(0, STEP, n & 1 ? PROT_READ | PROT_WRITE : PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (maps[n] == MAP_FAILED) {
                map_err = errno;
                break;
            }
        }
        for (long i = 0; i < n; i++) munmap(maps[i], STEP);
        /* musl's sbrk refuses to grow the heap: use the raw syscall. */
        uintptr_t start = syscall(SYS_brk, 0), cur = start;
        long brks = 0;
        for (;;) {
            uintptr_t got = syscall(SYS_brk, cur + STEP);
            if (got != cur + STEP) break;
            memset((void *)cur, 0xab, STEP);
            cur = got;
            brks++;
        }
        printf("mmap_steps=%ld errno=%d %s\n", n, map_err, strerror(map_err));
        printf("brk_steps=%ld brk_failed=%d\n", brks, syscall(SYS_brk, 0) == (long)cur);
        /* Give it back and check the memory is usable again. */
        syscall(SYS_brk, start);
        void *p = mmap(0, 8 * STEP, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
        printf("after giving back: mmap %s\n", p == MAP_FAILED ? "failed" : "ok");
        return 0;
    }
    if (!strcmp(how, "touch-child")) {
        pid_t pid = fork();
        if (pid == 0) {
            char *args[] = {argv[0], "touch", 0};
            execv("/proc/self/exe", args);
            how = "touch"; /* no /proc: touch from this copy */
        } else {
            int st = 0;
            waitpid(pid, &st, 0);
            if (WIFSIGNALED(st))
                printf("child: signaled %d\n", WTERMSIG(st));
            else
                printf("child: exited %d\n", WEXITSTATUS(st));
            return 0;
        }
    }
    if (!strcmp(how, "touch")) {
        long n = 0;
        for (; n < MAX_CHUNKS; n++) {
            chunks[n] = mmap(0, CHUNK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (chunks[n] == MAP_FAILED) break;
        }
        printf("mapped %ld MiB, touching\n", n);
        fflush(stdout);
        long pages = 0;
        for (long i = 0; i < n; i++)
            for (long off = 0; off < CHUNK; off += 4096, pages++) ((volatile char *)chunks[i])[off] = 1;
        printf("touched %ld pages\n", pages);
        return 0;
    }
    return 2;
}
