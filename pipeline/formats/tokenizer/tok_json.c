/* tok_json.c — reading values out of tokenizer.json (cJSON) for the loaders:
 * optional booleans and strings, bounded integers, {"String"|"Regex"}
 * patterns, one-character strings and Metaspace's prepend_scheme. Every error
 * names the file and the json path of the value, e.g.
 * "tokenizer.json: model.merges[12]: token 'ab' is not in model.vocab". */
#include "pipeline/formats/tokenizer/tokenizer_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>

qs_status qs_tok_jfail(const qs_tokenizer *t, qs_error *err, qs_status code, const char *path, const char *fmt, ...)
{
    char msg[QS_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return qs_error_set(err, code, "%s: %s: %s", t->name, path, msg);
}

const cJSON *qs_tok_jget(const cJSON *o, const char *key)
{
    return cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;
}

bool qs_tok_jnull(const cJSON *v) { return !v || cJSON_IsNull(v); }

/* Optional bool; missing/null gives def. */
qs_status qs_tok_jbool(const qs_tokenizer *t, const cJSON *o, const char *key, const char *path, bool def, bool *out,
                       qs_error *err)
{
    const cJSON *v = qs_tok_jget(o, key);
    if (qs_tok_jnull(v)) {
        *out = def;
        return QS_OK;
    }
    if (!cJSON_IsBool(v)) return qs_tok_jfail(t, err, QS_ERR_INPUT, path, "'%s' must be true or false", key);
    *out = cJSON_IsTrue(v);
    return QS_OK;
}

/* Optional string (NULL when missing/null). */
qs_status qs_tok_jstr(const qs_tokenizer *t, const cJSON *o, const char *key, const char *path, const char **out,
                      qs_error *err)
{
    const cJSON *v = qs_tok_jget(o, key);
    *out = NULL;
    if (qs_tok_jnull(v)) return QS_OK;
    if (!cJSON_IsString(v)) return qs_tok_jfail(t, err, QS_ERR_INPUT, path, "'%s' must be a string", key);
    *out = v->valuestring;
    return QS_OK;
}

qs_status qs_tok_jint(const qs_tokenizer *t, const cJSON *v, const char *path, long lo, long hi, long *out,
                      qs_error *err)
{
    /* the range first: casting a double outside long's range (1e300) is undefined
     * behaviour (the fuzzer found it); hi + 1 so that LONG_MAX's 2^63 is out */
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= (double)lo && v->valuedouble < (double)hi + 1.0) ||
        v->valuedouble != floor(v->valuedouble) || (long)v->valuedouble > hi)
        return qs_tok_jfail(t, err, QS_ERR_INPUT, path, "expected an integer in [%ld, %ld]", lo, hi);
    *out = (long)v->valuedouble;
    return QS_OK;
}

/* {"String": s} or {"Regex": r} → a literal or a compiled regex. */
qs_status qs_tok_jpattern(const qs_tokenizer *t, const cJSON *o, const char *path, char **lit, size_t *lit_len,
                          pcre2_code **re, qs_error *err)
{
    char p[256];
    snprintf(p, sizeof p, "%s.pattern", path);
    const cJSON *pat = qs_tok_jget(o, "pattern");
    const cJSON *s = qs_tok_jget(pat, "String"), *r = qs_tok_jget(pat, "Regex");
    *lit = NULL;
    *re = NULL;
    if (cJSON_IsString(s)) {
        *lit_len = strlen(s->valuestring);
        if (!*lit_len) return qs_tok_jfail(t, err, QS_ERR_INPUT, p, "empty String pattern");
        *lit = mem_dup(s->valuestring, *lit_len);
        return *lit ? QS_OK : qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", t->name);
    }
    if (cJSON_IsString(r)) {
        char why[300];
        *re = qs_tok_re_compile(r->valuestring, strlen(r->valuestring), why, sizeof why);
        if (!*re) return qs_tok_jfail(t, err, QS_ERR_UNSUPPORTED, p, "regex does not compile with PCRE2: %s", why);
        return QS_OK;
    }
    return qs_tok_jfail(t, err, QS_ERR_INPUT, p, "expected {\"String\": ...} or {\"Regex\": ...}");
}

/* A one-character string (Metaspace replacement, Strip content). */
qs_status qs_tok_jchar(const qs_tokenizer *t, const cJSON *o, const char *key, const char *path, const char *def,
                       char out[8], size_t *out_len, qs_error *err)
{
    const char *s;
    QS_TRY(qs_tok_jstr(t, o, key, path, &s, err));
    if (!s) s = def;
    size_t n = strlen(s), l = 0;
    if (n && n < 8 && qs_utf8_check(s, n) == n) qs_utf8_get(s, &l);
    if (!n || l != n) return qs_tok_jfail(t, err, QS_ERR_INPUT, path, "'%s' must be a single character", key);
    memcpy(out, s, n);
    out[n] = '\0';
    *out_len = n;
    return QS_OK;
}

qs_status qs_tok_jprepend_scheme(const qs_tokenizer *t, const cJSON *o, const char *path, prepend_scheme *out,
                                 qs_error *err)
{
    const char *s;
    QS_TRY(qs_tok_jstr(t, o, "prepend_scheme", path, &s, err));
    if (s) {
        if (strcmp(s, "always") == 0) *out = PREPEND_ALWAYS;
        else if (strcmp(s, "first") == 0) *out = PREPEND_FIRST;
        else if (strcmp(s, "never") == 0) *out = PREPEND_NEVER;
        else return qs_tok_jfail(t, err, QS_ERR_INPUT, path, "prepend_scheme '%s' is not always/first/never", s);
        return QS_OK;
    }
    bool aps; /* legacy form */
    QS_TRY(qs_tok_jbool(t, o, "add_prefix_space", path, true, &aps, err));
    *out = aps ? PREPEND_ALWAYS : PREPEND_NEVER;
    return QS_OK;
}
