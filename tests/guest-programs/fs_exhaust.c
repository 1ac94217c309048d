/* Runs the guest's memory out through its filesystem: file data in /tmp,
 * then files with long names, nested directories and pipes with the
 * memory all but gone. Each step must fail with an errno, not end the run;
 * after freeing the data everything works again. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHUNK (1 << 20)
#define MAX_TRIES 200000

static char chunk[CHUNK];
static char name[512];

/* Out of memory for an entry or a descriptor is ENOSPC or ENOMEM
 * depending on which part of the call runs out first: both are "full". */
static const char *full(int e) {
    return e == ENOSPC || e == ENOMEM ? "full" : strerror(e);
}

static const char *err(int e) {
    switch (e) {
    case ENOSPC: return "ENOSPC";
    case ENOMEM: return "ENOMEM";
    case 0: return "none";
    default: return strerror(e);
    }
}

static void long_name(int i) {
    memset(name, 0, sizeof name);
    int n = snprintf(name, sizeof name, "/tmp/files/%d-", i);
    memset(name + n, 'n', 240);
}

int main(void) {
    setvbuf(stdout, 0, _IONBF, 0);
    memset(chunk, 'x', sizeof chunk);
    mkdir("/tmp/files", 0755);

    /* 1. File data until the space runs out. */
    int fd = open("/tmp/big", O_CREAT | O_WRONLY | O_TRUNC, 0644);
    long total = 0;
    int e = 0;
    for (int i = 0; i < 4096; i++) {
        ssize_t n = write(fd, chunk, CHUNK);
        if (n < 0) { e = errno; break; }
        total += n;
    }
    close(fd);
    printf("data: %s (%s MiB)\n", err(e), total > (16 << 20) ? "many" : "few");

    /* 2. Files with long names until the runtime's memory runs out. */
    int files = 0;
    e = 0;
    for (; files < MAX_TRIES; files++) {
        long_name(files);
        int f = open(name, O_CREAT | O_WRONLY, 0644);
        if (f < 0) { e = errno; break; }
        close(f);
    }
    printf("files: %s (%s)\n", full(e), files > 100 ? "many" : "few");
    /* Deleting them gives their memory back to new entries. */
    for (int i = 0; i < files; i++) {
        long_name(i);
        unlink(name);
    }

    /* 3. Nested directories. */
    chdir("/tmp");
    int depth = 0;
    e = 0;
    for (; depth < MAX_TRIES; depth++) {
        if (mkdir("dddddddddddddddddddddddddddddddddddddddddddddddddd", 0755)) { e = errno; break; }
        if (chdir("dddddddddddddddddddddddddddddddddddddddddddddddddd")) { e = errno; break; }
    }
    printf("dirs: %s (%s)\n", full(e), depth > 100 ? "many" : "few");

    /* 4. Pipes. */
    int pipes = 0, p[2];
    e = 0;
    for (; pipes < MAX_TRIES; pipes++) {
        if (pipe(p)) { e = errno; break; }
    }
    printf("pipes: %s\n", full(e));
    for (int i = 3; i < 3 + 2 * pipes; i++) close(i);

    /* 5. Free the data: creating files and writing works again. */
    chdir("/");
    unlink("/tmp/big");
    fd = open("/tmp/after", O_CREAT | O_WRONLY, 0644);
    ssize_t n = fd < 0 ? -1 : write(fd, chunk, CHUNK);
    printf("after: fd=%s write=%ld\n", fd < 0 ? err(errno) : "ok", (long)n);
    return 0;
}
