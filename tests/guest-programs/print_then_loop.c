/* Writes a line to stdout and to stderr (left in the runtime's buffers), then spins. */
#include <stdio.h>
int main(void) { printf("partial line\n"); fprintf(stderr, "err line\n"); for (;;); }
