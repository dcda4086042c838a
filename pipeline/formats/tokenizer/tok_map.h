/* tok_map.h — the tokenizer's two open-addressing hash maps. qs_strmap maps
 * a byte string to an int32 id (the vocabulary, the added tokens, the
 * character bigrams inside tokens, the per-call word cache); its keys are
 * borrowed and must outlive it. qs_pairmap maps a pair of ids to a merge's
 * rank and merged id (the BPE merges). Both grow at half load; zero-initialise,
 * then free. */
#ifndef QS_TOK_MAP_H
#define QS_TOK_MAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct qs_strmap_ent {
    const char *key; /* NULL = empty slot; not owned */
    uint32_t len;
    int32_t val;
} qs_strmap_ent;

typedef struct qs_strmap {
    qs_strmap_ent *e;
    size_t cap, n;
} qs_strmap;

/* The value of key k[0..len), or -1. */
int32_t qs_strmap_get(const qs_strmap *m, const char *k, size_t len);
/* Inserts or overwrites (later entries win, as in a Rust HashMap collect).
 * False when out of memory. */
bool qs_strmap_put(qs_strmap *m, const char *k, size_t len, int32_t val);
void qs_strmap_free(qs_strmap *m);

typedef struct qs_pairmap_ent {
    uint64_t key; /* UINT64_MAX = empty */
    uint32_t rank;
    int32_t new_id;
} qs_pairmap_ent;

typedef struct qs_pairmap {
    qs_pairmap_ent *e;
    size_t cap, n;
} qs_pairmap;

static inline size_t qs_pairmap_hash(uint64_t k, size_t mask)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return (size_t)k & mask;
}

/* The merge of the pair (a, b), or NULL. Inline: the merge loop looks up
 * every pair it makes. */
static inline const qs_pairmap_ent *qs_pairmap_get(const qs_pairmap *m, int32_t a, int32_t b)
{
    if (!m->cap) return NULL;
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t mask = m->cap - 1, i = qs_pairmap_hash(key, mask);
    for (;;) {
        const qs_pairmap_ent *e = &m->e[i];
        if (e->key == UINT64_MAX) return NULL;
        if (e->key == key) return e;
        i = (i + 1) & mask;
    }
}

/* Inserts or overwrites key = a << 32 | b. False when out of memory. */
bool qs_pairmap_put(qs_pairmap *m, uint64_t key, uint32_t rank, int32_t new_id);
void qs_pairmap_free(qs_pairmap *m);

#endif
