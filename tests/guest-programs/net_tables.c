/* /proc/net/{tcp,tcp6,udp,unix} as Linux shows them (tests/fs.rs runs
 * this natively and in the guest and compares): the program's own
 * sockets (found by inode, which fstat and /proc/self/fd say too) with
 * their addresses, states and queues: a TCP listener with a connection
 * waiting in its backlog, an accepted connection and its client, an
 * IPv6 listener, a bound and a connected UDP socket, a local listener at
 * a path, its connection, and an abstract name. Ports and paths print
 * by role, lines sorted. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX 32
static unsigned long inos[MAX];
static const char *names[MAX];
static int nsock;
static unsigned ports[8];
static const char *port_names[8];
static int nports;
static char lines[64][512];
static int nlines;

static void track(const char *name, int fd) {
    struct stat st;
    fstat(fd, &st);
    char link[64], target[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof target - 1);
    target[n < 0 ? 0 : n] = 0;
    unsigned long from_link = 0;
    sscanf(target, "socket:[%lu]", &from_link);
    if (from_link != (unsigned long)st.st_ino) printf("%s: fd link %s, fstat ino differs\n", name, target);
    inos[nsock] = st.st_ino;
    names[nsock++] = name;
}

static void port(const char *name, int fd) {
    struct sockaddr_in6 a;
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    ports[nports] = ntohs(a.sin6_port);
    port_names[nports++] = name;
}

static const char *port_name(unsigned p) {
    if (p == 0) return "0";
    for (int i = 0; i < nports; i++)
        if (ports[i] == p) return port_names[i];
    return "ephemeral";
}

static const char *who(unsigned long ino) {
    if (ino == 0) return "(backlog)";
    for (int i = 0; i < nsock; i++)
        if (inos[i] == ino) return names[i];
    return NULL;
}

/* "0100007F:1F90" -> "0100007F:<role>". */
static void addr(char *out, size_t size, const char *a) {
    const char *colon = strchr(a, ':');
    unsigned p = 0;
    sscanf(colon + 1, "%x", &p);
    snprintf(out, size, "%.*s:%s", (int)(colon - a), a, port_name(p));
}

static int cmp(const void *a, const void *b) { return strcmp(a, b); }

/* `udp`: a datagram queue's size is Linux's memory use, not its bytes:
 * only whether something is queued is compared. Line widths: the IPv4
 * tables pad their lines, the IPv6 ones do not (a width that depends on
 * the inode's digits). */
static void inet_table(const char *file, unsigned backlog_port) {
    int udp = file[0] == 'u', v6 = strchr(file, '6') != NULL;
    char path[64], line[512];
    snprintf(path, sizeof path, "/proc/net/%s", file);
    FILE *f = fopen(path, "r");
    if (!f) {
        printf("%s: cannot open\n", path);
        return;
    }
    fgets(line, sizeof line, f);
    printf("%s header: %s", file, line);
    nlines = 0;
    while (fgets(line, sizeof line, f)) {
        char local[64], remote[64], st[8], queues[32];
        unsigned long ino;
        unsigned uid;
        if (sscanf(line, "%*s %63s %63s %7s %31s %*s %*s %u %*s %lu", local, remote, st, queues, &uid, &ino) != 6) continue;
        const char *w = who(ino);
        unsigned lp = 0;
        sscanf(strchr(local, ':') + 1, "%x", &lp);
        if (!w || (ino == 0 && lp != backlog_port)) continue;
        char l[96], r[96], q[64], width[32];
        addr(l, sizeof l, local);
        addr(r, sizeof r, remote);
        if (udp) snprintf(q, sizeof q, "queued %d", strcmp(strchr(queues, ':') + 1, "00000000") != 0);
        else snprintf(q, sizeof q, "queues %s", queues);
        if (v6) snprintf(width, sizeof width, "unpadded %d", line[strlen(line) - 2] != ' ');
        else snprintf(width, sizeof width, "width %zu", strlen(line));
        snprintf(lines[nlines++], 512, "  %s: %s -> %s st %s %s uid is mine %d %s", w, l, r, st, q, uid == getuid(),
                 width);
    }
    fclose(f);
    qsort(lines, nlines, sizeof lines[0], cmp);
    for (int i = 0; i < nlines; i++) printf("%s\n", lines[i]);
}

static char dir[64];
static char abname[32];

static void unix_table(void) {
    FILE *f = fopen("/proc/net/unix", "r");
    char line[512];
    fgets(line, sizeof line, f);
    printf("unix header: %s", line);
    nlines = 0;
    while (fgets(line, sizeof line, f)) {
        char num[32], ref[16], proto[16], flags[16], type[8], st[8], rest[256] = "";
        unsigned long ino;
        int n = sscanf(line, "%31s %15s %15s %15s %7s %7s %lu %255[^\n]", num, ref, proto, flags, type, st, &ino, rest);
        if (n < 7) continue;
        const char *w = who(ino);
        if (!w || ino == 0) continue;
        char path[256];
        const char *r = rest[0] == ' ' ? rest + 1 : rest;
        if (strncmp(r, dir, strlen(dir)) == 0) snprintf(path, sizeof path, "DIR%s", r + strlen(dir));
        else if (r[0] == '@' && strcmp(r + 1, abname) == 0) snprintf(path, sizeof path, "@ABSTRACT");
        else snprintf(path, sizeof path, "%s", r);
        snprintf(lines[nlines++], 512, "  %s: flags %s type %s st %s path '%s'", w, flags, type, st, path);
    }
    fclose(f);
    qsort(lines, nlines, sizeof lines[0], cmp);
    for (int i = 0; i < nlines; i++) printf("%s\n", lines[i]);
}

int main(void) {
    struct sockaddr_in a4 = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a4;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    bind(l, (struct sockaddr *)&a4, sizeof a4);
    listen(l, 4);
    track("listener", l);
    port("L", l);
    getsockname(l, (struct sockaddr *)&a4, &len);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    connect(c, (struct sockaddr *)&a4, sizeof a4);
    int acc = accept(l, NULL, NULL);
    track("client", c);
    track("accepted", acc);
    send(c, "hello", 5, 0);
    usleep(20000);

    /* A connection left in a second listener's backlog. */
    struct sockaddr_in b4 = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int l2 = socket(AF_INET, SOCK_STREAM, 0);
    bind(l2, (struct sockaddr *)&b4, sizeof b4);
    listen(l2, 4);
    track("listener2", l2);
    port("L2", l2);
    len = sizeof b4;
    getsockname(l2, (struct sockaddr *)&b4, &len);
    int c2 = socket(AF_INET, SOCK_STREAM, 0);
    connect(c2, (struct sockaddr *)&b4, sizeof b4);
    track("client2", c2);
    usleep(20000);

    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    int l6 = socket(AF_INET6, SOCK_STREAM, 0);
    bind(l6, (struct sockaddr *)&a6, sizeof a6);
    listen(l6, 1);
    track("listener6", l6);
    port("L6", l6);

    struct sockaddr_in u4 = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    bind(u, (struct sockaddr *)&u4, sizeof u4);
    track("udp", u);
    port("U", u);
    len = sizeof u4;
    getsockname(u, (struct sockaddr *)&u4, &len);
    int uc = socket(AF_INET, SOCK_DGRAM, 0);
    connect(uc, (struct sockaddr *)&u4, sizeof u4);
    track("udp-connected", uc);
    send(uc, "datagram", 8, 0);
    usleep(20000);

    strcpy(dir, "/tmp/nettab-XXXXXX");
    mkdtemp(dir);
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    snprintf(un.sun_path, sizeof un.sun_path, "%s/sock", dir);
    int ul = socket(AF_UNIX, SOCK_STREAM, 0);
    bind(ul, (struct sockaddr *)&un, sizeof un);
    listen(ul, 1);
    track("unix-listener", ul);
    int ucl = socket(AF_UNIX, SOCK_STREAM, 0);
    connect(ucl, (struct sockaddr *)&un, sizeof un);
    track("unix-client", ucl);
    struct sockaddr_un ab = {.sun_family = AF_UNIX};
    int ablen = snprintf(abname, sizeof abname, "hvnet-%s", dir + strlen("/tmp/nettab-"));
    memcpy(ab.sun_path + 1, abname, ablen);
    int ua = socket(AF_UNIX, SOCK_DGRAM, 0);
    bind(ua, (struct sockaddr *)&ab, offsetof(struct sockaddr_un, sun_path) + 1 + ablen);
    track("unix-abstract", ua);

    char link[32] = "";
    ssize_t ln = readlink("/proc/net", link, sizeof link - 1);
    link[ln < 0 ? 0 : ln] = 0;
    FILE *via_self = fopen("/proc/self/net/unix", "r");
    printf("/proc/net -> %s; /proc/self/net/unix opens %d\n", link, via_self != NULL);
    if (via_self) fclose(via_self);
    inet_table("tcp", ports[1]);
    inet_table("tcp6", 0);
    inet_table("udp", 0);
    unix_table();
    unlink(un.sun_path);
    rmdir(dir);
    return 0;
}
