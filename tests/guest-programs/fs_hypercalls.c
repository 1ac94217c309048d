#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
/* Forges the filesystem hypercalls a guest runtime makes and sends them
 * straight to the host (a program at CPL3 can reach the doorbell and the
 * physmap today), to test the host's file service on its own.
 * argv: HCALL_VA DOORBELL_VA SCRATCH_VA SCENARIO (addresses in hex). */

enum { FS_LOOKUP = 9, FS_READ = 10, FS_READDIR = 11, FS_READLINK = 12, FS_STAT = 13, FILE_OUT = 14, FS_WALK = 23 };

static volatile uint64_t *hc, *bell;
static unsigned char *scratch; /* a physmap buffer the host can reach */

static int64_t call(uint64_t nr, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5) {
    hc[0] = a0; hc[1] = a1; hc[2] = a2; hc[3] = a3; hc[4] = a4; hc[5] = a5;
    *bell = nr;
    return (int64_t)hc[6];
}

/* The scratch area: [0, 256) names, [256, 512) a Stat, [512, ...) data. */
#define NAME ((uint64_t)(uintptr_t)scratch)
#define STAT ((uint64_t)(uintptr_t)(scratch + 256))
#define DATA ((uint64_t)(uintptr_t)(scratch + 512))

struct stat_abi { uint32_t mode, nlink; uint64_t size, ino; int64_t mtime_sec; uint32_t mtime_nsec, pad; };

static int64_t lookup(uint64_t dir, const char *name) {
    size_t n = strlen(name);
    memcpy(scratch, name, n);
    return call(FS_LOOKUP, dir, NAME, n, STAT, 0, 0);
}

static void show_stat(const char *what, int64_t h) {
    struct stat_abi st;
    memcpy(&st, scratch + 256, sizeof st);
    if (h > 0)
        printf("%s=handle mode=%o size=%llu\n", what, st.mode, (unsigned long long)st.size);
    else
        printf("%s=%lld\n", what, (long long)h);
}

int main(int argc, char **argv) {
    if (argc < 5) return 2;
    hc = (volatile uint64_t *)(uintptr_t)strtoull(argv[1], 0, 16);
    bell = (volatile uint64_t *)(uintptr_t)strtoull(argv[2], 0, 16);
    scratch = (unsigned char *)(uintptr_t)strtoull(argv[3], 0, 16);
    const char *scenario = argv[4];

    if (!strcmp(scenario, "walk")) {
        int64_t h = lookup(1, "hello.txt");
        show_stat("hello.txt", h);
        int64_t again = lookup(1, "hello.txt");
        printf("same handle=%d\n", again == h);
        int64_t n = call(FS_READ, h, 7, DATA, 100, 0, 0);
        printf("read@7=%lld:%.*s\n", (long long)n, (int)(n > 0 ? n : 0), (char *)scratch + 512);
        printf("lookup ..=%lld\n", (long long)lookup(1, ".."));
        printf("lookup a/b=%lld\n", (long long)lookup(1, "a/b"));
        printf("lookup missing=%lld\n", (long long)lookup(1, "missing"));
        int64_t link = lookup(1, "passwd");
        show_stat("passwd", link);
        n = call(FS_READLINK, link, DATA, 200, 0, 0, 0);
        printf("readlink=%.*s\n", (int)(n > 0 ? n : 0), (char *)scratch + 512);
        printf("read symlink=%lld\n", (long long)call(FS_READ, link, 0, DATA, 16, 0, 0));
        int64_t sub = lookup(1, "sub");
        show_stat("sub", sub);
        show_stat("sub/inner.txt", lookup(sub, "inner.txt"));
        n = call(FS_READDIR, 1, 0, DATA, 4096, 0, 0);
        printf("readdir:");
        for (int64_t at = 0; at < n;) {
            unsigned char *rec = scratch + 512 + at;
            printf(" %.*s/%d", rec[9], (char *)rec + 10, rec[8]);
            at += 10 + rec[9];
        }
        printf("\nreaddir end=%lld\n", (long long)call(FS_READDIR, 1, 1000, DATA, 4096, 0, 0));
        printf("stat bad handle=%lld\n", (long long)call(FS_STAT, 999, STAT, 0, 0, 0, 0));
        /* Handle 2 is the command's in-memory file. */
        printf("stat blob=%lld\n", (long long)call(FS_STAT, 2, STAT, 0, 0, 0, 0));
        show_stat("blob", 2);
        n = call(FS_READ, 2, 0, DATA, 100, 0, 0);
        printf("blob=%.*s\n", (int)(n > 0 ? n : 0), (char *)scratch + 512);
        memcpy(scratch, "/out/r.txt", 10);
        memcpy(scratch + 512, "result", 6);
        printf("file out=%lld\n", (long long)call(FILE_OUT, NAME, 10, DATA, 6, 0, 0644));
        printf("file out again=%lld\n", (long long)call(FILE_OUT, NAME, 10, DATA, 3, 6, 0644));
        memcpy(scratch, "/elsewhere", 10);
        printf("file out elsewhere=%lld\n", (long long)call(FILE_OUT, NAME, 10, DATA, 6, 0, 0644));
        return 0;
    }
    if (!strcmp(scenario, "paths")) {
        /* argv[5...]: paths below the first mount (handle 1), walked one
         * name at a time as a runtime that checks nothing would; then the
         * object is read (a file: its first line) or listed. */
        for (int i = 5; i < argc; i++) {
            char path[1024], *save = 0;
            snprintf(path, sizeof path, "%s", argv[i]);
            int64_t h = 1;
            uint32_t mode = 040000;
            for (char *c = strtok_r(path, "/", &save); c && h > 0; c = strtok_r(0, "/", &save)) {
                h = lookup(h, c);
                if (h < 0) printf("%s: lookup %s=%lld\n", argv[i], c, (long long)h);
                memcpy(&mode, scratch + 256, sizeof mode);
            }
            if (h < 0) continue;
            if ((mode & 0170000) == 040000) {
                int64_t n = call(FS_READDIR, h, 0, DATA, 4096, 0, 0);
                printf("%s: readdir=%s%lld\n", argv[i], n > 0 ? "ok:" : "", (long long)(n > 0 ? n > 0 : n));
            } else {
                int64_t n = call(FS_READ, h, 0, DATA, 64, 0, 0);
                char *text = (char *)scratch + 512;
                int len = 0;
                while (n > 0 && len < n && text[len] != '\n') len++;
                if (n >= 0) printf("%s: read=%.*s\n", argv[i], len, text);
                else printf("%s: read=%lld\n", argv[i], (long long)n);
            }
        }
        return 0;
    }
    if (!strcmp(scenario, "user-buffers")) {
        /* Buffers in the program's own memory, reached through the page
         * tables; the read straddles a page boundary. */
        static char name[] = "hello.txt";
        static unsigned char pages[8192] __attribute__((aligned(4096)));
        struct stat_abi st;
        int64_t h = call(FS_LOOKUP, 1, (uint64_t)(uintptr_t)name, 9, (uint64_t)(uintptr_t)&st, 0, 0);
        int64_t n = call(FS_READ, h, 0, (uint64_t)(uintptr_t)(pages + 4090), 100, 0, 0);
        printf("size=%llu read=%lld:%.*s\n", (unsigned long long)st.size, (long long)n, (int)(n > 0 ? n : 0),
               (char *)pages + 4090);
        return 0;
    }
    if (!strcmp(scenario, "pathwalk")) {
        /* FS_WALK: several names in one call; records of a handle and a
         * Stat (40 bytes) at DATA. Prints the records filled, the errno
         * that stopped the walk, and each record's mode and size. */
        static const struct { const char *names; uint64_t room; } cases[] = {
            {"sub/inner.txt", 16}, {"sub/missing/x", 16}, {"passwd/x", 16}, {"../x", 16},
            {"sub//inner.txt", 16}, {"sub/inner.txt", 1}, {"sub/inner.txt", 1000}, {"hello.txt/x", 16},
        };
        for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            size_t n = strlen(cases[i].names);
            memcpy(scratch, cases[i].names, n);
            memset(scratch + 512, 0, 16 * 48);
            int64_t r = call(FS_WALK, 1, NAME, n, DATA, cases[i].room, 0);
            printf("walk %s (%llu)=%lld err=%lld", cases[i].names, (unsigned long long)cases[i].room,
                   (long long)(r & 0xffffffff), (long long)(r >> 32));
            for (int64_t k = 0; k < (r & 0xffffffff) && k < 16; k++) {
                struct stat_abi st;
                int64_t h;
                memcpy(&h, scratch + 512 + k * 48, 8);
                memcpy(&st, scratch + 512 + k * 48 + 8, sizeof st);
                printf(" [%s mode=%o size=%llu]", h > 0 ? "handle" : "none", st.mode,
                       (st.mode & 0170000) == 040000 ? 0ULL : (unsigned long long)st.size);
            }
            printf("\n");
        }
        printf("walk empty=%lld\n", (long long)call(FS_WALK, 1, NAME, 0, DATA, 16, 0));
        printf("walk too long=%lld\n", (long long)call(FS_WALK, 1, NAME, 5000, DATA, 16, 0));
        /* The same handle as a lookup name by name. */
        memcpy(scratch, "sub/inner.txt", 13);
        call(FS_WALK, 1, NAME, 13, DATA, 16, 0);
        int64_t walked;
        memcpy(&walked, scratch + 512 + 48, 8);
        int64_t sub = lookup(1, "sub");
        printf("same handle=%d\n", walked == lookup(sub, "inner.txt"));
        return 0;
    }
    if (!strcmp(scenario, "bad-walk-buffer")) {
        /* Records to a buffer the guest has not mapped. */
        memcpy(scratch, "sub/inner.txt", 13);
        call(FS_WALK, 1, NAME, 13, 0x100, 16, 0);
        return 0;
    }
    if (!strcmp(scenario, "bad-buffer")) {
        /* A buffer the guest has not mapped: the host must refuse the request. */
        int64_t h = lookup(1, "hello.txt");
        call(FS_READ, h, 0, 0x100, 16, 0, 0);
        return 0;
    }
    if (!strcmp(scenario, "huge-read")) {
        call(FS_READ, 1, 0, DATA, (1 << 20) + 1, 0, 0);
        return 0;
    }
    return 2;
}
