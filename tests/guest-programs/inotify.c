/* inotify as Linux reports it (tests/fs.rs runs this natively and in the
 * guest and compares): a watch on a fresh directory, one on a file in it
 * and one on a subdirectory see the events of creating, opening,
 * reading, writing, closing, changing, renaming, linking and removing
 * them, in order, with their names and the cookie a rename's two events
 * share; then the descriptor's own rules (a read too small for an event,
 * FIONREAD, poll, one-shot watches, the same watch twice, bad
 * arguments). Each event prints as "<watch> <MASK|...> [name] [cN]",
 * watches by role, cookies numbered in order of appearance. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int ifd;
static int wds[8];
static const char *roles[8];
static unsigned cookies[16];

static const char *role(int wd) {
    for (int i = 0; i < 8; i++)
        if (roles[i] && wds[i] == wd) return roles[i];
    return wd == -1 ? "queue" : "?";
}

static void watch(const char *name, const char *path, unsigned mask) {
    for (int i = 0; i < 8; i++)
        if (!roles[i]) {
            wds[i] = inotify_add_watch(ifd, path, mask);
            roles[i] = name;
            if (wds[i] < 0) printf("add_watch %s: errno %d\n", name, errno);
            return;
        }
}

static void print_mask(unsigned m) {
    static const struct { unsigned bit; const char *name; } names[] = {
        {IN_ACCESS, "ACCESS"}, {IN_MODIFY, "MODIFY"}, {IN_ATTRIB, "ATTRIB"}, {IN_CLOSE_WRITE, "CLOSE_WRITE"},
        {IN_CLOSE_NOWRITE, "CLOSE_NOWRITE"}, {IN_OPEN, "OPEN"}, {IN_MOVED_FROM, "MOVED_FROM"},
        {IN_MOVED_TO, "MOVED_TO"}, {IN_CREATE, "CREATE"}, {IN_DELETE, "DELETE"}, {IN_DELETE_SELF, "DELETE_SELF"},
        {IN_MOVE_SELF, "MOVE_SELF"}, {IN_Q_OVERFLOW, "Q_OVERFLOW"}, {IN_IGNORED, "IGNORED"}, {IN_ISDIR, "ISDIR"},
    };
    int first = 1;
    for (unsigned i = 0; i < sizeof names / sizeof names[0]; i++)
        if (m & names[i].bit) {
            printf("%s%s", first ? "" : "|", names[i].name);
            first = 0;
            m &= ~names[i].bit;
        }
    if (m) printf("|%#x", m);
}

/* Prints every queued event under a heading. */
static void drain(const char *step) {
    char buf[4096] __attribute__((aligned(8)));
    printf("%s:\n", step);
    for (;;) {
        ssize_t n = read(ifd, buf, sizeof buf);
        if (n < 0) {
            if (errno != EAGAIN) printf("  read: errno %d\n", errno);
            return;
        }
        for (char *p = buf; p < buf + n;) {
            struct inotify_event *e = (struct inotify_event *)p;
            printf("  %s ", role(e->wd));
            print_mask(e->mask);
            if (e->len) printf(" %s", e->name);
            if (e->cookie) {
                int k = 0;
                while (cookies[k] && cookies[k] != e->cookie) k++;
                cookies[k] = e->cookie;
                printf(" c%d", k + 1);
            }
            printf("\n");
            p += sizeof *e + e->len;
        }
    }
}

static char dir[64];

static const char *at(const char *name) {
    static char path[2][128];
    static int which;
    which ^= 1;
    snprintf(path[which], sizeof path[which], "%s/%s", dir, name);
    return path[which];
}

int main(void) {
    strcpy(dir, "/tmp/inotify-XXXXXX");
    if (!mkdtemp(dir)) return 1;
    ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (ifd < 0) {
        printf("inotify_init1: errno %d\n", errno);
        return 1;
    }
    printf("cloexec %d nonblock %d\n", !!(fcntl(ifd, F_GETFD) & FD_CLOEXEC), !!(fcntl(ifd, F_GETFL) & O_NONBLOCK));
    watch("dir", dir, IN_ALL_EVENTS);
    drain("nothing yet");

    int fd = open(at("a"), O_CREAT | O_WRONLY, 0644);
    write(fd, "hi", 2);
    close(fd);
    drain("create and write a");

    watch("file", at("a"), IN_ALL_EVENTS);
    char c[8];
    fd = open(at("a"), O_RDONLY);
    read(fd, c, sizeof c);
    read(fd, c, sizeof c); /* at the end: nothing read, no event */
    close(fd);
    drain("read a");

    chmod(at("a"), 0600);
    drain("chmod a");
    rename(at("a"), at("b"));
    drain("rename a b");
    link(at("b"), at("c"));
    drain("link b c");
    unlink(at("c"));
    drain("unlink c");
    fd = open(at("b"), O_WRONLY | O_TRUNC);
    close(fd);
    drain("open b with O_TRUNC");
    unlink(at("b"));
    drain("unlink b");

    mkdir(at("sub"), 0755);
    drain("mkdir sub");
    watch("sub", at("sub"), IN_ALL_EVENTS);
    fd = open(at("sub/x"), O_CREAT | O_WRONLY, 0644);
    close(fd);
    drain("create sub/x");
    rename(at("sub/x"), at("y"));
    drain("rename sub/x y");
    rmdir(at("sub"));
    drain("rmdir sub");

    truncate(at("y"), 5);
    drain("truncate y");
    utimensat(AT_FDCWD, at("y"), NULL, 0);
    drain("touch y");
    symlink("y", at("l"));
    drain("symlink l");
    mkfifo(at("f"), 0600);
    drain("mkfifo f");
    DIR *d = opendir(dir);
    while (readdir(d)) {
    }
    closedir(d);
    drain("list the directory");
    fd = open(at("z"), O_CREAT | O_EXCL | O_RDWR, 0600);
    rename(at("y"), at("z"));
    drain("rename y over z (open)");
    close(fd);
    drain("close z");

    /* The descriptor's own rules. */
    fd = open(at("z"), O_WRONLY);
    write(fd, "x", 1);
    int queued = 0;
    ioctl(ifd, FIONREAD, &queued);
    printf("FIONREAD %d\n", queued);
    struct pollfd pfd = {ifd, POLLIN, 0};
    int r = poll(&pfd, 1, 0);
    printf("poll with events: %d revents %#x\n", r, pfd.revents);
    char tiny[8];
    ssize_t got = read(ifd, tiny, sizeof tiny);
    printf("read into 8 bytes: %zd errno %d\n", got, errno);
    drain("write z");
    pfd.revents = 0;
    printf("poll with none: %d\n", poll(&pfd, 1, 0));
    got = read(ifd, tiny, sizeof tiny);
    printf("read with none: %zd errno %d\n", got, errno);

    watch("oneshot", at("z"), IN_MODIFY | IN_ONESHOT);
    write(fd, "x", 1);
    write(fd, "y", 1);
    close(fd);
    drain("one-shot watch, two writes");

    int again = inotify_add_watch(ifd, dir, IN_CREATE);
    printf("the same path again: same wd %d\n", again == wds[0]);
    fd = open(at("n"), O_CREAT | O_WRONLY, 0600);
    close(fd);
    drain("the dir's watch now only CREATE");
    again = inotify_add_watch(ifd, dir, IN_DELETE | IN_MASK_ADD);
    unlink(at("n"));
    drain("IN_MASK_ADD DELETE, unlink n");
    errno = 0;
    r = inotify_add_watch(ifd, dir, IN_OPEN | IN_MASK_CREATE);
    printf("IN_MASK_CREATE on a watched path: %d errno %d\n", r, errno);
    errno = 0;
    r = inotify_add_watch(ifd, at("z"), IN_OPEN | IN_ONLYDIR);
    printf("IN_ONLYDIR on a file: %d errno %d\n", r, errno);
    errno = 0;
    r = inotify_add_watch(ifd, dir, 0);
    printf("no events: %d errno %d\n", r, errno);
    errno = 0;
    r = inotify_add_watch(ifd, at("missing"), IN_OPEN);
    printf("missing path: %d errno %d\n", r, errno);
    errno = 0;
    r = inotify_add_watch(0, dir, IN_OPEN);
    printf("not inotify: %d errno %d\n", r, errno);
    errno = 0;
    r = inotify_add_watch(999, dir, IN_OPEN);
    printf("bad fd: %d errno %d\n", r, errno);
    errno = 0;
    r = inotify_rm_watch(ifd, 12345);
    printf("rm unknown wd: %d errno %d\n", r, errno);
    r = inotify_rm_watch(ifd, wds[0]);
    printf("rm the dir's watch: %d\n", r);
    drain("after rm_watch");

    /* IN_EXCL_UNLINK: a file written after its name went is not the
     * directory's business any more; without it, it is. */
    int excl = inotify_init1(IN_NONBLOCK);
    inotify_add_watch(excl, dir, IN_MODIFY | IN_CLOSE_WRITE | IN_EXCL_UNLINK);
    watch("all", dir, IN_MODIFY | IN_CLOSE_WRITE);
    fd = open(at("u"), O_CREAT | O_WRONLY, 0600);
    unlink(at("u"));
    write(fd, "x", 1);
    close(fd);
    char ebuf[256] __attribute__((aligned(8)));
    got = read(excl, ebuf, sizeof ebuf);
    printf("with IN_EXCL_UNLINK: read %zd\n", got);
    close(excl);
    drain("write and close an unlinked file, without it");

    /* A blocking descriptor, woken by another process's change: through
     * epoll, then a read. */
    int bfd = inotify_init();
    inotify_add_watch(bfd, dir, IN_CREATE);
    pid_t child = fork();
    if (child == 0) {
        usleep(50000);
        close(open(at("late"), O_CREAT | O_WRONLY, 0600));
        _exit(0);
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = 7}, out = {0};
    epoll_ctl(ep, EPOLL_CTL_ADD, bfd, &ev);
    r = epoll_wait(ep, &out, 1, 10000);
    printf("epoll_wait: %d data %u\n", r, out.data.u32);
    char big[256] __attribute__((aligned(8)));
    got = read(bfd, big, sizeof big);
    struct inotify_event *e = (struct inotify_event *)big;
    printf("blocking read: %zd bytes, %s %s\n", got, e->mask == IN_CREATE ? "CREATE" : "?", e->len ? e->name : "");
    waitpid(child, NULL, 0);
    close(ep);
    close(bfd);

    unlink(at("z"));
    unlink(at("l"));
    unlink(at("f"));
    unlink(at("late"));
    drain("unwatched changes");
    r = rmdir(dir);
    printf("rmdir %d\n", r);
    close(ifd);
    return 0;
}
