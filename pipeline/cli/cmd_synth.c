/* cmd_synth.c — `qshard synth`: write a deterministic synthetic HF checkpoint. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "pipeline/cli/cli.h"
#include "pipeline/synth.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: qshard synth --arch llama|opt|bloom --layers N --hidden D --out DIR [options]\n\n"
            "Writes a synthetic HF checkpoint (config.json + safetensors) whose weights look like\n"
            "a trained LLM's: ~1/sqrt(in) scales, heavy-tailed rows, and a few outlier hidden\n"
            "channels ~20x the median in every linear's input (LLM.int8()-style). Same options\n"
            "give byte-identical files; tensors are generated in chunks, so memory stays small.\n\n"
            "options:\n"
            "  --heads H            attention heads (default hidden/64, or hidden/16, or 1)\n"
            "  --kv-heads K         llama key/value heads (GQA; default = heads)\n"
            "  --ffn F              MLP width (llama: 8/3·hidden rounded up; opt: 4·hidden; bloom: fixed 4·hidden)\n"
            "  --vocab V            vocabulary (default llama 32000, opt 50272, bloom 250880)\n"
            "  --max-pos P          max positions (llama/opt; default 2048)\n"
            "  --dtype f32|f16|bf16 storage dtype (default f32)\n"
            "  --seed S             random seed (default 0)\n"
            "  --tie                llama: tie lm_head to the embedding (opt and bloom are always tied)\n"
            "  --outliers N         outlier channels (default hidden/128 clamped to 1..6; 0 = none)\n"
            "  --max-shard-size SZ  shard above this (default 2GiB): model-0000i-of-0000n.safetensors + index\n");
}

/* Picks a default head count: head_dim 64 when it divides, else 16, else one head. */
static int default_heads(int hidden)
{
    if (hidden >= 64 && hidden % 64 == 0) return hidden / 64;
    if (hidden >= 16 && hidden % 16 == 0) return hidden / 16;
    return 1;
}

int qs_cmd_synth(int argc, char **argv)
{
    if (qs_cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    enum { O_ARCH = 256, O_LAYERS, O_HIDDEN, O_HEADS, O_KV, O_FFN, O_VOCAB, O_MAXPOS, O_DTYPE, O_SEED, O_TIE,
           O_OUTLIERS, O_SHARD, O_OUT };
    static const struct option opts[] = {
        {"arch", required_argument, 0, O_ARCH},       {"layers", required_argument, 0, O_LAYERS},
        {"hidden", required_argument, 0, O_HIDDEN},   {"heads", required_argument, 0, O_HEADS},
        {"kv-heads", required_argument, 0, O_KV},     {"ffn", required_argument, 0, O_FFN},
        {"vocab", required_argument, 0, O_VOCAB},     {"max-pos", required_argument, 0, O_MAXPOS},
        {"dtype", required_argument, 0, O_DTYPE},     {"seed", required_argument, 0, O_SEED},
        {"tie", no_argument, 0, O_TIE},               {"outliers", required_argument, 0, O_OUTLIERS},
        {"max-shard-size", required_argument, 0, O_SHARD}, {"out", required_argument, 0, O_OUT},
        {0, 0, 0, 0}};
    const char *arch_s = NULL, *out = NULL, *dtype_s = "f32";
    long layers = 0, hidden = 0, heads = 0, kv = 0, ffn = 0, vocab = 0, maxpos = 0, outliers = -1;
    unsigned long long seed = 0;
    uint64_t shard = 0;
    bool tie = false;
    qs_error err;
    qs_error_clear(&err);
    qs_status st = QS_OK;
    const long big = 1L << 30;
    optind = 0; /* full getopt re-initialisation: tests call commands more than once */
    opterr = 0;
    int c;
    while (st == QS_OK && (c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_ARCH: arch_s = optarg; break;
        case O_LAYERS: st = qs_parse_long("--layers", optarg, 1, 1000000, &layers, &err); break;
        case O_HIDDEN: st = qs_parse_long("--hidden", optarg, 1, big, &hidden, &err); break;
        case O_HEADS: st = qs_parse_long("--heads", optarg, 1, big, &heads, &err); break;
        case O_KV: st = qs_parse_long("--kv-heads", optarg, 1, big, &kv, &err); break;
        case O_FFN: st = qs_parse_long("--ffn", optarg, 1, big, &ffn, &err); break;
        case O_VOCAB: st = qs_parse_long("--vocab", optarg, 1, big, &vocab, &err); break;
        case O_MAXPOS: st = qs_parse_long("--max-pos", optarg, 1, big, &maxpos, &err); break;
        case O_DTYPE: dtype_s = optarg; break;
        case O_SEED: {
            long s;
            st = qs_parse_long("--seed", optarg, 0, 0x7fffffffffffffffL, &s, &err);
            seed = (unsigned long long)s;
            break;
        }
        case O_TIE: tie = true; break;
        case O_OUTLIERS: st = qs_parse_long("--outliers", optarg, 0, QS_SYNTH_MAX_OUTLIERS, &outliers, &err); break;
        case O_SHARD: st = qs_parse_bytes("--max-shard-size", optarg, &shard, &err); break;
        case O_OUT: out = optarg; break;
        default:
            return qs_cli_usage_error("synth", "unknown option or missing value '%s'", argv[optind - 1]);
        }
    }
    if (st != QS_OK) return qs_cli_report("synth", &err);
    if (optind < argc) return qs_cli_usage_error("synth", "unexpected argument '%s'", argv[optind]);
    if (!arch_s || !layers || !hidden || !out)
        return qs_cli_usage_error("synth", "--arch, --layers, --hidden and --out are required");
    qs_arch arch;
    if (!qs_arch_parse(arch_s, &arch))
        return qs_cli_usage_error("synth", "--arch: '%s' is not one of llama, opt, bloom", arch_s);
    qs_dtype dt;
    if (strcmp(dtype_s, "f32") == 0) dt = QS_DTYPE_F32;
    else if (strcmp(dtype_s, "f16") == 0) dt = QS_DTYPE_F16;
    else if (strcmp(dtype_s, "bf16") == 0) dt = QS_DTYPE_BF16;
    else return qs_cli_usage_error("synth", "--dtype: '%s' is not one of f32, f16, bf16", dtype_s);
    if (arch != QS_ARCH_LLAMA && kv && kv != (heads ? heads : default_heads((int)hidden)))
        return qs_cli_usage_error("synth", "--kv-heads: %s has no grouped-query attention", arch_s);
    if (arch == QS_ARCH_BLOOM && ffn && ffn != 4 * hidden)
        return qs_cli_usage_error("synth", "--ffn: bloom's MLP is always 4 x hidden = %ld", 4 * hidden);
    if (arch == QS_ARCH_BLOOM && maxpos)
        return qs_cli_usage_error("synth", "--max-pos: bloom uses ALiBi and has no position limit");
    if (arch != QS_ARCH_LLAMA && tie)
        return qs_cli_usage_error("synth", "--tie: %s checkpoints are always tied", arch_s);

    qs_synth_opts o;
    memset(&o, 0, sizeof o);
    qs_model_config *cfg = &o.cfg;
    qs_model_config_defaults(cfg, arch);
    cfg->n_layers = (int)layers;
    cfg->hidden = (int)hidden;
    cfg->n_heads = heads ? (int)heads : default_heads((int)hidden);
    if (hidden % cfg->n_heads != 0)
        return qs_cli_usage_error("synth", "--heads: %d does not divide --hidden %ld", cfg->n_heads, hidden);
    cfg->head_dim = (int)hidden / cfg->n_heads;
    cfg->n_kv_heads = kv ? (int)kv : cfg->n_heads;
    if (cfg->n_heads % cfg->n_kv_heads != 0)
        return qs_cli_usage_error("synth", "--kv-heads: %d does not divide --heads %d", cfg->n_kv_heads,
                                  cfg->n_heads);
    if (arch == QS_ARCH_LLAMA) {
        /* LLaMA's rule: 2/3 of 4·hidden, rounded up to a multiple (256 at large widths): 4096 → 11008 */
        long mult = hidden >= 1024 ? 256 : 32;
        long f = (8 * hidden + 2) / 3;
        cfg->ffn = ffn ? (int)ffn : (int)((f + mult - 1) / mult * mult);
        cfg->vocab = vocab ? (int)vocab : 32000;
        cfg->norm_eps = 1e-5;
        cfg->tie_embeddings = tie;
        cfg->bos_id = 1;
        cfg->eos_id = 2;
    } else if (arch == QS_ARCH_OPT) {
        cfg->ffn = ffn ? (int)ffn : (int)(4 * hidden);
        cfg->vocab = vocab ? (int)vocab : 50272;
        cfg->bos_id = 2;
        cfg->eos_id = 2;
    } else {
        cfg->ffn = (int)(4 * hidden);
        cfg->vocab = vocab ? (int)vocab : 250880;
        cfg->bos_id = 1;
        cfg->eos_id = 2;
    }
    if (arch != QS_ARCH_BLOOM) cfg->max_positions = maxpos ? (int)maxpos : 2048;
    cfg->torch_dtype = dt;
    o.seed = seed;
    o.max_shard_bytes = shard;
    o.n_outliers = (int)outliers;

    qs_synth_model m;
    st = qs_synth_model_init(&m, &o, &err);
    if (st == QS_OK) {
        st = qs_synth_write(&m, out, &err);
        if (st == QS_OK) {
            printf("wrote %s: %s, %d layers, hidden %d, %zu tensors, %llu bytes in %d file%s; outlier channels",
                   out, qs_arch_name(arch), cfg->n_layers, cfg->hidden, m.count, (unsigned long long)m.total_bytes,
                   m.n_shards, m.n_shards == 1 ? "" : "s");
            for (int i = 0; i < m.n_outliers; i++) printf("%s%d", i ? "," : " ", m.outliers[i]);
            printf("%s\n", m.n_outliers ? "" : " none");
        }
        qs_synth_model_free(&m);
    }
    return st == QS_OK ? 0 : qs_cli_report("synth", &err);
}
