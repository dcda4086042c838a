/* tok_encode.c — qs_tokenizer_encode: HF's pipeline over pieces
 * (tokenizer_internal.h) — added tokens matched in the raw text, the
 * normalizer on the pieces between them, added tokens matched in the
 * normalized text, the pre-tokenizers, the BPE model on each word, and the
 * post-processor when add_special_tokens is set — with all scratch space in
 * one per-call state, so that threads can share a tokenizer. */
#include "pipeline/formats/tokenizer/tokenizer_internal.h"

void qs_token_ids_free(qs_token_ids *v)
{
    if (!v) return;
    free(v->ids);
    v->ids = NULL;
    v->n = v->cap = 0;
}

static void enc_swap(enc *e)
{
    pvec t = e->cur;
    e->cur = e->nxt;
    e->nxt = t;
    e->nxt.n = 0;
}

static void enc_free(enc *e)
{
    qs_tok_re_state_free(&e->rs);
    qs_strbuf_free(&e->arena);
    qs_strbuf_free(&e->nb);
    qs_strbuf_free(&e->tmp);
    free(e->cur.p);
    free(e->nxt.p);
    free(e->sp);
    free(e->sy);
    free(e->heap);
    qs_strmap_free(&e->cache);
    qs_token_ids_free(&e->cache_ids);
    free(e->cache_run);
}

static qs_status encode_pieces(enc *e, const char *text, size_t len, qs_token_ids *out)
{
    const qs_tokenizer *t = e->t;
    qs_strbuf_put(&e->arena, text, len);
    if (e->arena.oom || !pvec_push(&e->cur, (piece){0, len, -1, true})) return nomem(t, e->err);
    /* 1. added tokens that match the raw text */
    for (size_t i = 0; i < e->cur.n; i++) QS_TRY(qs_tok_split_added(e, &t->raw_set, e->cur.p[i]));
    enc_swap(e);
    /* 2. normalize what is between them, then the added tokens that match normalized text */
    for (size_t i = 0; i < e->cur.n; i++) {
        piece p = e->cur.p[i];
        if (p.id < 0 && t->n_norms) {
            QS_TRY(qs_tok_normalize(t, &e->rs, e->arena.p + p.off, p.len, e->no_prefix && p.origin, &e->nb, &e->tmp,
                                    e->err));
            size_t off = arena_add(e, e->nb.p, e->nb.len);
            if (off == SIZE_MAX) return nomem(t, e->err);
            p.off = off;
            p.len = e->nb.len;
            if (!p.len) continue;
        }
        QS_TRY(qs_tok_split_added(e, &t->norm_set, p));
    }
    enc_swap(e);
    /* 3. pre-tokenizers, each over all pieces */
    for (size_t k = 0; k < t->n_pres; k++) {
        for (size_t i = 0; i < e->cur.n; i++) QS_TRY(qs_tok_pretokenize(e, &t->pres[k], e->cur.p[i]));
        enc_swap(e);
    }
    /* 4. the model */
    for (size_t i = 0; i < e->cur.n; i++) QS_TRY(qs_tok_bpe_encode(e, e->cur.p[i], out));
    return QS_OK;
}

qs_status qs_tokenizer_encode(const qs_tokenizer *t, const char *text, size_t len, const qs_encode_options *opts,
                              qs_token_ids *out, qs_error *err)
{
    size_t bad = qs_utf8_check(text, len);
    if (bad != len) return qs_error_set(err, QS_ERR_INPUT, "text: invalid UTF-8 at byte %zu", bad);
    bool special = opts && opts->add_special_tokens;
    if (special && t->post_unsupported)
        return qs_error_set(err, QS_ERR_UNSUPPORTED, "%s (encode without special tokens)", t->post_unsupported);
    enc e = {0};
    e.t = t;
    e.err = err;
    e.no_prefix = opts && opts->no_prefix_space;
    if (!qs_tok_re_state_init(&e.rs)) {
        enc_free(&e);
        return nomem(t, err);
    }
    size_t base = out->n;
    qs_status st = len ? encode_pieces(&e, text, len, out) : QS_OK;
    enc_free(&e);
    if (st != QS_OK) {
        out->n = base;
        return st;
    }
    if (special) return qs_tok_post_process(t, out, base, err);
    return QS_OK;
}
