/* side_files.c — tokenizer and generation files into an export (see side_files.h). */
#define _GNU_SOURCE
#include "pipeline/export/side_files.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pipeline/formats/fsutil.h"

const char *const qs_side_file_names[] = {"tokenizer.json",         "tokenizer_config.json", "special_tokens_map.json",
                                          "generation_config.json", "tokenizer.model",       "vocab.json",
                                          "merges.txt",             NULL};

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* ---- the three kinds ------------------------------------------------------------ */

static qs_status check_json(const char *origin, const char *data, size_t len, char **out, size_t *out_len,
                            qs_error *err)
{
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(data, len, &end, false);
    size_t at = end && end >= data && end <= data + len ? (size_t)(end - data) : 0;
    if (!j) return qs_error_set(err, QS_ERR_INPUT, "%s: not valid JSON (error at byte %zu of %zu)", origin, at, len);
    /* nothing but white space after the object */
    for (size_t i = at; i < len; i++)
        if (data[i] != ' ' && data[i] != '\t' && data[i] != '\n' && data[i] != '\r') {
            cJSON_Delete(j);
            return qs_error_set(err, QS_ERR_INPUT, "%s: bytes after the JSON value (at byte %zu of %zu)", origin, i, len);
        }
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return qs_error_set(err, QS_ERR_INPUT, "%s: expected a JSON object", origin);
    }
    char *txt = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!txt) return qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", origin);
    size_t n = strlen(txt);
    *out = malloc(n + 2);
    if (!*out) {
        free(txt);
        return qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", origin);
    }
    memcpy(*out, txt, n);
    (*out)[n] = '\n';
    (*out)[n + 1] = '\0';
    *out_len = n + 1;
    free(txt);
    return QS_OK;
}

/* Length of the UTF-8 sequence at p (0: invalid). */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    if (p[0] < 0x80) return 1;
    size_t k = p[0] >= 0xf0 && p[0] <= 0xf4 ? 4 : p[0] >= 0xe0 ? 3 : p[0] >= 0xc2 && p[0] < 0xe0 ? 2 : 0;
    if (!k || k > n) return 0;
    for (size_t i = 1; i < k; i++)
        if ((p[i] & 0xc0) != 0x80) return 0;
    return k;
}

/* merges.txt: UTF-8 text, an optional "#version" line, then "a b" lines. */
static qs_status check_merges(const char *origin, const char *data, size_t len, qs_error *err)
{
    const unsigned char *p = (const unsigned char *)data;
    size_t line = 1;
    for (size_t i = 0; i < len;) {
        size_t k = utf8_len(p + i, len - i);
        if (!k || p[i] == 0 || (p[i] < 0x20 && p[i] != '\n' && p[i] != '\r' && p[i] != '\t'))
            return qs_error_set(err, QS_ERR_INPUT, "%s: line %zu: byte %zu is not UTF-8 text", origin, line, i);
        if (p[i] == '\n') line++;
        i += k;
    }
    line = 1;
    for (size_t i = 0; i < len; line++) {
        size_t e = i;
        while (e < len && data[e] != '\n') e++;
        size_t n = e - i;
        while (n && (data[i + n - 1] == '\r')) n--;
        bool comment = n && data[i] == '#';
        if (n && !comment) {
            size_t spaces = 0, first = n;
            for (size_t k = 0; k < n; k++)
                if (data[i + k] == ' ') {
                    spaces++;
                    if (first == n) first = k;
                }
            if (spaces != 1 || first == 0 || first == n - 1)
                return qs_error_set(err, QS_ERR_INPUT, "%s: line %zu: expected a merge 'a b' (two tokens, one space)",
                                    origin, line);
        }
        i = e + 1;
    }
    return QS_OK;
}

/* One protobuf varint at *p (advances it); false past end or beyond 10 bytes. */
static bool varint(const unsigned char **p, const unsigned char *end, uint64_t *v)
{
    *v = 0;
    for (int s = 0; s < 70; s += 7) {
        if (*p >= end) return false;
        unsigned char b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << s;
        if (!(b & 0x80)) return true;
    }
    return false;
}

/* tokenizer.model: every top-level field of the message well formed and
 * inside the file; at least one field 1 (sentencepiece's repeated pieces). */
static qs_status check_protobuf(const char *origin, const char *data, size_t len, qs_error *err)
{
    const unsigned char *p = (const unsigned char *)data, *end = p + len;
    size_t pieces = 0;
    while (p < end) {
        size_t at = (size_t)(p - (const unsigned char *)data);
        uint64_t key, v;
        if (!varint(&p, end, &key) || key >> 3 == 0)
            return qs_error_set(err, QS_ERR_INPUT, "%s: byte %zu: not a protobuf field (not a sentencepiece model)",
                                origin, at);
        switch (key & 7) {
        case 0:
            if (!varint(&p, end, &v)) goto bad;
            break;
        case 1:
            if (end - p < 8) goto bad;
            p += 8;
            break;
        case 2:
            if (!varint(&p, end, &v) || v > (uint64_t)(end - p)) goto bad;
            p += v;
            if (key >> 3 == 1) pieces++;
            break;
        case 5:
            if (end - p < 4) goto bad;
            p += 4;
            break;
        default:
            goto bad;
        }
        continue;
    bad:
        return qs_error_set(err, QS_ERR_INPUT, "%s: byte %zu: a protobuf field runs past the end or has wire type %d "
                            "(not a sentencepiece model)", origin, at, (int)(key & 7));
    }
    if (!pieces) return qs_error_set(err, QS_ERR_INPUT, "%s: no pieces (not a sentencepiece model)", origin);
    return QS_OK;
}

qs_status qs_side_file_check(const char *name, const char *origin, const char *data, size_t len, char **out,
                             size_t *out_len, qs_error *err)
{
    *out = NULL;
    *out_len = 0;
    if (len > QS_SIDE_FILE_MAX)
        return qs_error_set(err, QS_ERR_INPUT, "%s: %zu bytes, more than the %u a tokenizer file may have", origin, len,
                            QS_SIDE_FILE_MAX);
    if (ends_with(name, ".json")) return check_json(origin, data, len, out, out_len, err);
    if (ends_with(name, ".txt")) QS_TRY(check_merges(origin, data, len, err));
    else if (ends_with(name, ".model")) QS_TRY(check_protobuf(origin, data, len, err));
    else return qs_error_set(err, QS_ERR_INTERNAL, "%s: no check for this kind of file", origin);
    *out = malloc(len ? len : 1);
    if (!*out) return qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", origin);
    memcpy(*out, data, len);
    *out_len = len;
    return QS_OK;
}

/* Reads src (one open, everything from that descriptor: what is checked is
 * what is copied) and checks it; *out is what to write. */
static qs_status read_checked(const char *src, char **out, size_t *out_len, qs_error *err)
{
    const char *base = strrchr(src, '/');
    base = base ? base + 1 : src;
    int fd = open(src, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return qs_error_set(err, QS_ERR_INPUT, "%s: cannot open: %s", src, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return qs_error_set(err, QS_ERR_INPUT, "%s: not a regular file (symlinks are followed: what it points to must "
                            "be a tokenizer file)", src);
    }
    if ((uint64_t)sb.st_size > QS_SIDE_FILE_MAX) {
        close(fd);
        return qs_error_set(err, QS_ERR_INPUT, "%s: %lld bytes, more than the %u a tokenizer file may have", src,
                            (long long)sb.st_size, QS_SIDE_FILE_MAX);
    }
    size_t len = (size_t)sb.st_size, got = 0;
    char *data = malloc(len + 1);
    if (!data) {
        close(fd);
        return qs_error_set(err, QS_ERR_NOMEM, "%s: out of memory", src);
    }
    while (got < len) {
        ssize_t r = read(fd, data + got, len - got);
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    if (got != len) {
        free(data);
        return qs_error_set(err, QS_ERR_IO, "%s: short read", src);
    }
    data[len] = '\0';
    qs_status st = qs_side_file_check(base, src, data, len, out, out_len, err);
    free(data);
    return st;
}

qs_status qs_side_file_copy(const char *src, const char *dst, qs_error *err)
{
    char *out = NULL;
    size_t out_len = 0;
    qs_status st = read_checked(src, &out, &out_len, err);
    if (st == QS_OK) st = qs_write_file_durable(dst, out, out_len, err);
    free(out);
    return st;
}

qs_status qs_side_files_check_dir(const char *model_dir, qs_error *err)
{
    for (int i = 0; qs_side_file_names[i]; i++) {
        char src[4200];
        snprintf(src, sizeof src, "%s/%s", model_dir, qs_side_file_names[i]);
        if (!qs_path_exists(src)) continue;
        char *out = NULL;
        size_t out_len = 0;
        qs_status st = read_checked(src, &out, &out_len, err);
        free(out);
        QS_TRY(st);
    }
    return QS_OK;
}
