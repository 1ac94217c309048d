/* Memory that is not executable does not run, as on Linux (x86-64 with
   NX): a jump into a read-only page, a writable page, a page made
   read-only again, or the stack (no PT_GNU_STACK PF_X) is SIGSEGV with
   the fault at the jump's target; code made executable by mprotect runs,
   also right after it was run-protected (the TLB may still hold the old
   entry), and so does a page mapped read-write-execute, and the stack
   once mprotect with PROT_GROWSDOWN made it executable. Each attempt
   runs in a child, whose end the parent reports. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

/* mov eax, 42; ret */
static const unsigned char code[] = {0xb8, 42, 0, 0, 0, 0xc3};
static void *target;

static void on_segv(int sig, siginfo_t *si, void *ctx) {
    (void)sig;
    (void)ctx;
    /* The fault address is the jump's target: the code did not run. */
    _exit(si->si_addr == target ? 11 : 12);
}

/* Calls `p` in a child; "ran 42", "SIGSEGV at it", or what else. */
static const char *attempt(void *p) {
    target = p;
    fflush(stdout);
    pid_t c = fork();
    if (c == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_segv;
        sa.sa_flags = SA_SIGINFO;
        sigaction(SIGSEGV, &sa, 0);
        int r = ((int (*)(void))p)();
        _exit(r == 42 ? 0 : 1);
    }
    int st = 0;
    waitpid(c, &st, 0);
    if (!WIFEXITED(st)) return "killed";
    switch (WEXITSTATUS(st)) {
    case 0: return "ran 42";
    case 11: return "SIGSEGV at it";
    case 12: return "SIGSEGV elsewhere";
    default: return "ran, wrong result";
    }
}

/* Code copied into this function's frame (below its caller's). */
__attribute__((noinline)) static const char *deeper(void) {
    volatile unsigned char buf[8192];
    for (unsigned i = 0; i < sizeof code; i++) buf[i] = code[i];
    return attempt((void *)buf);
}

int main(void) {
    unsigned char *p = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memcpy(p, code, sizeof code);
    printf("read-write: %s\n", attempt(p));
    mprotect(p, 4096, PROT_READ);
    printf("read-only: %s\n", attempt(p));
    mprotect(p, 4096, PROT_READ | PROT_EXEC);
    printf("made executable: %s\n", attempt(p));
    /* Run in this process (the TLB holds it executable), then taken away
       and given back. */
    int here = ((int (*)(void))p)();
    mprotect(p, 4096, PROT_READ);
    printf("executable taken away: %s\n", attempt(p));
    mprotect(p, 4096, PROT_READ | PROT_EXEC);
    here += ((int (*)(void))p)();
    printf("given back, run here: %d\n", here);
    unsigned char *q = mmap(0, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memcpy(q, code, sizeof code);
    printf("read-write-execute: %s\n", attempt(q));
    unsigned char stack_code[sizeof code];
    memcpy(stack_code, code, sizeof code);
    printf("on the stack: %s\n", attempt(stack_code));
    static unsigned char data_code[sizeof code] = {0xb8, 42, 0, 0, 0, 0xc3};
    printf("in the data segment: %s\n", attempt(data_code));
    /* As glibc makes the stack executable for a library that needs it:
       one page, and with PROT_GROWSDOWN all of the stack below it. */
    void *page = (void *)((unsigned long)stack_code & ~4095ul);
    int r = mprotect(page, 4096, PROT_READ | PROT_WRITE | PROT_EXEC | PROT_GROWSDOWN);
    printf("stack made executable (%d): %s, deeper: %s\n", r, attempt(stack_code), deeper());
    return 0;
}
