/* QEMU TCG plugin (host side): a deterministic work figure for firmware under QEMU.
 * Counts every guest instruction, and separately the instructions executed between each hit of
 * `start` and the next hit of `stop` (summed over all pairs: the harness brackets each training
 * step with mt_work_begin()/mt_work_end(), so region / pairs = instructions per step, with the
 * printing in between left out). Self-contained: declares the few QEMU plugin API v1 symbols it
 * uses (QEMU 7.2 is API v1; a newer QEMU needs its own qemu-plugin.h).
 * Build: cc -shared -fPIC -O2 -o libinsncount.so insncount.c
 * Use:   qemu-system-... -plugin ./libinsncount.so,start=0xADDR,stop=0xADDR,outfile=F */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*tb_trans_cb_t)(qemu_plugin_id_t, struct qemu_plugin_tb *);
typedef void (*vcpu_udata_cb_t)(unsigned int, void *);
typedef void (*udata_cb_t)(qemu_plugin_id_t, void *);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t, tb_trans_cb_t);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *, size_t);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *);
void qemu_plugin_register_vcpu_insn_exec_inline(struct qemu_plugin_insn *, enum qemu_plugin_op,
                                                void *, uint64_t);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *, vcpu_udata_cb_t,
                                            enum qemu_plugin_cb_flags, void *);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t, udata_cb_t, void *);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

static uint64_t total, opened_at, region, pairs;
static int inside;
static uint64_t start_pc = UINT64_MAX, stop_pc = UINT64_MAX;
static const char *outfile;

static void on_start(unsigned int vcpu, void *u)
{
    (void)vcpu; (void)u;
    if (!inside) { inside = 1; opened_at = total; }
}

static void on_stop(unsigned int vcpu, void *u)
{
    (void)vcpu; (void)u;
    if (inside) { inside = 0; region += total - opened_at; pairs++; }
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t i, n = qemu_plugin_tb_n_insns(tb);
    (void)id;
    for (i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint64_t pc = qemu_plugin_insn_vaddr(insn);
        if (pc == start_pc) qemu_plugin_register_vcpu_insn_exec_cb(insn, on_start, QEMU_PLUGIN_CB_NO_REGS, NULL);
        if (pc == stop_pc) qemu_plugin_register_vcpu_insn_exec_cb(insn, on_stop, QEMU_PLUGIN_CB_NO_REGS, NULL);
        /* per-instruction inline add: exact even when a TB is left early */
        qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64, &total, 1);
    }
}

static void at_exit(qemu_plugin_id_t id, void *u)
{
    FILE *f = outfile ? fopen(outfile, "w") : stderr;
    (void)id; (void)u;
    if (!f) f = stderr;
    fprintf(f, "insns_total=%" PRIu64 "\ninsns_region=%" PRIu64 "\nregion_pairs=%" PRIu64 "\n",
            total, region, pairs);
    if (f != stderr) fclose(f);
}

__attribute__((visibility("default")))
int qemu_plugin_install(qemu_plugin_id_t id, const void *info, int argc, char **argv)
{
    int i;
    (void)info;
    for (i = 0; i < argc; i++) {
        if (!strncmp(argv[i], "start=", 6)) start_pc = strtoull(argv[i] + 6, NULL, 0) & ~1ull;
        else if (!strncmp(argv[i], "stop=", 5)) stop_pc = strtoull(argv[i] + 5, NULL, 0) & ~1ull;
        else if (!strncmp(argv[i], "outfile=", 8)) outfile = strdup(argv[i] + 8);
        else { fprintf(stderr, "insncount: unknown arg %s\n", argv[i]); return -1; }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
