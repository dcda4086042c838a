/* tok_map.c — the string → id and (id, id) → merge hash maps of the
 * tokenizer (tok_map.h): linear probing, xxHash3 for strings, a 64-bit mix
 * for id pairs. */
#include "pipeline/formats/tokenizer/tok_map.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

int32_t qs_strmap_get(const qs_strmap *m, const char *k, size_t len)
{
    if (!m->cap) return -1;
    size_t mask = m->cap - 1, i = (size_t)XXH3_64bits(k, len) & mask;
    for (;;) {
        const qs_strmap_ent *e = &m->e[i];
        if (!e->key) return -1;
        if (e->len == len && memcmp(e->key, k, len) == 0) return e->val;
        i = (i + 1) & mask;
    }
}

static bool strmap_grow(qs_strmap *m)
{
    size_t cap = m->cap ? m->cap * 2 : 64;
    qs_strmap_ent *old = m->e;
    size_t old_cap = m->cap;
    m->e = calloc(cap, sizeof *m->e);
    if (!m->e) {
        m->e = old;
        return false;
    }
    m->cap = cap;
    m->n = 0;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].key) qs_strmap_put(m, old[i].key, old[i].len, old[i].val);
    free(old);
    return true;
}

bool qs_strmap_put(qs_strmap *m, const char *k, size_t len, int32_t val)
{
    if ((m->n + 1) * 2 > m->cap && !strmap_grow(m)) return false;
    size_t mask = m->cap - 1, i = (size_t)XXH3_64bits(k, len) & mask;
    for (;;) {
        qs_strmap_ent *e = &m->e[i];
        if (!e->key) {
            e->key = k;
            e->len = (uint32_t)len;
            e->val = val;
            m->n++;
            return true;
        }
        if (e->len == len && memcmp(e->key, k, len) == 0) {
            e->val = val;
            return true;
        }
        i = (i + 1) & mask;
    }
}

void qs_strmap_free(qs_strmap *m)
{
    free(m->e);
    m->e = NULL;
    m->cap = m->n = 0;
}

bool qs_pairmap_put(qs_pairmap *m, uint64_t key, uint32_t rank, int32_t new_id)
{
    if ((m->n + 1) * 2 > m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 1024;
        qs_pairmap_ent *e = malloc(cap * sizeof *e);
        if (!e) return false;
        for (size_t i = 0; i < cap; i++) e[i].key = UINT64_MAX;
        qs_pairmap old = *m;
        m->e = e;
        m->cap = cap;
        m->n = 0;
        for (size_t i = 0; i < old.cap; i++)
            if (old.e[i].key != UINT64_MAX) qs_pairmap_put(m, old.e[i].key, old.e[i].rank, old.e[i].new_id);
        free(old.e);
    }
    size_t mask = m->cap - 1, i = qs_pairmap_hash(key, mask);
    for (;;) {
        qs_pairmap_ent *e = &m->e[i];
        if (e->key == UINT64_MAX) {
            e->key = key;
            m->n++;
        }
        if (e->key == key) {
            e->rank = rank;
            e->new_id = new_id;
            return true;
        }
        i = (i + 1) & mask;
    }
}

void qs_pairmap_free(qs_pairmap *m)
{
    free(m->e);
    m->e = NULL;
    m->cap = m->n = 0;
}
