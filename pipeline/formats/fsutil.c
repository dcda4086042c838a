/* fsutil.c — durable files and directories. */
#define _GNU_SOURCE
#include "pipeline/formats/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

qs_status qs_fsync_dir_of(const char *path, qs_error *err)
{
    char *copy = strdup(path);
    if (!copy) return qs_error_set(err, QS_ERR_NOMEM, "path copy");
    const char *dir = dirname(copy);
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    qs_status st = QS_OK;
    if (fd < 0 || fsync(fd) != 0)
        st = qs_error_set(err, QS_ERR_IO, "%s: cannot fsync the directory: %s", dir, strerror(errno));
    if (fd >= 0) close(fd);
    free(copy);
    return st;
}

qs_status qs_write_file_durable(const char *path, const void *data, size_t len, qs_error *err)
{
    size_t n = strlen(path) + 32;
    char *tmp = malloc(n);
    if (!tmp) return qs_error_set(err, QS_ERR_NOMEM, "path");
    snprintf(tmp, n, "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        qs_status st = qs_error_set(err, QS_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        return st;
    }
    bool ok = (len == 0 || fwrite(data, 1, len, f) == len) && fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        qs_status st = qs_error_set(err, QS_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
        unlink(tmp);
        free(tmp);
        return st;
    }
    free(tmp);
    return qs_fsync_dir_of(path, err);
}

/* errno of a failed create in a path the user named: theirs to fix (2), or the system's (1). */
static qs_status path_status(int e)
{
    return e == EACCES || e == EPERM || e == EROFS || e == ENOTDIR || e == EEXIST || e == ENAMETOOLONG || e == ELOOP
               ? QS_ERR_INPUT
               : QS_ERR_IO;
}

qs_status qs_mkdir_p(const char *dir, qs_error *err)
{
    char buf[4096];
    if (strlen(dir) >= sizeof buf) return qs_error_set(err, QS_ERR_INPUT, "%s: path too long", dir);
    strcpy(buf, dir);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return qs_error_set(err, path_status(errno), "%s: cannot create directory: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST)
        return qs_error_set(err, path_status(errno), "%s: cannot create directory: %s", buf, strerror(errno));
    struct stat sb;
    if (stat(buf, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return qs_error_set(err, QS_ERR_INPUT, "%s: exists and is not a directory", buf);
    return QS_OK;
}

bool qs_path_exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

qs_status qs_read_file(const char *path, char **data, size_t *len, qs_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) return qs_error_set(err, QS_ERR_INPUT, "%s: cannot open: %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return qs_error_set(err, QS_ERR_IO, "%s: cannot seek", path);
    }
    long n = ftell(f);
    rewind(f);
    char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (!buf) {
        fclose(f);
        return qs_error_set(err, QS_ERR_NOMEM, "%s: %ld bytes", path, n);
    }
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        fclose(f);
        return qs_error_set(err, QS_ERR_IO, "%s: short read", path);
    }
    fclose(f);
    buf[n] = '\0';
    *data = buf;
    if (len) *len = (size_t)n;
    return QS_OK;
}

qs_status qs_copy_file_durable(const char *src, const char *dst, qs_error *err)
{
    char *data;
    size_t len;
    QS_TRY(qs_read_file(src, &data, &len, err));
    qs_status st = qs_write_file_durable(dst, data, len, err);
    free(data);
    return st;
}

/* ---- paths ------------------------------------------------------------------------ */

qs_status qs_path_resolve(const char *path, char *out, size_t cap, qs_error *err)
{
    char buf[8192];
    if (path[0] == '/') {
        if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) goto too_long;
    } else {
        char cwd[4096];
        if (!getcwd(cwd, sizeof cwd)) return qs_error_set(err, QS_ERR_IO, "getcwd: %s", strerror(errno));
        if (snprintf(buf, sizeof buf, "%s/%s", cwd, path) >= (int)sizeof buf) goto too_long;
    }
    /* the longest prefix that exists, cut at a '/' */
    size_t n = strlen(buf);
    char *real = NULL;
    size_t cut = n;
    for (;;) {
        char save = buf[cut];
        buf[cut] = '\0';
        real = realpath(cut ? buf : "/", NULL);
        buf[cut] = save;
        if (real || cut == 0) break;
        while (cut > 0 && buf[cut - 1] != '/') cut--; /* drop the last component */
        while (cut > 0 && buf[cut - 1] == '/') cut--;
    }
    if (!real) return qs_error_set(err, QS_ERR_IO, "%s: cannot resolve: %s", path, strerror(errno));
    if (snprintf(out, cap, "%s", real) >= (int)cap) {
        free(real);
        goto too_long;
    }
    free(real);
    /* the components that do not exist yet: "." dropped, ".." goes up */
    size_t k = strlen(out);
    for (const char *p = buf + cut; *p;) {
        while (*p == '/') p++;
        const char *e = p;
        while (*e && *e != '/') e++;
        size_t len = (size_t)(e - p);
        if (len == 0 || (len == 1 && p[0] == '.')) {
        } else if (len == 2 && p[0] == '.' && p[1] == '.') {
            while (k > 1 && out[k - 1] != '/') k--;
            if (k > 1) k--;
            out[k] = '\0';
        } else {
            if (k + 1 + len + 1 > cap) goto too_long;
            if (k > 1) out[k++] = '/';
            memcpy(out + k, p, len);
            k += len;
            out[k] = '\0';
        }
        p = e;
    }
    return QS_OK;
too_long:
    return qs_error_set(err, QS_ERR_INPUT, "%.200s...: path too long", path);
}

bool qs_path_within(const char *inner, const char *outer)
{
    size_t n = strlen(outer);
    if (n == 1 && outer[0] == '/') return true;
    return strncmp(inner, outer, n) == 0 && (inner[n] == '\0' || inner[n] == '/');
}

qs_status qs_dir_probe_writable(const char *dir, qs_error *err)
{
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/.qshard-probe.%d", dir, (int)getpid());
    int fd = open(probe, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return qs_error_set(err, path_status(errno), "%s: cannot write here: %s", dir, strerror(errno));
    close(fd);
    unlink(probe);
    return QS_OK;
}
