/* export_hdf5.h — the run's archive, `qshard.h5`: every number of the run.
 *
 *   /                       attributes: qshard_version, fingerprint (id), run (the
 *                           fingerprint record as JSON: model, calibration, options)
 *   /blocks/block_NNNNN/    attributes: layer
 *     <linear name>/        datasets codes [out, in] u8, scales [groups, out] f32,
 *                           zeros [groups, out] i32, g_idx [in] i32; attributes
 *                           bits, h_trace, loss, loss_rtn, samples
 *
 * Identical runs give identical bytes: the archive holds numbers only (the
 * times are in WORK/qshard_report.json) and HDF5's object timestamps are off.
 *
 * Readable with h5py and h5dump. Written from the block checkpoints of a
 * finished work dir (by rank 0 at the end of a run, or by `qshard export`),
 * block by block, durably (temp → fsync → rename).
 */
#ifndef QS_EXPORT_HDF5_H
#define QS_EXPORT_HDF5_H

#include "pipeline/checkpoint.h"

typedef struct qs_hdf5_export qs_hdf5_export;

qs_status qs_hdf5_export_open(qs_hdf5_export **out, const char *path, const char *fingerprint_id,
                              const char *run_json, qs_error *err);
qs_status qs_hdf5_export_block(qs_hdf5_export *x, const qs_block_record *r, qs_error *err);
/* Closes, fsyncs and renames into place; frees x. */
qs_status qs_hdf5_export_finish(qs_hdf5_export *x, qs_error *err);
/* Removes the temp file and frees (after a failure). */
void qs_hdf5_export_abort(qs_hdf5_export *x);

#endif
