/* A program whose stack must be executable (PT_GNU_STACK with PF_X, as
   GCC marks one that takes a nested function's address: the call goes
   through a trampoline written on the stack). */
#include <stdio.h>

__attribute__((noinline)) static int call(int (*volatile f)(int), int x) { return f(x); }

int main(void) {
    int base = 40;
    int add(int x) { return x + base; }
    printf("nested function through its trampoline: %d\n", call(add, 2));
    return 0;
}
