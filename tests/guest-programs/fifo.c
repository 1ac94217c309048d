#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
/* Named pipes: mkfifo, then two processes open it for reading and writing
 * (each open waits for the other side), in both orders. */
static void transfer(const char *path, int reader_first) {
    pid_t child = fork();
    if (child == 0) {
        if (reader_first) usleep(30000);
        int w = open(path, O_WRONLY);
        const char *msg = "through the fifo";
        write(w, msg, strlen(msg));
        close(w);
        _exit(0);
    }
    if (!reader_first) usleep(30000);
    int r = open(path, O_RDONLY);
    char buf[64] = {0};
    long n = 0, k;
    while ((k = read(r, buf + n, sizeof buf - 1 - n)) > 0) n += k;
    close(r);
    int st;
    waitpid(child, &st, 0);
    printf("%s first: read %ld \"%s\" eof=%s child=%d\n", reader_first ? "reader" : "writer", n, buf,
           k == 0 ? "yes" : "no", WEXITSTATUS(st));
}

int main(void) {
    char path[64];
    snprintf(path, sizeof path, "/tmp/fifo-test-%d", (int)getpid());
    printf("mkfifo: %d\n", mkfifo(path, 0600));
    struct stat st;
    stat(path, &st);
    printf("stat: fifo=%s mode=%o\n", S_ISFIFO(st.st_mode) ? "yes" : "no", (unsigned)(st.st_mode & 0777));
    int again = mkfifo(path, 0600);
    printf("again: %d %s\n", again, again < 0 && errno == EEXIST ? "EEXIST" : "?");
    int w = open(path, O_WRONLY | O_NONBLOCK);
    printf("nonblocking writer without reader: %d %s\n", w, w < 0 && errno == ENXIO ? "ENXIO" : "?");
    int r = open(path, O_RDONLY | O_NONBLOCK);
    char c;
    long n = read(r, &c, 1);
    printf("nonblocking reader: open=%s read=%ld\n", r >= 0 ? "yes" : "no", n);
    close(r);
    transfer(path, 1);
    transfer(path, 0);
    printf("unlink: %d\n", unlink(path));
    return 0;
}
