/* A directory without write permission: nothing in it is removed, renamed
   or made (EACCES), but a missing name is still ENOENT and an existing one
   EEXIST first, as on Linux. Without search permission nothing in it is
   reached (stat, open, chdir through it: EACCES), though it is still
   listed with read permission; without read permission it is not listed
   but what is in it is still reached by name. Run natively as root, it
   first becomes nobody (root passes permission checks). */
#include <dirent.h>
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *e(int r) {
    return r == 0 ? "0" : errno == EACCES ? "EACCES" : errno == ENOENT ? "ENOENT" : errno == EEXIST ? "EEXIST" : strerror(errno);
}

int main(void) {
    if (getuid() == 0 && setuid(65534) != 0) return 1;
    char d[] = "/tmp/permsXXXXXX";
    mkdtemp(d);
    char f[64], s[64], g[64], h[64], l[64], missing[64];
    snprintf(f, 64, "%s/f", d);
    snprintf(s, 64, "%s/s", d);
    snprintf(g, 64, "%s/g", d);
    snprintf(h, 64, "%s/h", d);
    snprintf(l, 64, "%s/l", d);
    snprintf(missing, 64, "%s/missing", d);
    close(open(f, O_CREAT | O_WRONLY, 0600));
    mkdir(s, 0700);
    char other[64];
    snprintf(other, 64, "%s-other", d);
    close(open(other, O_CREAT | O_WRONLY, 0600));
    chmod(d, 0500);
    /* (One call a statement: the order of a call's arguments is not C's.) */
    const char *r1 = e(unlink(f)), *r2 = e(rmdir(s)), *r3 = e(rename(f, g));
    const char *r4 = e(link(f, h)), *r5 = e(symlink("x", l));
    printf("unlink %s, rmdir %s, rename %s, link %s, symlink %s\n", r1, r2, r3, r4, r5);
    r1 = e(unlink(missing));
    r2 = e(link(f, s));
    r3 = e(rename(other, g));
    printf("unlink missing %s, link over existing %s, rename into it %s\n", r1, r2, r3);
    chmod(d, 0700);
    r1 = e(unlink(f));
    r2 = e(rmdir(s));
    r3 = e(rmdir(d));
    r4 = e(unlink(other));
    printf("writable again: unlink %s, rmdir %s, rmdir the directory %s, %s\n", r1, r2, r3, r4);

    /* Search (x) and read (r) permission. */
    mkdir(d, 0700);
    close(open(f, O_CREAT | O_WRONLY, 0600));
    mkdir(s, 0700);
    char deep[80];
    snprintf(deep, 80, "%s/s/../f", d);
    struct stat st;
    chmod(d, 0600);
    r1 = e(stat(f, &st));
    r2 = e(open(f, O_RDONLY) < 0 ? -1 : 0);
    r3 = e(stat(deep, &st));
    r4 = e(chdir(s));
    DIR *listed = opendir(d);
    int names = 0;
    while (listed && readdir(listed)) names++;
    if (listed) closedir(listed);
    printf("no search: stat %s, open %s, through .. %s, chdir %s; listed %d names\n", r1, r2, r3, r4, names);
    chmod(d, 0100);
    r1 = e(stat(f, &st));
    r2 = e(open(f, O_RDONLY) < 0 ? -1 : 0);
    r3 = e(stat(deep, &st));
    r4 = e(opendir(d) ? 0 : -1);
    printf("search only: stat %s, open %s, through .. %s, opendir %s\n", r1, r2, r3, r4);
    chmod(d, 0700);
    unlink(f);
    rmdir(s);
    rmdir(d);
    return 0;
}
