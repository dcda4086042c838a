/* test_model_config.c — config.json parsing for llama/mistral/qwen2, opt and
 * bloom, the tensor-name variants of each, error messages, config.json round
 * trips, and block parameter counts of BLOOM-176B and Llama-3.1-405B checked
 * against the closed-form formulas written out here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/formats/model_config.h"

/* ---- helpers ----------------------------------------------------------------- */

/* A name-existence callback over a NULL-terminated list. */
static bool in_list(const char *name, void *ctx)
{
    for (const char *const *p = ctx; *p; p++)
        if (strcmp(*p, name) == 0) return true;
    return false;
}

static qs_model_config parse_ok(const char *json)
{
    qs_model_config cfg;
    qs_error err;
    qs_error_clear(&err);
    qs_status st = qs_model_config_parse(json, "test/config.json", &cfg, &err);
    if (st != QS_OK) fail_msg("parse failed: %s", err.msg);
    return cfg;
}

/* Parses json expecting `code`; the message must contain every given fragment. */
static void parse_fails(const char *json, qs_status code, const char *frag1, const char *frag2)
{
    qs_model_config cfg;
    qs_error err;
    qs_error_clear(&err);
    assert_int_equal(qs_model_config_parse(json, "dir/config.json", &cfg, &err), code);
    if (!strstr(err.msg, "dir/config.json")) fail_msg("message does not name the file: %s", err.msg);
    if (frag1 && !strstr(err.msg, frag1)) fail_msg("message lacks '%s': %s", frag1, err.msg);
    if (frag2 && !strstr(err.msg, frag2)) fail_msg("message lacks '%s': %s", frag2, err.msg);
}

static const char *LLAMA_TINY =
    "{\"architectures\":[\"LlamaForCausalLM\"],\"attention_bias\":false,\"bos_token_id\":1,\"eos_token_id\":2,"
    "\"hidden_act\":\"silu\",\"hidden_size\":128,\"intermediate_size\":384,\"max_position_embeddings\":512,"
    "\"mlp_bias\":false,\"model_type\":\"llama\",\"num_attention_heads\":8,\"num_hidden_layers\":2,"
    "\"num_key_value_heads\":4,\"rms_norm_eps\":1e-06,\"rope_scaling\":null,\"rope_theta\":10000.0,"
    "\"tie_word_embeddings\":true,\"torch_dtype\":\"bfloat16\",\"vocab_size\":2048}";

/* ---- llama family ---------------------------------------------------------------- */

static void test_llama_fields(void **state)
{
    (void)state;
    qs_model_config c = parse_ok(LLAMA_TINY);
    assert_int_equal(c.arch, QS_ARCH_LLAMA);
    assert_string_equal(c.model_type, "llama");
    assert_int_equal(c.n_layers, 2);
    assert_int_equal(c.hidden, 128);
    assert_int_equal(c.n_heads, 8);
    assert_int_equal(c.n_kv_heads, 4);
    assert_int_equal(c.head_dim, 16);
    assert_int_equal(c.ffn, 384);
    assert_int_equal(c.vocab, 2048);
    assert_int_equal(c.max_positions, 512);
    assert_true(c.norm_eps == 1e-6);
    assert_int_equal(c.norm, QS_NORM_RMS);
    assert_int_equal(c.act, QS_ACT_SILU);
    assert_int_equal(c.pos, QS_POS_ROPE);
    assert_true(c.rope_theta == 10000.0);
    assert_int_equal(c.rope_scaling, QS_ROPE_SCALING_NONE);
    assert_false(c.qkv_bias || c.o_bias || c.mlp_bias);
    assert_true(c.tie_embeddings);
    assert_int_equal(c.bos_id, 1);
    assert_int_equal(c.eos_id, 2);
    assert_int_equal(c.torch_dtype, QS_DTYPE_BF16);
    /* 656,000 params in total per the model card: 2 blocks of 196,864 + 2048*128 + 128 */
    assert_int_equal(qs_block_param_count(&c), 196864);
}

static void test_llama_defaults_and_variants(void **state)
{
    (void)state;
    /* Minimal llama: no kv heads (= heads), untied by default, no dtype (F32),
     * HF defaults for eps/theta/max positions. */
    qs_model_config c = parse_ok("{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":96,"
                                 "\"num_attention_heads\":4,\"num_hidden_layers\":1,\"vocab_size\":10}");
    assert_int_equal(c.n_kv_heads, 4);
    assert_false(c.tie_embeddings);
    assert_int_equal(c.torch_dtype, QS_DTYPE_F32);
    assert_true(c.norm_eps == 1e-6);
    assert_true(c.rope_theta == 10000.0);
    assert_int_equal(c.max_positions, 2048);
    assert_int_equal(c.bos_id, -1);
    assert_int_equal(c.eos_id, -1);

    /* attention_bias → q/k/v and o biases; mlp_bias; explicit head_dim that is not hidden/heads */
    c = parse_ok("{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":96,\"num_attention_heads\":4,"
                 "\"num_hidden_layers\":1,\"vocab_size\":10,\"attention_bias\":true,\"mlp_bias\":true,"
                 "\"head_dim\":32}");
    assert_true(c.qkv_bias && c.o_bias && c.mlp_bias);
    assert_int_equal(c.head_dim, 32);
    qs_model_names n;
    qs_error err;
    assert_int_equal(qs_model_names_init(&c, NULL, NULL, &n, &err), QS_OK);
    qs_block_linear lin[QS_MAX_BLOCK_LINEARS];
    assert_int_equal(qs_block_linears(&c, &n, 0, lin), 7);
    assert_int_equal(lin[0].out, 4 * 32); /* q: heads * head_dim */
    assert_int_equal(lin[3].in, 4 * 32);  /* o reads heads * head_dim */
    assert_string_equal(lin[3].bias, "model.layers.0.self_attn.o_proj.bias");
    assert_string_equal(lin[6].bias, "model.layers.0.mlp.down_proj.bias");

    /* qwen2: q/k/v bias always, never o */
    c = parse_ok("{\"model_type\":\"qwen2\",\"hidden_size\":64,\"intermediate_size\":96,\"num_attention_heads\":4,"
                 "\"num_key_value_heads\":2,\"num_hidden_layers\":1,\"vocab_size\":10,\"hidden_act\":\"silu\"}");
    assert_int_equal(c.arch, QS_ARCH_LLAMA);
    assert_string_equal(c.model_type, "qwen2");
    assert_true(c.qkv_bias);
    assert_false(c.o_bias);
    /* mistral is llama-shaped */
    c = parse_ok("{\"model_type\":\"mistral\",\"hidden_size\":64,\"intermediate_size\":96,\"num_attention_heads\":4,"
                 "\"num_key_value_heads\":1,\"num_hidden_layers\":3,\"vocab_size\":10,\"torch_dtype\":\"float16\","
                 "\"rope_scaling\":{\"type\":\"linear\",\"factor\":2.0}}");
    assert_int_equal(c.arch, QS_ARCH_LLAMA);
    assert_int_equal(c.n_kv_heads, 1);
    assert_int_equal(c.torch_dtype, QS_DTYPE_F16);
    assert_int_equal(c.rope_scaling, QS_ROPE_SCALING_LINEAR);
    assert_true(c.rope_factor == 2.0);
}

static void test_llama_names(void **state)
{
    (void)state;
    qs_model_config c = parse_ok(LLAMA_TINY);
    qs_model_names n;
    qs_error err;
    qs_error_clear(&err);

    /* transformers' own layout: embedding saved, lm_head tied to it */
    const char *hf[] = {"model.embed_tokens.weight", "model.norm.weight", "model.layers.0.input_layernorm.weight",
                        NULL};
    assert_int_equal(qs_model_names_init(&c, in_list, (void *)hf, &n, &err), QS_OK);
    assert_string_equal(n.prefix, "model.");
    assert_string_equal(n.embed, "model.embed_tokens.weight");
    assert_string_equal(n.lm_head, "model.embed_tokens.weight");
    assert_string_equal(n.final_norm_w, "model.norm.weight");
    assert_string_equal(n.final_norm_b, "");
    assert_string_equal(n.pos_embed, "");

    /* the tinystories f32 file: the tied matrix only under lm_head.weight */
    const char *f32[] = {"lm_head.weight", "model.norm.weight", "model.layers.0.input_layernorm.weight", NULL};
    assert_int_equal(qs_model_names_init(&c, in_list, (void *)f32, &n, &err), QS_OK);
    assert_string_equal(n.embed, "lm_head.weight");
    assert_string_equal(n.lm_head, "lm_head.weight");

    /* both present (untied or saved twice): each is itself */
    const char *both[] = {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight", NULL};
    assert_int_equal(qs_model_names_init(&c, in_list, (void *)both, &n, &err), QS_OK);
    assert_string_equal(n.embed, "model.embed_tokens.weight");
    assert_string_equal(n.lm_head, "lm_head.weight");

    /* a bare LlamaModel save without "model." */
    const char *bare[] = {"embed_tokens.weight", "norm.weight", "layers.0.input_layernorm.weight", NULL};
    assert_int_equal(qs_model_names_init(&c, in_list, (void *)bare, &n, &err), QS_OK);
    assert_string_equal(n.prefix, "");
    assert_string_equal(n.embed, "embed_tokens.weight");
    qs_block_linear lin[QS_MAX_BLOCK_LINEARS];
    assert_int_equal(qs_block_linears(&c, &n, 1, lin), 7);
    assert_string_equal(lin[0].weight, "layers.1.self_attn.q_proj.weight");

    /* untied and no lm_head: an error naming lm_head.weight */
    c.tie_embeddings = false;
    assert_int_equal(qs_model_names_init(&c, in_list, (void *)hf, &n, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "lm_head.weight"));
    /* untied with only lm_head: the embedding is missing */
    assert_int_equal(qs_model_names_init(&c, in_list, (void *)f32, &n, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "model.embed_tokens.weight"));
    /* canonical untied names */
    assert_int_equal(qs_model_names_init(&c, NULL, NULL, &n, &err), QS_OK);
    assert_string_equal(n.lm_head, "lm_head.weight");
    /* nothing llama-like at all */
    const char *none[] = {"transformer.h.0.ln_f.weight", NULL};
    assert_int_equal(qs_model_names_init(&c, in_list, (void *)none, &n, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "model.norm.weight"));
}

static void test_llama_linears_and_norms(void **state)
{
    (void)state;
    qs_model_config c = parse_ok(LLAMA_TINY);
    qs_model_names n;
    qs_error err;
    assert_int_equal(qs_model_names_init(&c, NULL, NULL, &n, &err), QS_OK);
    qs_block_linear l[QS_MAX_BLOCK_LINEARS];
    assert_int_equal(qs_block_linears(&c, &n, 1, l), 7);
    const char *want[7] = {"model.layers.1.self_attn.q_proj.weight", "model.layers.1.self_attn.k_proj.weight",
                           "model.layers.1.self_attn.v_proj.weight", "model.layers.1.self_attn.o_proj.weight",
                           "model.layers.1.mlp.gate_proj.weight",    "model.layers.1.mlp.up_proj.weight",
                           "model.layers.1.mlp.down_proj.weight"};
    const qs_linear_role roles[7] = {QS_LIN_Q, QS_LIN_K, QS_LIN_V, QS_LIN_O, QS_LIN_GATE, QS_LIN_UP, QS_LIN_DOWN};
    const int stages[7] = {0, 0, 0, 1, 2, 2, 3};
    const int64_t shapes[7][2] = {{128, 128}, {64, 128}, {64, 128}, {128, 128}, {384, 128}, {384, 128}, {128, 384}};
    for (int i = 0; i < 7; i++) {
        assert_string_equal(l[i].weight, want[i]);
        assert_string_equal(l[i].bias, "");
        assert_int_equal(l[i].role, roles[i]);
        assert_int_equal(l[i].stage, stages[i]);
        assert_int_equal(l[i].out, shapes[i][0]);
        assert_int_equal(l[i].in, shapes[i][1]);
        /* short_name is the middle of the full name */
        assert_non_null(strstr(l[i].weight, l[i].short_name));
    }
    char aw[QS_NAME_MAX], ab[QS_NAME_MAX], mw[QS_NAME_MAX], mb[QS_NAME_MAX];
    qs_block_norm_names(&c, &n, 0, aw, ab, mw, mb);
    assert_string_equal(aw, "model.layers.0.input_layernorm.weight");
    assert_string_equal(mw, "model.layers.0.post_attention_layernorm.weight");
    assert_string_equal(ab, "");
    assert_string_equal(mb, "");
}

/* ---- opt ----------------------------------------------------------------------------- */

static const char *OPT_125M =
    "{\"_name_or_path\":\"facebook/opt-125m\",\"activation_dropout\":0.0,\"activation_function\":\"relu\","
    "\"architectures\":[\"OPTForCausalLM\"],\"attention_dropout\":0.0,\"bos_token_id\":2,\"do_layer_norm_before\":true,"
    "\"dropout\":0.1,\"eos_token_id\":2,\"ffn_dim\":3072,\"hidden_size\":768,\"init_std\":0.02,\"layerdrop\":0.0,"
    "\"max_position_embeddings\":2048,\"model_type\":\"opt\",\"num_attention_heads\":12,\"num_hidden_layers\":12,"
    "\"pad_token_id\":1,\"prefix\":\"</s>\",\"torch_dtype\":\"float16\",\"transformers_version\":\"4.21.0.dev0\","
    "\"use_cache\":true,\"vocab_size\":50272,\"word_embed_proj_dim\":768}";

static void test_opt(void **state)
{
    (void)state;
    qs_model_config c = parse_ok(OPT_125M);
    assert_int_equal(c.arch, QS_ARCH_OPT);
    assert_int_equal(c.hidden, 768);
    assert_int_equal(c.n_heads, 12);
    assert_int_equal(c.n_kv_heads, 12);
    assert_int_equal(c.head_dim, 64);
    assert_int_equal(c.ffn, 3072);
    assert_int_equal(c.n_layers, 12);
    assert_int_equal(c.vocab, 50272);
    assert_int_equal(c.max_positions, 2048);
    assert_int_equal(c.pos_offset, 2);
    assert_int_equal(c.norm, QS_NORM_LAYER);
    assert_int_equal(c.act, QS_ACT_RELU);
    assert_int_equal(c.pos, QS_POS_LEARNED);
    assert_true(c.norm_eps == 1e-5);
    assert_true(c.do_layer_norm_before);
    assert_true(c.qkv_bias && c.o_bias && c.mlp_bias);
    assert_true(c.tie_embeddings);
    /* 4 h^2 + 2 h f weights, 4 h + f + h biases, 2 LayerNorms of 2 h */
    const int64_t h = 768, f = 3072;
    assert_true(qs_block_param_count(&c) == 4 * h * h + 2 * h * f + 4 * h + f + h + 4 * h);

    qs_model_names n;
    qs_error err;
    const char *hf[] = {"model.decoder.embed_tokens.weight", "model.decoder.embed_positions.weight",
                        "model.decoder.final_layer_norm.weight", NULL};
    assert_int_equal(qs_model_names_init(&c, in_list, (void *)hf, &n, &err), QS_OK);
    assert_string_equal(n.prefix, "model.decoder.");
    assert_string_equal(n.embed, "model.decoder.embed_tokens.weight");
    assert_string_equal(n.lm_head, "model.decoder.embed_tokens.weight");
    assert_string_equal(n.pos_embed, "model.decoder.embed_positions.weight");
    assert_string_equal(n.final_norm_w, "model.decoder.final_layer_norm.weight");
    assert_string_equal(n.final_norm_b, "model.decoder.final_layer_norm.bias");
    const char *old[] = {"decoder.embed_tokens.weight", "decoder.embed_positions.weight", "lm_head.weight", NULL};
    assert_int_equal(qs_model_names_init(&c, in_list, (void *)old, &n, &err), QS_OK);
    assert_string_equal(n.prefix, "decoder.");
    assert_string_equal(n.lm_head, "lm_head.weight");

    qs_block_linear l[QS_MAX_BLOCK_LINEARS];
    assert_int_equal(qs_block_linears(&c, &n, 3, l), 6);
    const char *want[6] = {"decoder.layers.3.self_attn.q_proj", "decoder.layers.3.self_attn.k_proj",
                           "decoder.layers.3.self_attn.v_proj", "decoder.layers.3.self_attn.out_proj",
                           "decoder.layers.3.fc1",              "decoder.layers.3.fc2"};
    const int stages[6] = {0, 0, 0, 1, 2, 3};
    for (int i = 0; i < 6; i++) {
        char w[QS_NAME_MAX], b[QS_NAME_MAX];
        snprintf(w, sizeof w, "%s.weight", want[i]);
        snprintf(b, sizeof b, "%s.bias", want[i]);
        assert_string_equal(l[i].weight, w);
        assert_string_equal(l[i].bias, b);
        assert_int_equal(l[i].stage, stages[i]);
    }
    assert_int_equal(l[4].out, 3072);
    assert_int_equal(l[4].in, 768);
    assert_int_equal(l[5].out, 768);
    assert_int_equal(l[5].in, 3072);
    char aw[QS_NAME_MAX], ab[QS_NAME_MAX], mw[QS_NAME_MAX], mb[QS_NAME_MAX];
    qs_block_norm_names(&c, &n, 3, aw, ab, mw, mb);
    assert_string_equal(aw, "decoder.layers.3.self_attn_layer_norm.weight");
    assert_string_equal(ab, "decoder.layers.3.self_attn_layer_norm.bias");
    assert_string_equal(mw, "decoder.layers.3.final_layer_norm.weight");
    assert_string_equal(mb, "decoder.layers.3.final_layer_norm.bias");

    /* opt-350m's projection is refused; so is a non-relu activation */
    parse_fails("{\"model_type\":\"opt\",\"hidden_size\":1024,\"num_attention_heads\":16,\"ffn_dim\":4096,"
                "\"num_hidden_layers\":24,\"vocab_size\":50272,\"max_position_embeddings\":2048,"
                "\"word_embed_proj_dim\":512}",
                QS_ERR_UNSUPPORTED, "word_embed_proj_dim", "512");
    parse_fails("{\"model_type\":\"opt\",\"hidden_size\":64,\"num_attention_heads\":4,\"ffn_dim\":256,"
                "\"num_hidden_layers\":2,\"vocab_size\":100,\"max_position_embeddings\":64,"
                "\"activation_function\":\"gelu\"}",
                QS_ERR_UNSUPPORTED, "activation_function", "gelu");
    /* post-LN OPT has no final layer norm; enable_bias false drops the biases */
    c = parse_ok("{\"model_type\":\"opt\",\"hidden_size\":64,\"num_attention_heads\":4,\"ffn_dim\":256,"
                 "\"num_hidden_layers\":2,\"vocab_size\":100,\"max_position_embeddings\":64,"
                 "\"do_layer_norm_before\":false,\"enable_bias\":false}");
    assert_false(c.do_layer_norm_before);
    assert_false(c.qkv_bias || c.o_bias || c.mlp_bias);
    assert_int_equal(qs_model_names_init(&c, NULL, NULL, &n, &err), QS_OK);
    assert_string_equal(n.final_norm_w, "");
    assert_int_equal(qs_block_linears(&c, &n, 0, l), 6);
    assert_string_equal(l[0].bias, "");
}

/* ---- bloom ----------------------------------------------------------------------------- */

static void test_bloom(void **state)
{
    (void)state;
    /* bloom-560m style field names */
    qs_model_config c = parse_ok("{\"model_type\":\"bloom\",\"hidden_size\":1024,\"n_head\":16,\"n_layer\":24,"
                                 "\"vocab_size\":250880,\"layer_norm_epsilon\":1e-05,\"bos_token_id\":1,"
                                 "\"eos_token_id\":2}");
    assert_int_equal(c.arch, QS_ARCH_BLOOM);
    assert_int_equal(c.hidden, 1024);
    assert_int_equal(c.n_heads, 16);
    assert_int_equal(c.n_layers, 24);
    assert_int_equal(c.ffn, 4096);
    assert_int_equal(c.max_positions, 0);
    assert_int_equal(c.pos, QS_POS_ALIBI);
    assert_int_equal(c.act, QS_ACT_GELU_TANH);
    assert_int_equal(c.norm, QS_NORM_LAYER);
    assert_true(c.embed_layernorm);
    assert_true(c.tie_embeddings);
    assert_true(c.qkv_bias && c.o_bias && c.mlp_bias);
    /* the other spellings: n_embed, num_attention_heads, num_hidden_layers */
    qs_model_config c2 = parse_ok("{\"model_type\":\"bloom\",\"n_embed\":1024,\"num_attention_heads\":16,"
                                  "\"num_hidden_layers\":24,\"vocab_size\":250880}");
    assert_int_equal(c2.hidden, 1024);
    assert_int_equal(c2.n_heads, 16);
    assert_int_equal(c2.n_layers, 24);

    qs_model_names n;
    qs_error err;
    const char *with[] = {"transformer.word_embeddings.weight", "transformer.word_embeddings_layernorm.weight",
                          NULL};
    assert_int_equal(qs_model_names_init(&c, in_list, (void *)with, &n, &err), QS_OK);
    assert_string_equal(n.prefix, "transformer.");
    assert_string_equal(n.embed, "transformer.word_embeddings.weight");
    assert_string_equal(n.lm_head, "transformer.word_embeddings.weight");
    assert_string_equal(n.embed_norm_w, "transformer.word_embeddings_layernorm.weight");
    assert_string_equal(n.embed_norm_b, "transformer.word_embeddings_layernorm.bias");
    assert_string_equal(n.final_norm_w, "transformer.ln_f.weight");
    assert_string_equal(n.final_norm_b, "transformer.ln_f.bias");
    const char *without[] = {"word_embeddings.weight", "word_embeddings_layernorm.weight", NULL};
    assert_int_equal(qs_model_names_init(&c, in_list, (void *)without, &n, &err), QS_OK);
    assert_string_equal(n.prefix, "");
    assert_string_equal(n.embed, "word_embeddings.weight");
    assert_string_equal(n.final_norm_w, "ln_f.weight");

    qs_block_linear l[QS_MAX_BLOCK_LINEARS];
    assert_int_equal(qs_block_linears(&c, &n, 5, l), 4);
    assert_string_equal(l[0].weight, "h.5.self_attention.query_key_value.weight");
    assert_string_equal(l[0].bias, "h.5.self_attention.query_key_value.bias");
    assert_int_equal(l[0].role, QS_LIN_QKV);
    assert_int_equal(l[0].out, 3 * 1024);
    assert_string_equal(l[1].weight, "h.5.self_attention.dense.weight");
    assert_string_equal(l[2].weight, "h.5.mlp.dense_h_to_4h.weight");
    assert_int_equal(l[2].out, 4096);
    assert_string_equal(l[3].weight, "h.5.mlp.dense_4h_to_h.weight");
    assert_int_equal(l[3].in, 4096);
    for (int i = 0; i < 4; i++) assert_int_equal(l[i].stage, i);
    char aw[QS_NAME_MAX], ab[QS_NAME_MAX], mw[QS_NAME_MAX], mb[QS_NAME_MAX];
    qs_block_norm_names(&c, &n, 5, aw, ab, mw, mb);
    assert_string_equal(aw, "h.5.input_layernorm.weight");
    assert_string_equal(ab, "h.5.input_layernorm.bias");
    assert_string_equal(mw, "h.5.post_attention_layernorm.weight");
    assert_string_equal(mb, "h.5.post_attention_layernorm.bias");

    parse_fails("{\"model_type\":\"bloom\",\"hidden_size\":64,\"n_head\":4,\"n_layer\":2,\"vocab_size\":10,"
                "\"apply_residual_connection_post_layernorm\":true}",
                QS_ERR_UNSUPPORTED, "apply_residual_connection_post_layernorm", NULL);
}

/* ---- the big configs in jobs/configs -------------------------------------------------- */

static qs_status load_job_config(const char *file, qs_model_config *c, qs_error *err)
{
    const char *src = getenv("QS_SOURCE_DIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/jobs/configs/%s", src ? src : ".", file);
    return qs_model_config_load(path, c, err);
}

static void test_bloom_176b(void **state)
{
    (void)state;
    qs_model_config c;
    qs_error err;
    if (load_job_config("bloom-176b.json", &c, &err) != QS_OK) fail_msg("%s", err.msg);
    assert_int_equal(c.arch, QS_ARCH_BLOOM);
    assert_int_equal(c.n_layers, 70);
    assert_int_equal(c.hidden, 14336);
    assert_int_equal(c.n_heads, 112);
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.vocab, 250880);
    assert_int_equal(c.torch_dtype, QS_DTYPE_BF16);
    /* per block: qkv 3h^2+3h, dense h^2+h, h_to_4h 4h^2+4h, 4h_to_h 4h^2+h, two LayerNorms 4h */
    const int64_t h = 14336;
    const int64_t per_block = 12 * h * h + 13 * h;
    assert_true(qs_block_param_count(&c) == per_block);
    assert_true(per_block > 2.46e9 && per_block < 2.47e9);
    /* whole model (embedding + its LayerNorm + blocks + ln_f, lm_head tied): the published 176,247,271,424 */
    const int64_t total = (int64_t)c.vocab * h + 2 * h + 70 * per_block + 2 * h;
    assert_true(total == INT64_C(176247271424));
}

static void test_llama_405b(void **state)
{
    (void)state;
    qs_model_config c;
    qs_error err;
    if (load_job_config("llama-3.1-405b.json", &c, &err) != QS_OK) fail_msg("%s", err.msg);
    assert_int_equal(c.arch, QS_ARCH_LLAMA);
    assert_int_equal(c.n_layers, 126);
    assert_int_equal(c.hidden, 16384);
    assert_int_equal(c.n_heads, 128);
    assert_int_equal(c.n_kv_heads, 8);
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.ffn, 53248);
    assert_int_equal(c.vocab, 128256);
    assert_true(c.rope_theta == 500000.0);
    assert_int_equal(c.rope_scaling, QS_ROPE_SCALING_LLAMA3);
    assert_true(c.rope_factor == 8.0);
    assert_true(c.rope_low_freq_factor == 1.0);
    assert_true(c.rope_high_freq_factor == 4.0);
    assert_int_equal(c.rope_original_max_positions, 8192);
    assert_true(c.norm_eps == 1e-5);
    assert_false(c.tie_embeddings);
    assert_int_equal(c.bos_id, 128000);
    assert_int_equal(c.eos_id, 128001); /* first of the list */
    /* q and o: h*h each; k and v: h*(8*128) each; 3 MLP matrices h*f; 2 RMSNorms h */
    const int64_t h = 16384, kv = 8 * 128, f = 53248;
    const int64_t per_block = 2 * h * h + 2 * h * kv + 3 * h * f + 2 * h;
    assert_true(qs_block_param_count(&c) == per_block);
    /* whole model, untied: 405,853,388,800 parameters (Meta's "405B") */
    const int64_t total = 2 * (int64_t)c.vocab * h + 126 * per_block + h;
    assert_true(total == INT64_C(405853388800));
}

/* ---- errors ------------------------------------------------------------------------------ */

static void test_errors(void **state)
{
    (void)state;
    parse_fails("{\"model_type\":\"gpt2\"}", QS_ERR_UNSUPPORTED, "gpt2", "llama, mistral, qwen2, opt, bloom");
    parse_fails("{\"hidden_size\":4}", QS_ERR_INPUT, "model_type", NULL);
    parse_fails("{not json", QS_ERR_INPUT, "JSON", NULL);
    parse_fails("[1,2]", QS_ERR_INPUT, "object", NULL);
    parse_fails("{\"model_type\":\"llama\",\"hidden_size\":64,\"num_attention_heads\":4,\"num_hidden_layers\":1,"
                "\"vocab_size\":10}",
                QS_ERR_INPUT, "intermediate_size", "missing");
    parse_fails("{\"model_type\":\"llama\",\"hidden_size\":\"64\",\"intermediate_size\":96,\"num_attention_heads\":4,"
                "\"num_hidden_layers\":1,\"vocab_size\":10}",
                QS_ERR_INPUT, "hidden_size", NULL);
    parse_fails("{\"model_type\":\"llama\",\"hidden_size\":64.5,\"intermediate_size\":96,\"num_attention_heads\":4,"
                "\"num_hidden_layers\":1,\"vocab_size\":10}",
                QS_ERR_INPUT, "hidden_size", NULL);
    parse_fails("{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":96,\"num_attention_heads\":5,"
                "\"num_hidden_layers\":1,\"vocab_size\":10}",
                QS_ERR_INPUT, "64", "5");
    parse_fails("{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":96,\"num_attention_heads\":4,"
                "\"num_key_value_heads\":3,\"num_hidden_layers\":1,\"vocab_size\":10}",
                QS_ERR_INPUT, "num_key_value_heads", "3");
    parse_fails("{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":96,\"num_attention_heads\":4,"
                "\"num_hidden_layers\":0,\"vocab_size\":10}",
                QS_ERR_INPUT, "num_hidden_layers", NULL);
    parse_fails("{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":96,\"num_attention_heads\":4,"
                "\"num_hidden_layers\":1,\"vocab_size\":10,\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4}}",
                QS_ERR_UNSUPPORTED, "yarn", "rope_scaling");
    parse_fails("{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":96,\"num_attention_heads\":4,"
                "\"num_hidden_layers\":1,\"vocab_size\":10,\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8}}",
                QS_ERR_INPUT, "low_freq_factor", NULL);
    parse_fails("{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":96,\"num_attention_heads\":4,"
                "\"num_hidden_layers\":1,\"vocab_size\":10,\"hidden_act\":\"gelu\"}",
                QS_ERR_UNSUPPORTED, "hidden_act", NULL);
    parse_fails("{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":96,\"num_attention_heads\":4,"
                "\"num_hidden_layers\":1,\"vocab_size\":10,\"torch_dtype\":\"int8\"}",
                QS_ERR_UNSUPPORTED, "torch_dtype", "int8");
    parse_fails("{\"model_type\":\"bloom\",\"hidden_size\":64,\"n_layer\":2,\"vocab_size\":10}", QS_ERR_INPUT,
                "n_head", "num_attention_heads");

    qs_model_config c;
    qs_error err;
    qs_error_clear(&err);
    assert_int_equal(qs_model_config_load("/nonexistent/dir", &c, &err), QS_ERR_INPUT);
    assert_non_null(strstr(err.msg, "/nonexistent/dir"));
}

/* ---- config.json round trip ------------------------------------------------------------- */

static void roundtrip(const qs_model_config *a)
{
    char *json = NULL;
    qs_error err;
    assert_int_equal(qs_model_config_to_json(a, &json, &err), QS_OK);
    qs_model_config b = parse_ok(json);
    free(json);
    assert_int_equal(b.arch, a->arch);
    assert_string_equal(b.model_type, a->model_type);
    assert_int_equal(b.n_layers, a->n_layers);
    assert_int_equal(b.hidden, a->hidden);
    assert_int_equal(b.n_heads, a->n_heads);
    assert_int_equal(b.n_kv_heads, a->n_kv_heads);
    assert_int_equal(b.head_dim, a->head_dim);
    assert_int_equal(b.ffn, a->ffn);
    assert_int_equal(b.vocab, a->vocab);
    assert_int_equal(b.max_positions, a->max_positions);
    assert_true(b.norm_eps == a->norm_eps);
    assert_true(b.rope_theta == a->rope_theta);
    assert_int_equal(b.rope_scaling, a->rope_scaling);
    assert_true(b.rope_factor == a->rope_factor);
    assert_true(b.rope_low_freq_factor == a->rope_low_freq_factor);
    assert_true(b.rope_high_freq_factor == a->rope_high_freq_factor);
    assert_int_equal(b.rope_original_max_positions, a->rope_original_max_positions);
    assert_int_equal(b.qkv_bias, a->qkv_bias);
    assert_int_equal(b.o_bias, a->o_bias);
    assert_int_equal(b.mlp_bias, a->mlp_bias);
    assert_int_equal(b.tie_embeddings, a->tie_embeddings);
    assert_int_equal(b.do_layer_norm_before, a->do_layer_norm_before);
    assert_int_equal(b.bos_id, a->bos_id);
    assert_int_equal(b.eos_id, a->eos_id);
    assert_int_equal(b.torch_dtype, a->torch_dtype);
}

static void test_to_json_roundtrip(void **state)
{
    (void)state;
    qs_model_config c;
    qs_error err;
    assert_int_equal(load_job_config("llama-3.1-405b.json", &c, &err), QS_OK);
    roundtrip(&c);
    assert_int_equal(load_job_config("bloom-176b.json", &c, &err), QS_OK);
    roundtrip(&c);
    roundtrip((qs_model_config[]){parse_ok(OPT_125M)});
    roundtrip((qs_model_config[]){parse_ok(LLAMA_TINY)});
    c = parse_ok("{\"model_type\":\"qwen2\",\"hidden_size\":64,\"intermediate_size\":96,\"num_attention_heads\":4,"
                 "\"num_key_value_heads\":2,\"num_hidden_layers\":1,\"vocab_size\":10,\"tie_word_embeddings\":true}");
    roundtrip(&c);

    /* the HF class name and the fields transformers reads are there */
    char *json = NULL;
    assert_int_equal(qs_model_config_to_json(&c, &json, &err), QS_OK);
    assert_non_null(strstr(json, "\"Qwen2ForCausalLM\""));
    free(json);
    c = parse_ok(OPT_125M);
    assert_int_equal(qs_model_config_to_json(&c, &json, &err), QS_OK);
    assert_non_null(strstr(json, "\"OPTForCausalLM\""));
    assert_non_null(strstr(json, "\"ffn_dim\":\t3072"));
    free(json);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama_fields),   cmocka_unit_test(test_llama_defaults_and_variants),
        cmocka_unit_test(test_llama_names),    cmocka_unit_test(test_llama_linears_and_norms),
        cmocka_unit_test(test_opt),            cmocka_unit_test(test_bloom),
        cmocka_unit_test(test_bloom_176b),     cmocka_unit_test(test_llama_405b),
        cmocka_unit_test(test_errors),         cmocka_unit_test(test_to_json_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
