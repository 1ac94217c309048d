/* Hostile pointers: 70-odd system calls that read or write the
 * program's memory get addresses in and past the runtime's half of the
 * address space, non-canonical ones, the vsyscall page, page edges and
 * null, with random numbers beside them (calls that could wait are left
 * out, and descriptors are bad ones). Every call must fail (EFAULT,
 * EBADF, EINVAL, ...) or do no harm, and the program must end by itself.
 * An argument varies the random sequence. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>
static uint64_t state = 0x1234567887654321ull;
static uint64_t rnd(void){ state ^= state << 13; state ^= state >> 7; state ^= state << 17; return state; }
static const uint64_t away[] = {0x800000000000ull, 0xffff800000000000ull, 0xffff800000001000ull, 0xffff800000200000ull,
  0xffffffffff600000ull, 0x7ffffffff000ull, 0x7fffffffeff8ull, 0xffffffffff000000ull, 0, 0x1000, 0xfff};
static uint64_t ptr(void){ return away[rnd()%11] + (rnd()%2 ? rnd()%4096 : 0); }
static uint64_t num(void){ switch(rnd()%3){case 0: return rnd()%4096; case 1: return rnd()%8; default: return rnd();} }
static const long nrs[] = {SYS_read, SYS_write, SYS_pread64, SYS_pwrite64, SYS_readv, SYS_writev, SYS_stat, SYS_fstat,
  SYS_lstat, SYS_uname, SYS_getcwd, SYS_getrandom, SYS_clock_gettime, SYS_gettimeofday, SYS_sysinfo, SYS_times,
  SYS_getrusage, SYS_sched_getaffinity, SYS_rt_sigprocmask, SYS_sigaltstack, SYS_pipe, SYS_pipe2, SYS_socketpair,
  SYS_poll, SYS_select, SYS_epoll_wait, SYS_open, SYS_openat, SYS_access, SYS_readlink, SYS_getdents64, SYS_statx,
  SYS_nanosleep, SYS_clock_nanosleep, SYS_getitimer, SYS_setitimer, SYS_rt_sigaction, SYS_rt_sigpending,
  SYS_getresuid, SYS_prlimit64, SYS_getrlimit, SYS_set_robust_list, SYS_get_robust_list, SYS_futex, SYS_ioctl,
  SYS_fcntl, SYS_sendto, SYS_recvfrom, SYS_sendmsg, SYS_recvmsg, SYS_getsockopt, SYS_setsockopt, SYS_bind,
  SYS_connect, SYS_mkdir, SYS_rename, SYS_unlink, SYS_symlink, SYS_chdir, SYS_utimensat, SYS_timerfd_settime,
  SYS_timer_create, SYS_waitid, SYS_wait4, SYS_prctl, SYS_arch_prctl, SYS_inotify_add_watch, SYS_memfd_create,
  SYS_sched_getparam, SYS_capget, SYS_getgroups, SYS_rt_sigtimedwait, SYS_ppoll, SYS_pselect6};
int main(int argc, char **argv){
  if (argc > 1) state ^= strtoull(argv[1],0,0)*0x9e3779b97f4a7c15ull;
  setvbuf(stdout,NULL,_IONBF,0);

  for (int s=1;s<32;s++) if (s!=9&&s!=19) signal(s,SIG_IGN);

  long n=0;
  for (int i=0;i<20000;i++,n++){
    long nr = nrs[rnd() % (sizeof nrs / sizeof nrs[0])];
    uint64_t a[6];
    for (int k=0;k<6;k++) a[k] = rnd()%2 ? ptr() : num();
    if (nr == SYS_read || nr == SYS_pread64 || nr == SYS_readv || nr == SYS_recvfrom || nr == SYS_recvmsg) a[0] = 100;
    if (nr == SYS_write || nr == SYS_pwrite64 || nr == SYS_writev || nr == SYS_sendto || nr == SYS_sendmsg) a[0] = 100;
    if (nr == SYS_nanosleep || nr == SYS_clock_nanosleep || nr == SYS_futex || nr == SYS_rt_sigtimedwait || nr == SYS_poll || nr == SYS_ppoll || nr == SYS_select || nr == SYS_pselect6 || nr == SYS_epoll_wait || nr == SYS_wait4 || nr == SYS_waitid) { continue; }
    if (nr == SYS_setitimer || nr == SYS_rt_sigaction || nr == SYS_sigaltstack || nr == SYS_rt_sigprocmask || nr == SYS_arch_prctl || nr == SYS_chdir || nr == SYS_set_robust_list || nr == SYS_prctl) { for (int k=0;k<6;k++) if (rnd()%2==0) a[k]=ptr(); if (nr==SYS_arch_prctl) a[0] = 0x1003 + rnd()%2; if (nr==SYS_rt_sigaction) a[1]=0; if (nr==SYS_rt_sigprocmask) a[1]=0; if (nr==SYS_setitimer) a[1]=0; if (nr==SYS_sigaltstack) a[0]=0; if (nr==SYS_prctl) { a[0] = 16; } }
    syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
  }
  printf("done %ld\n", n); return 0;
}
