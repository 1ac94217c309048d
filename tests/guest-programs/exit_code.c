#include <stdlib.h>
/* Exits with the code given as the first argument. */
int main(int argc, char **argv) {
    return argc > 1 ? atoi(argv[1]) : 0;
}
