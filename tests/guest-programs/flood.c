#include <stdlib.h>
#include <string.h>
#include <unistd.h>
/* Writes argv[1] MiB of 'x' to stdout and argv[2] MiB of 'y' to stderr, then exits 0. */
int main(int argc, char **argv) {
    long out_mib = argc > 1 ? atol(argv[1]) : 4;
    long err_mib = argc > 2 ? atol(argv[2]) : 0;
    static char x[65536], y[65536];
    memset(x, 'x', sizeof x);
    memset(y, 'y', sizeof y);
    for (long i = 0; i < out_mib * 16; i++) if (write(1, x, sizeof x) != sizeof x) return 2;
    for (long i = 0; i < err_mib * 16; i++) if (write(2, y, sizeof y) != sizeof y) return 3;
    return 0;
}
