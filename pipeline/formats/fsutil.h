/* fsutil.h — durable files and directories.
 *
 * Durable write: temp file in the same directory → write → fflush → fsync →
 * rename over the target → fsync the directory. A reader sees the old file
 * or the new one, never a torn one, even across a crash or power loss.
 */
#ifndef QS_FSUTIL_H
#define QS_FSUTIL_H

#include <stdbool.h>
#include <stddef.h>

#include "kernels/status.h"

qs_status qs_write_file_durable(const char *path, const void *data, size_t len, qs_error *err);
/* fsync the directory that holds path (after a rename into it). */
qs_status qs_fsync_dir_of(const char *path, qs_error *err);
/* mkdir -p. */
qs_status qs_mkdir_p(const char *dir, qs_error *err);
/* Copies src to dst durably (small files: configs, tokenizers). */
qs_status qs_copy_file_durable(const char *src, const char *dst, qs_error *err);
bool qs_path_exists(const char *path);
/* Reads a whole file (NUL-terminated; *len without the NUL). */
qs_status qs_read_file(const char *path, char **data, size_t *len, qs_error *err);

/* The absolute, canonical form of path (symlinks resolved) even where its
 * last components do not exist yet: realpath of the longest existing prefix,
 * then the rest with "." and ".." applied. QS_ERR_INPUT when too long. */
qs_status qs_path_resolve(const char *path, char *out, size_t cap, qs_error *err);
/* inner is outer or lies below it (both resolved). */
bool qs_path_within(const char *inner, const char *outer);
/* Whether a file can be created in dir (an existing directory): creates and
 * removes a probe file. Permission and read-only file systems are
 * QS_ERR_INPUT (the user's path), other failures QS_ERR_IO. */
qs_status qs_dir_probe_writable(const char *dir, qs_error *err);

#endif
