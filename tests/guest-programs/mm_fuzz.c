/* Hostile memory calls at the edges of the program's part of the
 * address space: mmap (MAP_FIXED, MAP_FIXED_NOREPLACE), munmap, mprotect,
 * mremap, madvise, mlock, mincore, msync, brk and process_madvise with
 * addresses in and past the runtime's half, non-canonical ones and the
 * vsyscall page, and lengths from 0 to 2^63. None of it is the program's
 * memory, so every call must fail or do nothing and the program must end
 * by itself. An argument varies the random sequence. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
static uint64_t state = 0x1234567887654321ull;
static uint64_t rnd(void){ state ^= state << 13; state ^= state >> 7; state ^= state << 17; return state; }
static volatile unsigned long sigs;
static void h(int s){ (void)s; sigs++; }
static const uint64_t away[] = {0x800000000000ull, 0xffff800000000000ull, 0xffff800000200000ull, 0xffff888000000000ull,
  0xffffffffff600000ull, 0xffffffffff000000ull, 0x7ffffffff000ull, 0xffffc90000000000ull, 0xfffffe0000000000ull};
static uint64_t addr(void){ return away[rnd()%9] + (rnd()%2 ? (rnd()%512)*4096 : 0); }
static uint64_t len(void){ switch(rnd()%4){case 0: return (rnd()%64)*4096; case 1: return rnd(); case 2: return 1ull<<(rnd()%64); default: return rnd()%100000;} }
int main(int argc, char **argv){
  if (argc > 1) state ^= strtoull(argv[1],0,0)*0x9e3779b97f4a7c15ull;
  setvbuf(stdout,NULL,_IONBF,0);
  for (int s=1;s<32;s++) if (s!=9&&s!=19) signal(s,h);
  long n=0;
  for (int i=0;i<20000;i++,n++){
    uint64_t a=addr(), l=len();
    switch(rnd()%10){
      case 0: syscall(SYS_mmap, a, l, rnd()%8, (rnd()%2?MAP_FIXED:0)|MAP_PRIVATE|MAP_ANONYMOUS|(rnd()%2?MAP_FIXED_NOREPLACE:0), -1, 0); break;
      case 1: syscall(SYS_munmap, a, l); break;
      case 2: syscall(SYS_mprotect, a, l, rnd()%8); break;
      case 3: syscall(SYS_mremap, a, l, len(), rnd()%4, addr()); break;
      case 4: syscall(SYS_madvise, a, l, rnd()%26); break;
      case 5: syscall(SYS_mlock, a, l); syscall(SYS_munlock, a, l); break;
      case 6: { unsigned char v[64]; syscall(SYS_mincore, a, l%(64*4096), v); break; }
      case 7: syscall(SYS_msync, a, l, rnd()%8); break;
      case 8: syscall(SYS_brk, rnd()%2 ? a : 0); break;
      default: syscall(SYS_process_madvise, -1, a, 1, rnd()%26, 0); break;
    }
  }
  printf("done %ld\n", n); return 0;
}
