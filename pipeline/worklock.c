/* worklock.c — the exclusive lock of a work dir (see worklock.h). */
#define _GNU_SOURCE
#include "pipeline/worklock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

qs_status qs_worklock_take(qs_worklock *l, const char *work_dir, qs_error *err)
{
    l->fd = -1;
    char path[4200];
    snprintf(path, sizeof path, "%s/run.lock", work_dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0)
        return qs_error_set(err, errno == EACCES || errno == EROFS || errno == EPERM ? QS_ERR_INPUT : QS_ERR_IO,
                            "%s: cannot open the work dir's lock: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        char who[256] = "";
        ssize_t n = pread(fd, who, sizeof who - 1, 0);
        close(fd);
        if (e != EWOULDBLOCK)
            return qs_error_set(err, QS_ERR_IO, "%s: cannot lock: %s", path, strerror(e));
        who[n > 0 ? n : 0] = '\0';
        for (char *p = who; *p; p++)
            if ((unsigned char)*p < 0x20) *p = ' ';
        for (size_t k = strlen(who); k > 0 && who[k - 1] == ' '; k--) who[k - 1] = '\0';
        return qs_error_set(err, QS_ERR_INPUT,
                            "%s: the work dir is in use by another qshard run (%s); wait for it or use another --work",
                            path, who[0] ? who : "holder unknown");
    }
    /* ours: say who holds it, for the next one that asks */
    char host[256] = "?", text[512];
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = '\0';
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    int len = snprintf(text, sizeof text, "host %s pid %d since %s\n", host, (int)getpid(), when);
    if (ftruncate(fd, 0) != 0 || pwrite(fd, text, (size_t)len, 0) != len) {
        int e = errno;
        close(fd);
        return qs_error_set(err, QS_ERR_IO, "%s: cannot write: %s", path,
                            strerror(e));
    }
    l->fd = fd;
    return QS_OK;
}

void qs_worklock_release(qs_worklock *l)
{
    if (l->fd >= 0) {
        flock(l->fd, LOCK_UN);
        close(l->fd);
    }
    l->fd = -1;
}
