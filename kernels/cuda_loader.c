/* cuda_loader.c — the CUDA entry points of kernels/device.h in qshard itself:
 * they load the CUDA backend's module (libqshard_cuda.so, kernels/cuda_module.h)
 * the first time they are called, and forward to it. A CPU command never
 * loads it, so never pays for cuBLAS and cuSOLVER.
 *
 * Where the module is looked for, in order: $QS_CUDA_MODULE (that file only);
 * next to the executable; <executable's dir>/../lib/qshard (installed); the
 * build tree it was built in (QS_CUDA_MODULE_BUILD_DIR). A build without
 * CUDA (QS_CUDA_MODULE_ENV_ONLY) looks only at $QS_CUDA_MODULE — what the
 * tests load the emulated backend of tests/gpu_emu/ with — and otherwise
 * says that it was built without CUDA. Not thread-safe: the first call
 * comes from the main thread, before any worker thread. */
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/cuda_module.h"
#include "kernels/nccl.h"

#ifdef QS_CUDA_MODULE_ENV_ONLY
static const char no_cuda[] = "this qshard was built without CUDA: configure with -DQS_CUDA=ON where nvcc is installed";
#else
static const char no_cuda[] = "";
#endif

static const qs_cuda_module *g_module;
static int g_tried;
static int g_no_cuda; /* a build without CUDA and no $QS_CUDA_MODULE */
static char g_why[1024];

static const qs_cuda_module *try_load(const char *path)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(g_why, sizeof g_why, "%s", e ? e : path);
        return NULL;
    }
    qs_cuda_module_fn get = (qs_cuda_module_fn)dlsym(h, QS_CUDA_MODULE_SYMBOL);
    const qs_cuda_module *m = get ? get() : NULL;
    if (!m || m->abi != QS_CUDA_MODULE_ABI) {
        snprintf(g_why, sizeof g_why, "%s: not a qshard CUDA module of ABI %d", path, QS_CUDA_MODULE_ABI);
        dlclose(h);
        return NULL;
    }
    return m; /* stays loaded for the life of the process */
}

static const qs_cuda_module *module(void)
{
    if (g_tried) return g_module;
    g_tried = 1;
    const char *env = getenv("QS_CUDA_MODULE");
    if (env && *env) return g_module = try_load(env);
#ifdef QS_CUDA_MODULE_ENV_ONLY
    g_no_cuda = 1;
    return NULL;
#else
    char exe[PATH_MAX], path[PATH_MAX + 64];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) *slash = '\0';
        snprintf(path, sizeof path, "%s/%s", exe, QS_CUDA_MODULE_FILE);
        if (access(path, F_OK) == 0) return g_module = try_load(path);
        snprintf(path, sizeof path, "%s/../lib/qshard/%s", exe, QS_CUDA_MODULE_FILE);
        if (access(path, F_OK) == 0) return g_module = try_load(path);
    }
#ifdef QS_CUDA_MODULE_BUILD_DIR
    snprintf(path, sizeof path, "%s/%s", QS_CUDA_MODULE_BUILD_DIR, QS_CUDA_MODULE_FILE);
    if (access(path, F_OK) == 0) return g_module = try_load(path);
#endif
    snprintf(g_why, sizeof g_why, "%s not found next to the executable, in ../lib/qshard or the build tree "
             "(set QS_CUDA_MODULE to its path)", QS_CUDA_MODULE_FILE);
    return NULL;
#endif
}

int qs_cuda_device_count(char *why, size_t why_cap)
{
    const qs_cuda_module *m = module();
    if (!m) {
        if (why && why_cap && g_no_cuda) snprintf(why, why_cap, "%s", no_cuda);
        else if (why && why_cap) snprintf(why, why_cap, "the CUDA backend module did not load: %s", g_why);
        return 0;
    }
    return m->device_count(why, why_cap);
}

qs_status qs_cuda_device_info(int index, qs_device_info *out, qs_error *err)
{
    const qs_cuda_module *m = module();
    if (!m) {
        memset(out, 0, sizeof *out);
        if (g_no_cuda) return qs_error_set(err, QS_ERR_UNSUPPORTED, "cuda:%d: %s", index, no_cuda);
        return qs_error_set(err, QS_ERR_UNSUPPORTED, "cuda:%d: the CUDA backend module did not load: %s", index, g_why);
    }
    return m->device_info(index, out, err);
}

qs_status qs_backend_cuda_init(qs_backend_i *be, int index, const qs_cuda_opts *o, qs_error *err)
{
    const qs_cuda_module *m = module();
    if (!m) {
        memset(be, 0, sizeof *be);
        if (g_no_cuda) return qs_error_set(err, QS_ERR_UNSUPPORTED, "cuda:%d: %s", index, no_cuda);
        return qs_error_set(err, QS_ERR_UNSUPPORTED, "cuda:%d: the CUDA backend module did not load: %s", index, g_why);
    }
    return m->backend_init(be, index, o, err);
}

void qs_backend_cuda_free(qs_backend_i *be)
{
    /* only a backend the module made has a device table; nothing to do otherwise */
    if (g_module && be && be->device) g_module->backend_free(be);
    else if (be) memset(be, 0, sizeof *be);
}

/* ---- NCCL (kernels/nccl.h): the module's, when it has it ---------------------------- */

static const qs_cuda_module *nccl_module(qs_error *err)
{
    const qs_cuda_module *m = module();
    if (!m) {
        if (g_no_cuda) qs_error_set(err, QS_ERR_UNSUPPORTED, "NCCL: %s", no_cuda);
        else qs_error_set(err, QS_ERR_UNSUPPORTED, "NCCL: the CUDA backend module did not load: %s", g_why);
        return NULL;
    }
    if (!m->nccl_init) qs_error_set(err, QS_ERR_UNSUPPORTED, "NCCL: this CUDA module has none (the CUDA emulator)");
    return m->nccl_init ? m : NULL;
}

qs_status qs_nccl_get_id(qs_nccl_id *id, qs_error *err)
{
    const qs_cuda_module *m = nccl_module(err);
    return m ? m->nccl_get_id(id, err) : QS_ERR_UNSUPPORTED;
}

qs_status qs_nccl_init(qs_nccl **out, const qs_nccl_id *id, int rank, int size, int device, double timeout_s,
                       qs_error *err)
{
    const qs_cuda_module *m = nccl_module(err);
    *out = NULL;
    return m ? m->nccl_init(out, id, rank, size, device, timeout_s, err) : QS_ERR_UNSUPPORTED;
}

/* the calls below take a communicator, which only a module with NCCL made */
qs_status qs_nccl_send(qs_nccl *c, const void *buf, size_t bytes, int peer, qs_nccl_op **op, qs_error *err)
{
    return g_module->nccl_send(c, buf, bytes, peer, op, err);
}

qs_status qs_nccl_recv(qs_nccl *c, void *buf, size_t bytes, int peer, qs_nccl_op **op, qs_error *err)
{
    return g_module->nccl_recv(c, buf, bytes, peer, op, err);
}

qs_status qs_nccl_test(qs_nccl *c, qs_nccl_op *op, int *done, qs_error *err)
{
    return g_module->nccl_test(c, op, done, err);
}

qs_status qs_nccl_wait(qs_nccl *c, qs_nccl_op *op, double timeout_s, qs_error *err)
{
    return g_module->nccl_wait(c, op, timeout_s, err);
}

qs_status qs_nccl_allreduce_sum(qs_nccl *c, void *buf, size_t n, bool f64, double timeout_s, qs_error *err)
{
    return g_module->nccl_allreduce_sum(c, buf, n, f64, timeout_s, err);
}

void qs_nccl_abort(qs_nccl *c)
{
    if (c) g_module->nccl_abort(c);
}

void qs_nccl_op_free(qs_nccl_op *op)
{
    if (op) g_module->nccl_op_free(op);
}

void qs_nccl_free(qs_nccl *c)
{
    if (c) g_module->nccl_free(c);
}
