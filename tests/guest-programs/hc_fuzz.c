#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
/* Runs a script of raw hypercalls and memory pokes (tests/fuzz.rs makes
 * them): a program at CPL3 can reach the hypercall block and the doorbell,
 * so a hostile guest can send the host anything. The script comes on
 * stdin, read whole before the first record runs (a forged READ would
 * otherwise eat it):
 *   u32 n, then n bytes copied to the start of `scratch`;
 *   then 64-byte records: u8 op, u8 reloc, u8 width, 5 pad, u64 a, u64 b[6].
 * Bit i of reloc adds the address of `scratch` to b[i] (bit 6: to a).
 * At the end it prints each hypercall's number and result, one per line. */

enum { OP_HC, OP_POKE, OP_SPIN, OP_READ_BELL, OP_WRITE, OP_EXIT, OP_POKE_INDIRECT };

struct rec {
    uint8_t op, reloc, width, pad[5];
    uint64_t a, b[6];
};

#define SCRATCH_SIZE 65536
static unsigned char scratch[SCRATCH_SIZE] __attribute__((aligned(4096)));
static unsigned char script[1 << 20];
static uint64_t results[4096][2];

static void store(uint64_t addr, uint64_t value, int width) {
    switch (width) {
    case 1: *(volatile uint8_t *)(uintptr_t)addr = (uint8_t)value; break;
    case 2: *(volatile uint16_t *)(uintptr_t)addr = (uint16_t)value; break;
    case 4: *(volatile uint32_t *)(uintptr_t)addr = (uint32_t)value; break;
    default: *(volatile uint64_t *)(uintptr_t)addr = value; break;
    }
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    volatile uint64_t *hc = (volatile uint64_t *)(uintptr_t)strtoull(argv[1], 0, 16);
    uint64_t bell = strtoull(argv[2], 0, 16);

    size_t len = 0;
    for (ssize_t n; len < sizeof script && (n = read(0, script + len, sizeof script - len)) > 0;) len += (size_t)n;
    /* Every page of scratch mapped, so buffers in it reach the host. */
    memset(scratch, 0, sizeof scratch);
    uint32_t init = 0;
    size_t at = 0;
    if (len >= 4) {
        memcpy(&init, script, 4);
        at = 4;
    }
    size_t n = init < len - at ? init : len - at;
    memcpy(scratch, script + at, n < SCRATCH_SIZE ? n : SCRATCH_SIZE);
    at += n;

    size_t nres = 0;
    uint64_t base = (uint64_t)(uintptr_t)scratch;
    for (; at + sizeof(struct rec) <= len; at += sizeof(struct rec)) {
        struct rec r;
        memcpy(&r, script + at, sizeof r);
        for (int i = 0; i < 6; i++)
            if (r.reloc & (1 << i)) r.b[i] += base;
        if (r.reloc & 64) r.a += base;
        switch (r.op) {
        case OP_HC:
            for (int i = 0; i < 6; i++) hc[i] = r.b[i];
            hc[6] = 0xdeadbeef;
            store(bell, r.a, r.width);
            if (nres < 4096) {
                results[nres][0] = r.a;
                results[nres][1] = hc[6];
                nres++;
            }
            break;
        case OP_POKE: store(r.a, r.b[0], r.width); break;
        case OP_POKE_INDIRECT:
            /* At (value of the u64 at b[1]) + b[2] + a: e.g. a field of the
             * output buffers whose address the runtime publishes. */
            store(*(volatile uint64_t *)(uintptr_t)r.b[1] + r.b[2] + r.a, r.b[0], r.width);
            break;
        case OP_SPIN:
            for (;;) __asm__ volatile("pause");
        case OP_READ_BELL: (void)*(volatile uint64_t *)(uintptr_t)bell; break;
        case OP_WRITE: {
            size_t off = r.a % SCRATCH_SIZE, n = r.b[0] % (SCRATCH_SIZE - off + 1);
            (void)!write(r.b[1] == 2 ? 2 : 1, scratch + off, n);
            break;
        }
        case OP_EXIT: exit((int)(r.a & 0xff));
        default: break;
        }
    }
    for (size_t i = 0; i < nres; i++)
        printf("%llu %lld\n", (unsigned long long)results[i][0], (long long)results[i][1]);
    return 0;
}
