/* h5util.h — the few HDF5 calls the work dir and the archive share: scalar
 * attributes, string attributes and whole datasets, with errors as values
 * (HDF5's own error printing is switched off around them by the callers). */
#ifndef QS_H5UTIL_H
#define QS_H5UTIL_H

#include <hdf5.h>
#include <stdbool.h>

/* A scalar attribute of `type` (H5T_NATIVE_*). Returns false on failure. */
bool qs_h5_attr(hid_t loc, const char *name, hid_t type, const void *value);
bool qs_h5_attr_str(hid_t loc, const char *name, const char *value);
/* Files, groups and datasets are created without HDF5's object timestamps,
 * so that the same content gives the same bytes. -1 on failure. */
hid_t qs_h5_file_create(const char *path);
hid_t qs_h5_group(hid_t loc, const char *name);
/* A whole dataset; deflate > 0 stores it chunked and compressed at that level. */
bool qs_h5_dataset(hid_t loc, const char *name, hid_t type, int rank, const hsize_t *dims, const void *data,
                   int deflate);

#endif
