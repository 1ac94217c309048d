/* Hostile file-system calls: 20,000 random opens (any flags, never
 * blocking), reads, writes at any offset, truncates to any length,
 * renames (renameat2 with any flags), links, symlinks, unlinks, mkdirs,
 * rmdirs, chmods, utimes, fallocates, seeks, stats, directory reads,
 * dup2s, xattrs, mmaps, vectored I/O, copy_file_range and sendfile over a
 * small set of paths (files, directories, links, a FIFO, /proc, /dev,
 * /sys, "", "/", dot-dots) and descriptors, past the end of memory too.
 * Every call must return, the runtime must stay up, and the program must
 * end by itself. An argument varies the random sequence. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/xattr.h>
#include <unistd.h>
static uint64_t state = 0x1234567887654321ull;
static uint64_t rnd(void){ state ^= state << 13; state ^= state >> 7; state ^= state << 17; return state; }
static const char *names[] = {"/tmp/f/a", "/tmp/f/b", "/tmp/f/d", "/tmp/f/d/x", "/tmp/f/d/y/z", "/tmp/f/l", "/tmp/f/../f/a",
  "/tmp/f/a/", "/tmp/f", "/tmp/f/d/..", "/proc/self/fd/3", "/proc/self/comm", "/dev/null", "/dev/shm/s", "/tmp/f/fifo",
  "/tmp/f/sock", "", "/", "/tmp/f/very/deep/path/that/does/not/exist", "/sys/fs/cgroup/memory.max", "/tmp/f/d/y"};
static const char *name(void){ return names[rnd() % (sizeof names / sizeof names[0])]; }
static int fds[16];
static int fd(void){ int f = rnd()%8 ? fds[rnd()%16] : (int)(rnd()%2000) - 100; return f >= 0 && f <= 2 ? -1 : f; }
static char buf[65536];
int main(int argc, char **argv){
  if (argc > 1) state ^= strtoull(argv[1],0,0)*0x9e3779b97f4a7c15ull;
  setvbuf(stdout,NULL,_IONBF,0);
  for (int s=1;s<32;s++) if (s!=9&&s!=19&&s!=17) signal(s,SIG_IGN);
  mkdir("/tmp/f", 0777); mkdir("/tmp/f/d", 0777);
  for (int i=0;i<16;i++) fds[i] = -1;
  long n=0;
  for (int i=0;i<20000;i++,n++){
    int slot = rnd()%16;
    switch(rnd()%24){
      case 0: if (fds[slot] >= 0) close(fds[slot]); { int fl = rnd()%2 ? (int)rnd() : (O_RDWR|O_CREAT|(rnd()%2?O_TRUNC:0)|(rnd()%2?O_APPEND:0)); fds[slot] = open(name(), (fl & ~O_DIRECT) | O_NONBLOCK, 0600); } break;
      case 1: write(fd(), buf, rnd()%2 ? rnd()%100 : rnd()%65536); break;
      case 2: read(fd(), buf, rnd()%65536); break;
      case 3: pwrite(fd(), buf, rnd()%1000, rnd()%2 ? rnd()%100000 : (off_t)(rnd() >> 1)); break;
      case 4: ftruncate(fd(), rnd()%2 ? rnd()%100000 : (off_t)(rnd() >> (rnd()%64))); break;
      case 5: rename(name(), name()); break;
      case 6: link(name(), name()); break;
      case 7: symlink(name(), name()); break;
      case 8: unlink(name()); break;
      case 9: mkdir(name(), rnd()%01000); break;
      case 10: rmdir(name()); break;
      case 11: chmod(name(), rnd()%010000); break;
      case 12: { struct timespec t[2] = {{rnd()%2000000000, rnd()%1000000000}, {0, UTIME_NOW}}; utimensat(AT_FDCWD, name(), t, rnd()%2 ? AT_SYMLINK_NOFOLLOW : 0); break; }
      case 13: fallocate(fd(), rnd()%4, rnd()%100000, rnd()%100000); break;
      case 14: lseek(fd(), (off_t)(rnd() >> (rnd()%64)), rnd()%5); break;
      case 15: { struct stat st; fstatat(fd(), name(), &st, rnd()%2 ? AT_SYMLINK_NOFOLLOW : 0); break; }
      case 16: getdents64(fd(), buf, rnd()%4096); break;
      case 17: { int to = rnd()%2 ? fds[slot] : (int)(rnd()%70000); if (to < 0 || to > 2) dup2(fd(), to); break; }
      case 18: setxattr(name(), "user.k", buf, rnd()%70000, rnd()%3); getxattr(name(), "user.k", buf, rnd()%70000); break;
      case 19: { void *p = mmap(NULL, (rnd()%16+1)*4096, rnd()%4, rnd()%2 ? MAP_SHARED : MAP_PRIVATE, fd(), (rnd()%4)*4096); if (p != MAP_FAILED) munmap(p, 4096); break; }
      case 20: { struct iovec iov[4] = {{buf, rnd()%100}, {buf+100, rnd()%5000}, {0, rnd()%2}, {buf, rnd()%3}}; writev(fd(), iov, rnd()%5); readv(fd(), iov, rnd()%5); break; }
      case 21: syscall(SYS_renameat2, AT_FDCWD, name(), AT_FDCWD, name(), rnd()%8); break;
      case 22: { loff_t o1 = rnd()%1000, o2 = rnd()%1000; copy_file_range(fd(), rnd()%2 ? &o1 : NULL, fd(), rnd()%2 ? &o2 : NULL, rnd()%100000, 0); sendfile(fd(), fd(), NULL, rnd()%10000); break; }
      default: mknod(name(), (rnd()%2 ? S_IFIFO : S_IFREG) | 0600, 0); break;
    }
  }
  printf("done %ld\n", n); return 0;
}
