/* Hostile signal calls, each child of 60 making 300 of them at random:
 * rt_sigaction with handlers, flags, restorers and masks from sane to
 * random (and the runtime's addresses, the vsyscall page, non-canonical
 * ones), rt_sigprocmask and sigaltstack with hostile pointers and
 * ranges, signals to itself (tgkill, rt_sigqueueinfo with random
 * siginfo), rt_sigtimedwait, and forged signal frames handed to
 * rt_sigreturn. A child may die of what it did; the parent must see every
 * one end and exit by itself. An argument varies the random sequence. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/time.h>
#include <unistd.h>
static uint64_t state = 0x1234567887654321ull;
static uint64_t rnd(void){ state ^= state << 13; state ^= state >> 7; state ^= state << 17; return state; }
static char altstack[65536];
static volatile unsigned long hits;
static void ok_handler(int s){ (void)s; hits++; }
static uint64_t hostile(void){
  static const uint64_t a[] = {0, 1, 0x1000, 0x7ffffffff000ull, 0x800000000000ull, 0xffff800000000000ull, 0xffffffffff600000ull, 0xffffffffff600400ull, UINT64_MAX};
  switch (rnd()%4) { case 0: return (uint64_t)ok_handler; case 1: return (uint64_t)altstack + rnd()%65536; case 2: return rnd(); default: return a[rnd()%9]; }
}
struct ksa { uint64_t handler, flags, restorer, mask; };
static void child_work(void){
  for (int i = 0; i < 300; i++) {
    int sig = 1 + rnd()%64;
    switch (rnd()%7) {
      case 0: { struct ksa k = {rnd()%3 ? (uint64_t)ok_handler : hostile(), rnd()%2 ? rnd() : 0x04000000 | (rnd()%0x10000000), hostile(), rnd()};
                syscall(SYS_rt_sigaction, sig, rnd()%4 ? &k : (void*)hostile(), rnd()%2 ? (void*)hostile() : NULL, rnd()%2 ? 8 : rnd()%32); break; }
      case 1: { uint64_t set = rnd(); syscall(SYS_rt_sigprocmask, rnd()%4, rnd()%4 ? &set : (void*)hostile(), rnd()%2 ? (void*)hostile() : NULL, 8); break; }
      case 2: { stack_t st = {(void*)(rnd()%2 ? (uint64_t)altstack : hostile()), (int)(rnd()%3), rnd()%2 ? sizeof altstack : rnd()}; syscall(SYS_sigaltstack, rnd()%4 ? &st : (void*)hostile(), rnd()%2 ? (void*)hostile() : NULL); break; }
      case 3: syscall(SYS_tgkill, getpid(), syscall(SYS_gettid), sig == SIGSTOP || sig == SIGKILL ? SIGUSR1 : sig); break;
      case 4: { uint64_t info[16]; for (int k = 0; k < 16; k++) info[k] = rnd(); syscall(SYS_rt_sigqueueinfo, getpid(), sig == SIGSTOP || sig == SIGKILL ? SIGUSR2 : sig, rnd()%4 ? (void*)info : (void*)hostile()); break; }
      case 5: { uint64_t set = rnd(); struct timespec ts = {0, rnd()%1000000}; syscall(SYS_rt_sigtimedwait, &set, rnd()%2 ? (void*)hostile() : NULL, &ts, 8); break; }
      default: if (rnd()%20 == 0) { /* a forged signal frame */ uint64_t frame[64]; for (int k = 0; k < 64; k++) frame[k] = rnd()%3 ? hostile() : rnd(); __asm__ volatile("mov %0, %%rsp; mov $15, %%eax; syscall" :: "r"(frame) : "memory"); } break;
    }
  }
  _exit(0);
}
int main(int argc, char **argv){
  if (argc > 1) state ^= strtoull(argv[1],0,0)*0x9e3779b97f4a7c15ull;
  setvbuf(stdout,NULL,_IONBF,0);
  for (int c = 0; c < 60; c++) {
    rnd();
    pid_t p = fork();
    if (p == 0) { alarm(5); child_work(); }
    int st; waitpid(p, &st, WUNTRACED);
    if (WIFSTOPPED(st)) { kill(p, SIGKILL); waitpid(p, &st, 0); }
  }
  printf("done: 60 children\n");
  return 0;
}
