/* tok_bpe.c — the BPE model (HF models::bpe): reading "model" from
 * tokenizer.json (vocab, merges, unk_token, fuse_unk, byte_fallback,
 * ignore_merges, and the character bigrams that let long words be cut), and
 * encoding one pre-tokenized word: characters become symbols (with byte
 * fallback and unk), then Word::merge_all with a min-heap on (rank, pos).
 * Words under 256 bytes are cached for the rest of the encode call. */
#include "pipeline/formats/tokenizer/tokenizer_internal.h"

#include <stdio.h>

struct sym {
    int32_t c, prev, next;
    uint32_t len;
};

struct hent {
    uint32_t rank, pos;
    int32_t new_id;
};

qs_status qs_tok_load_model(qs_tokenizer *t, const cJSON *m, qs_error *err)
{
    if (!cJSON_IsObject(m)) return qs_tok_jfail(t, err, QS_ERR_INPUT, "model", "missing or not an object");
    const char *type;
    QS_TRY(qs_tok_jstr(t, m, "type", "model", &type, err));
    if (!type) {
        /* HF accepts an untagged model; BPE is the one with merges. */
        if (!qs_tok_jget(m, "merges")) return qs_tok_jfail(t, err, QS_ERR_UNSUPPORTED, "model.type", "missing and the model has no merges (only BPE is supported)");
        type = "BPE";
    }
    if (strcmp(type, "BPE") != 0)
        return qs_tok_jfail(t, err, QS_ERR_UNSUPPORTED, "model.type",
                            "'%s' is not supported (qshard implements the BPE model only)", type);
    const cJSON *dropout = qs_tok_jget(m, "dropout");
    if (!qs_tok_jnull(dropout) && !(cJSON_IsNumber(dropout) && dropout->valuedouble == 0.0))
        return qs_tok_jfail(t, err, QS_ERR_UNSUPPORTED, "model.dropout",
                            "BPE dropout is random; only null or 0 is supported");
    const char *s;
    QS_TRY(qs_tok_jstr(t, m, "continuing_subword_prefix", "model", &s, err));
    if (s && *s)
        return qs_tok_jfail(t, err, QS_ERR_UNSUPPORTED, "model.continuing_subword_prefix", "'%s' is not supported", s);
    QS_TRY(qs_tok_jstr(t, m, "end_of_word_suffix", "model", &s, err));
    if (s && *s)
        return qs_tok_jfail(t, err, QS_ERR_UNSUPPORTED, "model.end_of_word_suffix", "'%s' is not supported", s);
    QS_TRY(qs_tok_jbool(t, m, "fuse_unk", "model", false, &t->fuse_unk, err));
    QS_TRY(qs_tok_jbool(t, m, "byte_fallback", "model", false, &t->byte_fallback, err));
    QS_TRY(qs_tok_jbool(t, m, "ignore_merges", "model", false, &t->ignore_merges, err));
    QS_TRY(qs_tok_jstr(t, m, "unk_token", "model", &s, err));
    if (s && !(t->unk_token = strdup(s))) return nomem(t, err);

    const cJSON *vocab = qs_tok_jget(m, "vocab");
    if (!cJSON_IsObject(vocab)) return qs_tok_jfail(t, err, QS_ERR_INPUT, "model.vocab", "missing or not an object of token: id");
    int32_t max_id = -1;
    const cJSON *it;
    long id_max = qs_tok_id_limit((size_t)cJSON_GetArraySize(vocab));
    cJSON_ArrayForEach(it, vocab) {
        long id = 0;
        char p[64];
        snprintf(p, sizeof p, "model.vocab[%.40s]", it->string);
        QS_TRY(qs_tok_jint(t, it, p, 0, INT32_MAX - 1, &id, err));
        if (id > id_max)
            return qs_tok_jfail(t, err, QS_ERR_INPUT, p,
                                "id %ld is above %ld: ids are bounded by the %d tokens the vocabulary defines "
                                "(2 x %d + 1024)",
                                id, id_max, cJSON_GetArraySize(vocab), cJSON_GetArraySize(vocab));
        if (id > max_id) max_id = (int32_t)id;
    }
    t->vocab_r_size = max_id + 1;
    t->vocab_r = calloc((size_t)t->vocab_r_size + 1, sizeof *t->vocab_r);
    t->vocab_r_len = calloc((size_t)t->vocab_r_size + 1, sizeof *t->vocab_r_len);
    if (!t->vocab_r || !t->vocab_r_len) return nomem(t, err);
    cJSON_ArrayForEach(it, vocab) {
        int32_t id = (int32_t)it->valuedouble;
        size_t len = strlen(it->string);
        char *k = mem_dup(it->string, len);
        if (!k) return nomem(t, err);
        if (t->vocab_r[id]) {
            /* two tokens with one id: both encode to it; decoding keeps the first */
            char **ex = realloc(t->extra, (t->n_extra + 1) * sizeof *ex);
            if (!ex) {
                free(k);
                return nomem(t, err);
            }
            t->extra = ex;
            t->extra[t->n_extra++] = k;
            if (!qs_strmap_put(&t->vocab, k, len, id)) return nomem(t, err);
            continue;
        }
        t->vocab_r[id] = k;
        t->vocab_r_len[id] = (uint32_t)len;
        if (!qs_strmap_put(&t->vocab, k, len, id)) return nomem(t, err);
    }
    /* Character bigrams inside tokens: where a long word has a pair of
     * characters that no token contains, no merge can ever join them, so BPE
     * can run on the two sides independently (bpe_word uses this). */
    for (int32_t id = 0; id < t->vocab_r_size + (int32_t)t->n_extra; id++) {
        const char *v = id < t->vocab_r_size ? t->vocab_r[id] : t->extra[id - t->vocab_r_size];
        if (!v) continue;
        size_t vn = strlen(v), i = 0, sub, l1 = qs_utf8_seq((const unsigned char *)v, vn, &sub);
        if (!l1) l1 = 1;
        while (vn && i + l1 < vn) {
            size_t l2 = qs_utf8_seq((const unsigned char *)v + i + l1, vn - i - l1, &sub);
            if (!l2) l2 = 1;
            if (!qs_strmap_put(&t->bigrams, v + i, l1 + l2, 1)) return nomem(t, err);
            i += l1;
            l1 = l2;
        }
    }
    for (int b = 0; b < 256; b++) {
        char code[8];
        snprintf(code, sizeof code, "<0x%02X>", b);
        t->byte_ids[b] = qs_strmap_get(&t->vocab, code, 6);
    }

    const cJSON *merges = qs_tok_jget(m, "merges");
    if (!qs_tok_jnull(merges) && !cJSON_IsArray(merges))
        return qs_tok_jfail(t, err, QS_ERR_INPUT, "model.merges", "must be an array of \"a b\" strings or [\"a\", \"b\"] pairs");
    uint32_t rank = 0;
    qs_strbuf ab = {0}; /* "a\0b\0ab" */
    qs_status st = QS_OK;
    cJSON_ArrayForEach(it, merges) {
        char p[64];
        snprintf(p, sizeof p, "model.merges[%u]", rank);
        const char *a, *b;
        if (cJSON_IsString(it)) {
            const char *sp = strchr(it->valuestring, ' ');
            if (!sp || strchr(sp + 1, ' ')) {
                st = qs_tok_jfail(t, err, QS_ERR_INPUT, p, "'%s' is not two tokens separated by one space",
                                  it->valuestring);
                break;
            }
            a = it->valuestring;
            b = sp + 1;
        } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 && cJSON_IsString(it->child) &&
                   cJSON_IsString(it->child->next)) {
            a = it->child->valuestring;
            b = it->child->next->valuestring;
        } else {
            st = qs_tok_jfail(t, err, QS_ERR_INPUT, p, "expected \"a b\" or [\"a\", \"b\"]");
            break;
        }
        size_t alen = cJSON_IsString(it) ? (size_t)(b - 1 - a) : strlen(a), blen = strlen(b);
        qs_strbuf_truncate(&ab, 0);
        qs_strbuf_put(&ab, a, alen);
        qs_strbuf_put(&ab, "", 1);
        qs_strbuf_put(&ab, b, blen);
        qs_strbuf_put(&ab, "", 1);
        qs_strbuf_put(&ab, a, alen);
        qs_strbuf_put(&ab, b, blen);
        if (ab.oom) {
            st = nomem(t, err);
            break;
        }
        const char *ta = ab.p, *tb = ab.p + alen + 1, *tab = ab.p + alen + blen + 2;
        int32_t ia = qs_strmap_get(&t->vocab, ta, alen), ib = qs_strmap_get(&t->vocab, tb, blen);
        int32_t inew = qs_strmap_get(&t->vocab, tab, alen + blen);
        if (ia < 0 || ib < 0 || inew < 0) {
            st = qs_tok_jfail(t, err, QS_ERR_INPUT, p, "token '%s' is not in model.vocab",
                              ia < 0 ? ta : ib < 0 ? tb : tab);
            break;
        }
        if (!qs_pairmap_put(&t->merges, ((uint64_t)(uint32_t)ia << 32) | (uint32_t)ib, rank, inew)) {
            st = nomem(t, err);
            break;
        }
        rank++;
    }
    qs_strbuf_free(&ab);
    return st;
}

/* ---- BPE (HF models/bpe: Word::merge_all with a min-heap on (rank, pos)) ---- */

static inline bool hent_less(hent a, hent b) { return a.rank != b.rank ? a.rank < b.rank : a.pos < b.pos; }

static bool heap_push(enc *e, hent h)
{
    if (e->n_heap == e->cap_heap) {
        size_t cap = e->cap_heap ? e->cap_heap * 2 : 256;
        hent *q = realloc(e->heap, cap * sizeof *q);
        if (!q) return false;
        e->heap = q;
        e->cap_heap = cap;
    }
    size_t i = e->n_heap++;
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!hent_less(h, e->heap[up])) break;
        e->heap[i] = e->heap[up];
        i = up;
    }
    e->heap[i] = h;
    return true;
}

static void heap_sift_down(enc *e, size_t i)
{
    hent x = e->heap[i];
    size_t n = e->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && hent_less(e->heap[c + 1], e->heap[c])) c++;
        if (!hent_less(e->heap[c], x)) break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    e->heap[i] = x;
}

static hent heap_pop(enc *e)
{
    hent top = e->heap[0];
    e->heap[0] = e->heap[--e->n_heap];
    if (e->n_heap) heap_sift_down(e, 0);
    return top;
}

/* HF Word::merge_all on symbols sy[0..ns), then their ids appended to out. */
static qs_status merge_symbols(enc *e, sym *sy, int32_t ns, qs_token_ids *out)
{
    const qs_tokenizer *t = e->t;
    /* the initial pairs, heapified in O(n) */
    e->n_heap = 0;
    if ((size_t)ns > e->cap_heap) {
        hent *q = realloc(e->heap, (size_t)ns * sizeof *q);
        if (!q) return nomem(t, e->err);
        e->heap = q;
        e->cap_heap = (size_t)ns;
    }
    for (int32_t i = 0; i + 1 < ns; i++) {
        const qs_pairmap_ent *m = qs_pairmap_get(&t->merges, sy[i].c, sy[i + 1].c);
        if (m) e->heap[e->n_heap++] = (hent){m->rank, (uint32_t)i, m->new_id};
    }
    for (size_t i = e->n_heap / 2; i-- > 0;) heap_sift_down(e, i);
    while (e->n_heap) {
        hent top = heap_pop(e);
        sym *cur = &sy[top.pos];
        if (cur->len == 0 || cur->next == -1) continue;
        int32_t next_pos = cur->next;
        sym right = sy[next_pos];
        const qs_pairmap_ent *m = qs_pairmap_get(&t->merges, cur->c, right.c);
        if (!m || m->new_id != top.new_id) continue; /* expired entry */
        cur->c = top.new_id;
        cur->len += right.len;
        cur->next = right.next;
        sy[next_pos].len = 0;
        if (right.next > -1 && right.next < ns) sy[right.next].prev = (int32_t)top.pos;
        if (cur->prev >= 0) {
            m = qs_pairmap_get(&t->merges, sy[cur->prev].c, cur->c);
            if (m && !heap_push(e, (hent){m->rank, (uint32_t)cur->prev, m->new_id})) return nomem(t, e->err);
        }
        if (cur->next >= 0 && cur->next < ns) {
            m = qs_pairmap_get(&t->merges, cur->c, sy[cur->next].c);
            if (m && !heap_push(e, (hent){m->rank, top.pos, m->new_id})) return nomem(t, e->err);
        }
    }
    for (int32_t i = 0; i < ns; i++)
        if (sy[i].len && !ids_push(out, sy[i].c)) return nomem(t, e->err);
    return QS_OK;
}

static qs_status bpe_word(enc *e, const char *w, size_t n, qs_token_ids *out)
{
    const qs_tokenizer *t = e->t;
    if (t->ignore_merges) {
        int32_t id = qs_strmap_get(&t->vocab, w, n);
        if (id >= 0) return ids_push(out, id) ? QS_OK : nomem(t, e->err);
    }
    if (n > e->cap_sy) {
        sym *q = realloc(e->sy, n * sizeof *q);
        if (!q) return nomem(t, e->err);
        e->sy = q;
        e->cap_sy = n;
    }
    sym *sy = e->sy;
    int32_t ns = 0;
#define ADD_SYM(id_, len_)                                                      \
    do {                                                                        \
        if (ns) sy[ns - 1].next = ns;                                           \
        sy[ns] = (sym){(id_), ns - 1, -1, (uint32_t)(len_)};                    \
        ns++;                                                                   \
    } while (0)
    int32_t unk_id = -1;
    size_t unk_len = 0, prev_i = 0;
    bool prev_vocab = false, cut = n >= 1024; /* cutting only pays off for long words */
    for (size_t i = 0, l; i < n; prev_i = i, i += l) {
        qs_utf8_get(w + i, &l);
        int32_t id = qs_strmap_get(&t->vocab, w + i, l);
        if (id >= 0) {
            /* both characters are tokens and no token holds the pair: no merge
             * crosses here, so the left part is final (unk is flushed too) */
            if (cut && prev_vocab && unk_id < 0 && qs_strmap_get(&t->bigrams, w + prev_i, i + l - prev_i) < 0) {
                QS_TRY(merge_symbols(e, sy, ns, out));
                ns = 0;
            }
            prev_vocab = true;
            if (unk_id >= 0) {
                ADD_SYM(unk_id, unk_len);
                unk_id = -1;
            }
            ADD_SYM(id, l);
            continue;
        }
        prev_vocab = false;
        if (t->byte_fallback) {
            bool all = true;
            for (size_t k = 0; k < l; k++) all = all && t->byte_ids[(unsigned char)w[i + k]] >= 0;
            if (all) {
                for (size_t k = 0; k < l; k++) ADD_SYM(t->byte_ids[(unsigned char)w[i + k]], 1);
                continue;
            }
        }
        if (t->unk_token) {
            if (unk_id >= 0 && t->fuse_unk) {
                unk_len += l;
            } else {
                if (unk_id >= 0) ADD_SYM(unk_id, unk_len);
                unk_id = qs_strmap_get(&t->vocab, t->unk_token, strlen(t->unk_token));
                if (unk_id < 0)
                    return qs_error_set(e->err, QS_ERR_INPUT, "%s: model.unk_token '%s' is not in model.vocab",
                                        t->name, t->unk_token);
                unk_len = l;
            }
        }
    }
    if (unk_id >= 0) ADD_SYM(unk_id, unk_len);
#undef ADD_SYM
    return merge_symbols(e, sy, ns, out);
}

/* Words shorter than this are cached per encode call (HF caches < 256 bytes too). */
#define QS_TOK_CACHE_MAX 256

qs_status qs_tok_bpe_encode(enc *e, piece p, qs_token_ids *out)
{
    const qs_tokenizer *t = e->t;
    if (p.id >= 0) return ids_push(out, p.id) ? QS_OK : nomem(t, e->err);
    const char *w = e->arena.p + p.off; /* the arena no longer grows in this stage */
    if (p.len >= QS_TOK_CACHE_MAX) return bpe_word(e, w, p.len, out);
    int32_t hit = qs_strmap_get(&e->cache, w, p.len);
    if (hit >= 0) {
        uint32_t off = e->cache_run[2 * hit], cnt = e->cache_run[2 * hit + 1];
        for (uint32_t k = 0; k < cnt; k++)
            if (!ids_push(out, e->cache_ids.ids[off + k])) return nomem(t, e->err);
        return QS_OK;
    }
    size_t before = out->n;
    QS_TRY(bpe_word(e, w, p.len, out));
    if (e->n_run == e->cap_run) {
        size_t cap = e->cap_run ? e->cap_run * 2 : 1024;
        uint32_t *q = realloc(e->cache_run, 2 * cap * sizeof *q);
        if (!q) return nomem(t, e->err);
        e->cache_run = q;
        e->cap_run = cap;
    }
    e->cache_run[2 * e->n_run] = (uint32_t)e->cache_ids.n;
    e->cache_run[2 * e->n_run + 1] = (uint32_t)(out->n - before);
    for (size_t k = before; k < out->n; k++)
        if (!ids_push(&e->cache_ids, out->ids[k])) return nomem(t, e->err);
    if (!qs_strmap_put(&e->cache, w, p.len, (int32_t)e->n_run)) return nomem(t, e->err);
    e->n_run++;
    return QS_OK;
}
