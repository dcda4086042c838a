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

qs_status qs_mkdir_p(const char *dir, qs_error *err)
{
    char buf[4096];
    if (strlen(dir) >= sizeof buf) return qs_error_set(err, QS_ERR_INPUT, "%s: path too long", dir);
    strcpy(buf, dir);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return qs_error_set(err, QS_ERR_IO, "%s: cannot create directory: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST)
        return qs_error_set(err, QS_ERR_IO, "%s: cannot create directory: %s", buf, strerror(errno));
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
