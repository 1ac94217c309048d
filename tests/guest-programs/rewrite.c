/* System-call site rewriting (tests/rewrite.rs): what a program can tell
   about it. Every mode but "code" and "cost" prints the same natively and
   in the guest, rewriting on or off.
     loop N     N getpid() calls (musl: mov eax, 39; syscall; ret)
     redzone    a `syscall` site of our own run twice: the 128 bytes below
                RSP and the argument registers survive it
     null       NULL read after rewritten calls: must die of SIGSEGV
     fork       a child inherits rewritten code; both call getpid
     signals    SIGALRM handlers run while getpid is called in a loop; the
                signal return code (rt_sigreturn) keeps its bytes
     jit        code written at run time (W^X: RW, then RX), run, made
                writable again and changed: runs the changed call
     enosys     an unknown system call (500) from one site, three times
     unmap      getpid twice, then everything below the program (0x10000 up
                to 0x400000: where its stubs are) unmapped, then getpid
     falsematch a `syscall` after `movl $39, -0x48(%rsp)` (c7 44 24 b8 27 00
                00 00): its last 5 bytes look like `mov eax, 39`, but are
                not an instruction; run 5 times with EAX = 39, the store
                must land each time and its code stay as it was (the
                `syscall` itself may become a jump)
     regsite    a `syscall` whose number comes from a register (no `mov eax`
                before it): getpid through it with the red zone and
                argument registers checked, then a read from a pipe that
                blocks there while SIGALRM (SA_RESTART) interrupts it, so
                the call restarts at the site; prints whether the
                `syscall` became a short jump (guest only: "regsite code")
     firstsite  (before the warm-up every other mode starts with: 10
                getppid calls, so that the rewriter has read this file's
                tables) getpid's first byte after 2 calls and after 10
     code       getpid's first 7 code bytes before and after two calls
     straddle   the same with the `syscall` across a page boundary
     checkpoint getpid twice, the snapshot checkpoint (guest only), then
                getpid's code bytes
     cost N     nanoseconds per getpid() (clock_gettime via the vDSO) */
#define _GNU_SOURCE
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <ucontext.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void print_bytes(const char *what, const unsigned char *p) {
    printf("%s", what);
    for (int i = 0; i < 7; i++) printf(" %02x", p[i]);
    printf("\n");
}

static int loop(long n) {
    pid_t first = getpid();
    long same = 0;
    for (long i = 0; i < n; i++) same += getpid() == first;
    printf("loop: %ld of %ld calls agree\n", same, n);
    return 0;
}

/* One `syscall` site: stores a pattern in the red zone (8..128 bytes below
   RSP) and in the argument registers, makes getpid, and checks both. */
/* Enough getpid() calls from one site for the rewriter to rewrite it
   (guest-runtime/src/rewrite.rs HOT_AFTER is 4). */
static void hot(void) {
    for (int i = 0; i < 6; i++) getpid();
}

__attribute__((noinline)) static long redzone_once(void) {
    long bad;
    __asm__ volatile(
        "movabs $0x1122334455667788, %%r8\n"
        "mov %%r8, -8(%%rsp)\n"
        "mov %%r8, -16(%%rsp)\n"
        "mov %%r8, -64(%%rsp)\n"
        "mov %%r8, -128(%%rsp)\n"
        "mov %%r8, %%rdi\n"
        "mov %%r8, %%rsi\n"
        "mov %%r8, %%rdx\n"
        "mov %%r8, %%r10\n"
        "mov %%r8, %%r9\n"
        "mov $39, %%eax\n"
        "syscall\n"
        "xor %%eax, %%eax\n"
        "cmp %%r8, -8(%%rsp)\n"
        "setne %%al\n"
        "cmp %%r8, -16(%%rsp)\n"
        "setne %%cl\n"
        "or %%cl, %%al\n"
        "cmp %%r8, -64(%%rsp)\n"
        "setne %%cl\n"
        "or %%cl, %%al\n"
        "cmp %%r8, -128(%%rsp)\n"
        "setne %%cl\n"
        "or %%cl, %%al\n"
        "cmp %%r8, %%rdi\n"
        "setne %%cl\n"
        "or %%cl, %%al\n"
        "cmp %%r8, %%rsi\n"
        "setne %%cl\n"
        "or %%cl, %%al\n"
        "cmp %%r8, %%rdx\n"
        "setne %%cl\n"
        "or %%cl, %%al\n"
        "cmp %%r8, %%r10\n"
        "setne %%cl\n"
        "or %%cl, %%al\n"
        "cmp %%r8, %%r9\n"
        "setne %%cl\n"
        "or %%cl, %%al\n"
        : "=a"(bad)
        :
        : "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "memory");
    return bad;
}

static int redzone(void) {
    long bad = 0;
    for (int i = 0; i < 8; i++) bad += redzone_once();
    printf("redzone: %ld bad rounds of 8\n", bad);
    return 0;
}

static int null_read(void) {
    hot();
    printf("null: reading\n");
    fflush(stdout);
    volatile int *p = 0;
    printf("null: read %d\n", *p);
    return 0;
}

static int forked(void) {
    pid_t me = getpid();
    hot();
    pid_t child = fork();
    if (child == 0) {
        pid_t c = getpid();
        _exit(c != me && getpid() == c ? 0 : 1);
    }
    int st = 0;
    waitpid(child, &st, 0);
    printf("fork: child %s, parent %s\n", WIFEXITED(st) && WEXITSTATUS(st) == 0 ? "ok" : "bad",
           getpid() == me ? "ok" : "bad");
    return 0;
}

static volatile int alarms;
static const unsigned char *volatile restorer;
static void on_alarm(int sig) {
    (void)sig;
    alarms += getpid() > 0;
    /* The handler returns into the restorer: `mov rax, 15; syscall`,
       which unwinders recognise by these very bytes. */
    restorer = __builtin_return_address(0);
}

static int signals(void) {
    signal(SIGALRM, on_alarm);
    struct itimerval it = {{0, 1000}, {0, 1000}};
    setitimer(ITIMER_REAL, &it, 0);
    long calls = 0;
    while (alarms < 3 && calls < 100000000) {
        getpid();
        calls++;
    }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, 0);
    static const unsigned char rt_sigreturn[] = {0x48, 0xc7, 0xc0, 0x0f, 0, 0, 0, 0x0f, 0x05};
    int intact = restorer && !memcmp((const void *)restorer, rt_sigreturn, sizeof rt_sigreturn);
    printf("signals: %s, restorer %s\n", alarms >= 3 ? "3 handled" : "too few", intact ? "intact" : "changed");
    return 0;
}

typedef long (*fn_t)(void);

static int jit(void) {
    /* mov eax, 39 (getpid); syscall; ret */
    static const unsigned char code[] = {0xb8, 39, 0, 0, 0, 0x0f, 0x05, 0xc3};
    unsigned char *p = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 1;
    memcpy(p, code, sizeof code);
    mprotect(p, 4096, PROT_READ | PROT_EXEC);
    long a = ((fn_t)p)(), b = ((fn_t)p)();
    mprotect(p, 4096, PROT_READ | PROT_WRITE);
    int restored = p[0] == 0xb8 && p[1] == 39;
    p[1] = 102; /* getuid */
    mprotect(p, 4096, PROT_READ | PROT_EXEC);
    long c = ((fn_t)p)(), d = ((fn_t)p)();
    printf("jit: getpid %s, writable code shows its bytes: %s, changed call %s\n",
           a == getpid() && b == a ? "ok" : "bad", restored ? "yes" : "no",
           c == (long)getuid() && d == c ? "ok" : "bad");
    return 0;
}

__attribute__((noinline)) static long unknown_call(void) {
    long r;
    __asm__ volatile("mov $500, %%eax\nsyscall\n" : "=a"(r) : : "rcx", "r11", "memory");
    return r;
}

static int enosys(void) {
    long a = unknown_call(), b = unknown_call(), c = unknown_call();
    printf("enosys: %ld %ld %ld\n", a, b, c);
    return 0;
}

static int unmap(void) {
    pid_t me = getpid();
    hot();
    int r = munmap((void *)0x10000, 0x400000 - 0x10000);
    print_bytes("after munmap:", (const unsigned char *)getpid);
    printf("unmap: ret=%d getpid %s\n", r, getpid() == me && getpid() == me ? "ok" : "bad");
    return 0;
}

/* A hand-written function (a symbol with a size, no unwind entry): the
   five bytes before its `syscall` read b8 27 00 00 00. Returns what the
   store left in the red zone. */
__asm__(".text\n"
        ".globl false_site\n"
        ".type false_site, @function\n"
        "false_site:\n"
        "    movq $0, -0x48(%rsp)\n"
        "    mov $39, %eax\n"
        "    movl $39, -0x48(%rsp)\n"
        ".globl false_site_syscall\n"
        "false_site_syscall:\n"
        "    syscall\n"
        "    mov -0x48(%rsp), %rax\n"
        "    ret\n"
        ".size false_site, .-false_site\n");
long false_site(void);
extern const unsigned char false_site_syscall[];

static int falsematch(void) {
    const unsigned char *p = false_site_syscall;
    __asm__("" : "+r"(p)); /* (the compiler cannot tell what lies before) */
    p -= 5;
    unsigned char before[5];
    memcpy(before, p, 5);
    int bad = 0;
    for (int i = 0; i < 5; i++) bad += false_site() != 39;
    printf("falsematch: %d bad rounds of 5, code %s\n", bad, memcmp(before, p, 5) ? "changed" : "unchanged");
    return 0;
}

/* `syscall(nr, a, b, c)` by hand: RAX from RDI, and alignment padding
   after it before the next function. Leaves the red-zone word at -0x40
   as it found it. */
__asm__(".text\n"
        ".globl reg_site\n"
        ".type reg_site, @function\n"
        "reg_site:\n"
        "    mov %rdi, %rax\n"
        "    mov %rsi, %rdi\n"
        "    mov %rdx, %rsi\n"
        "    mov %rcx, %rdx\n"
        ".globl reg_site_syscall\n"
        "reg_site_syscall:\n"
        "    syscall\n"
        "    ret\n"
        ".size reg_site, .-reg_site\n"
        ".p2align 5, 0xcc\n"
        ".globl reg_site_next\n"
        ".type reg_site_next, @function\n"
        "reg_site_next:\n"
        "    ret\n"
        ".size reg_site_next, .-reg_site_next\n");
long reg_site(long nr, long a, long b, long c);
extern const unsigned char reg_site_syscall[];

static volatile int reg_alarms;
static void on_reg_alarm(int sig) {
    (void)sig;
    reg_alarms++;
}

static int regsite(int show_code) {
    pid_t me = getpid();
    int bad = 0;
    for (int i = 0; i < 3; i++) {
        volatile long marker[4] = {1, 2, 3, 4};
        long r = reg_site(39, 7, 8, 9);
        bad += r != me || marker[0] != 1 || marker[3] != 4;
    }
    int p[2];
    if (pipe(p)) return 1;
    pid_t child = fork();
    if (child == 0) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, 0);
        write(p[1], "x", 1);
        _exit(0);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_reg_alarm;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, 0);
    struct itimerval it = {{0, 5000}, {0, 5000}};
    setitimer(ITIMER_REAL, &it, 0);
    char c = 0;
    long n = reg_site(0, p[0], (long)&c, 1);
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, 0);
    waitpid(child, 0, 0);
    printf("regsite: %d bad calls of 3, read %ld '%c' after %s\n", bad, n, c, reg_alarms > 0 ? "alarms" : "none");
    if (show_code) printf("regsite code: %02x\n", reg_site_syscall[0]);
    return 0;
}

/* Two sites whose only padding within a `jmp rel8` is one gap: the 18
   bytes between gap_a (206 bytes, its `syscall` at its end) and gap_b
   (its `syscall` near its start, then more than 127 bytes). Each takes a
   5-byte slot of the same gap. RAX from RDI. */
__asm__(".text\n"
        ".p2align 5, 0xcc\n"
        ".globl gap_a\n"
        ".type gap_a, @function\n"
        "gap_a:\n"
        "    .fill 200, 1, 0x90\n"
        "    mov %rdi, %rax\n"
        ".globl gap_a_syscall\n"
        "gap_a_syscall:\n"
        "    syscall\n"
        "    ret\n"
        ".size gap_a, .-gap_a\n"
        ".p2align 5, 0xcc\n"
        ".globl gap_b\n"
        ".type gap_b, @function\n"
        "gap_b:\n"
        "    mov %rdi, %rax\n"
        ".globl gap_b_syscall\n"
        "gap_b_syscall:\n"
        "    syscall\n"
        "    .fill 140, 1, 0x90\n"
        "    ret\n"
        ".size gap_b, .-gap_b\n");
long gap_a(long nr);
long gap_b(long nr);
extern const unsigned char gap_a_syscall[], gap_b_syscall[];

static int sharedgap(void) {
    long me = getpid();
    int bad = 0;
    for (int i = 0; i < 12; i++) bad += (gap_a(39) != me) + (gap_b(39) != me);
    printf("sharedgap: %d bad calls of 24, code %02x %02x\n", bad, gap_a_syscall[0], gap_b_syscall[0]);
    return 0;
}

/* A site with no padding within a `jmp rel8` (a long function right
   before it, more than 127 bytes after it): the 6-byte `mov` before its
   `syscall` moves to the stub (the third form). With RSI zero it jumps
   straight to the `syscall`, which must still work. Returns RAX + R9. */
__asm__(".text\n"
        ".p2align 5, 0xcc\n"
        ".globl third_pre\n"
        ".type third_pre, @function\n"
        "third_pre:\n"
        "    .fill 200, 1, 0x90\n"
        "    ret\n"
        ".size third_pre, .-third_pre\n"
        ".globl third_site\n"
        ".type third_site, @function\n"
        "third_site:\n"
        "    xor %r9d, %r9d\n"
        "    mov %rdi, %rax\n"
        "    test %rsi, %rsi\n"
        "    jz 1f\n"
        ".globl third_moved\n"
        "third_moved:\n"
        "    mov $0x11223344, %r9d\n"
        "1:  syscall\n"
        "    .fill 140, 1, 0x90\n"
        "    add %r9, %rax\n"
        "    ret\n"
        ".size third_site, .-third_site\n");
long third_site(long nr, long moved);
extern const unsigned char third_moved[];

static int thirdform(void) {
    long me = getpid();
    int bad = 0;
    for (int i = 0; i < 12; i++) {
        bad += third_site(39, 1) != me + 0x11223344;
        bad += third_site(39, 0) != me;
    }
    printf("thirdform: %d bad calls of 24, code %02x\n", bad, third_moved[0]);
    /* Code made writable gets its original bytes back. */
    void *page = (void *)((unsigned long)third_moved & ~4095ul);
    int r = mprotect(page, 8192, PROT_READ | PROT_WRITE | PROT_EXEC);
    bad = 0;
    for (int i = 0; i < 6; i++) bad += third_site(39, 1) != me + 0x11223344;
    printf("thirdform: writable %d, code %02x, %d bad calls of 6\n", r, *(volatile const unsigned char *)third_moved,
           bad);
    return 0;
}

/* The same shape, placed so that the `syscall` starts at a page's last
   byte (glibc 2.36's `__open64_nocancel` has one so): only the `mov`
   before it can become the jump (its 6 bytes end where the page does).
   The page the `syscall` ends in made writable must put the `mov` back,
   as the `syscall` is part of what the stub stands for. */
__asm__(".text\n"
        ".p2align 12, 0xcc\n"
        ".globl straddle_pre\n"
        ".type straddle_pre, @function\n"
        "straddle_pre:\n"
        "    .fill 4000, 1, 0x90\n"
        "    ret\n"
        ".size straddle_pre, .-straddle_pre\n"
        ".globl straddle_site\n"
        ".type straddle_site, @function\n"
        "straddle_site:\n"
        "    xor %r9d, %r9d\n"
        "    mov %rdi, %rax\n"
        "    test %rsi, %rsi\n"
        "    jz 1f\n"
        "    .fill 4089 - (. - straddle_pre), 1, 0x90\n"
        ".globl straddle_moved\n"
        "straddle_moved:\n"
        "    mov $0x11223344, %r9d\n"
        ".globl straddle_syscall\n"
        "straddle_syscall:\n"
        "1:  syscall\n"
        "    .fill 140, 1, 0x90\n"
        "    add %r9, %rax\n"
        "    ret\n"
        ".size straddle_site, .-straddle_site\n");
long straddle_site(long nr, long moved);
extern const unsigned char straddle_moved[], straddle_syscall[];

static int straddle(void) {
    long me = getpid();
    int bad = 0;
    for (int i = 0; i < 12; i++) {
        bad += straddle_site(39, 1) != me + 0x11223344;
        bad += straddle_site(39, 0) != me;
    }
    printf("straddle: syscall at page offset %lu, %d bad calls of 24, code %02x\n",
           (unsigned long)straddle_syscall & 4095, bad, straddle_moved[0]);
    /* Only the page the `syscall` ends in made writable. */
    void *next = (void *)(((unsigned long)straddle_syscall + 1) & ~4095ul);
    int r = mprotect(next, 4096, PROT_READ | PROT_WRITE | PROT_EXEC);
    bad = 0;
    for (int i = 0; i < 6; i++) bad += straddle_site(39, 1) != me + 0x11223344;
    printf("straddle: next page writable %d, code %02x, %d bad calls of 6\n", r,
           *(volatile const unsigned char *)straddle_moved, bad);
    /* Rewritten again (the next page executable only once more), then
       that page made not executable in a child: the call must fault
       before its `syscall` (exit(60)) runs, as it does natively. */
    r = mprotect(next, 4096, PROT_READ | PROT_EXEC);
    for (int i = 0; i < 12; i++) straddle_site(39, 1);
    int rewritten_again = straddle_moved[0] == 0xe9;
    pid_t child = fork();
    if (child == 0) {
        mprotect(next, 4096, PROT_READ);
        straddle_site(60, 1);
        _exit(0);
    }
    int st = 0;
    waitpid(child, &st, 0);
    printf("straddle: code again %s; next page not executable: %s\n", rewritten_again ? "e9" : "41",
           WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV ? "SIGSEGV" : WIFEXITED(st) ? "exited" : "other");
    return 0;
}

/* The same shape with a `mov` to memory before the `syscall` (6 bytes,
   so it moves to the stub too): when it faults, the handler must see
   the program's own address of the `mov` as RIP. Stores 0x11223344 at
   RSI, then makes call RDI. */
__asm__(".text\n"
        ".p2align 5, 0xcc\n"
        ".globl fault_pre\n"
        ".type fault_pre, @function\n"
        "fault_pre:\n"
        "    .fill 200, 1, 0x90\n"
        "    ret\n"
        ".size fault_pre, .-fault_pre\n"
        ".globl fault_site\n"
        ".type fault_site, @function\n"
        "fault_site:\n"
        "    mov %rdi, %rax\n"
        ".globl fault_moved\n"
        "fault_moved:\n"
        "    movl $0x11223344, (%rsi)\n"
        "    syscall\n"
        "    .fill 140, 1, 0x90\n"
        "    ret\n"
        ".size fault_site, .-fault_site\n");
long fault_site(long nr, int *to);
extern const unsigned char fault_moved[];

static sigjmp_buf fault_jmp;
static volatile long fault_rip, fault_addr, fault_code;
static void on_fault(int sig, siginfo_t *si, void *ctx) {
    (void)sig;
    fault_rip = ((ucontext_t *)ctx)->uc_mcontext.gregs[REG_RIP];
    fault_addr = (long)si->si_addr;
    fault_code = si->si_code;
    siglongjmp(fault_jmp, 1);
}

static int faultform(void) {
    long me = getpid();
    int cell = 0, bad = 0;
    for (int i = 0; i < 12; i++) bad += fault_site(39, &cell) != me || cell != 0x11223344;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &sa, 0);
    int faulted = 0;
    if (sigsetjmp(fault_jmp, 1) == 0) fault_site(39, (int *)8);
    else faulted = 1;
    printf("faultform: %d bad calls of 12, code %02x, faulted %d at the mov %d, address %#lx si_code %ld\n", bad,
           *(volatile const unsigned char *)fault_moved, faulted, fault_rip == (long)fault_moved, fault_addr,
           fault_code);
    return 0;
}

/* No other site has made the rewriter read this file's tables: getpid's
   first byte after 2 calls (not yet), then after 10. */
static int firstsite(void) {
    getpid();
    getpid();
    unsigned char two = *(volatile unsigned char *)getpid;
    for (int i = 0; i < 8; i++) getpid();
    unsigned char ten = *(volatile unsigned char *)getpid;
    printf("firstsite: after 2 calls %02x, after 10 calls %02x\n", two, ten);
    return 0;
}

static int code(void) {
    unsigned char before[7], after[7];
    memcpy(before, (void *)getpid, 7);
    hot();
    memcpy(after, (void *)getpid, 7);
    print_bytes("before:", before);
    print_bytes("after:", after);
    return 0;
}

static int checkpoint(void) {
    hot();
    char buf[256];
    int fd = open("/dev/hvsandbox/checkpoint", O_RDONLY);
    if (fd >= 0) {
        while (read(fd, buf, sizeof buf) > 0) {
        }
        close(fd);
    }
    print_bytes("at checkpoint:", (const unsigned char *)getpid);
    return code();
}

static int cost(long n) {
    struct timespec a, b;
    getpid();
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) getpid();
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
    return 0;
}

int main(int argc, char **argv) {
    /* The first site of a file makes 8 slow calls before the rewriter
       reads the file's tables; after that a site is rewritten at its
       fourth call (hot() makes enough), which the modes below rely on. */
    const char *mode = argc > 1 ? argv[1] : "loop";
    if (!strcmp(mode, "firstsite")) return firstsite();
    for (int i = 0; i < 10; i++) getppid();
    long n = argc > 2 ? atol(argv[2]) : 1000;
    if (!strcmp(mode, "loop")) return loop(n);
    if (!strcmp(mode, "redzone")) return redzone();
    if (!strcmp(mode, "null")) return null_read();
    if (!strcmp(mode, "fork")) return forked();
    if (!strcmp(mode, "signals")) return signals();
    if (!strcmp(mode, "jit")) return jit();
    if (!strcmp(mode, "enosys")) return enosys();
    if (!strcmp(mode, "unmap")) return unmap();
    if (!strcmp(mode, "code")) return code();
    if (!strcmp(mode, "falsematch")) return falsematch();
    if (!strcmp(mode, "regsite")) return regsite(0);
    if (!strcmp(mode, "regsite-code")) return regsite(1);
    if (!strcmp(mode, "sharedgap")) return sharedgap();
    if (!strcmp(mode, "thirdform")) return thirdform();
    if (!strcmp(mode, "straddle")) return straddle();
    if (!strcmp(mode, "faultform")) return faultform();
    if (!strcmp(mode, "checkpoint")) return checkpoint();
    if (!strcmp(mode, "cost")) return cost(n);
    return 2;
}
