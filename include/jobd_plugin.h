/* jobd_plugin.h - what a jobd task plugin (a shared object) sees of jobd.
 *
 * A plugin is a .so that jobd loads at start-up (--plugin PATH, JOBD_PLUGINS,
 * or "plugins" in the config file) with dlopen(RTLD_NOW | RTLD_LOCAL), in the
 * server and in every process-executor worker. It exports exactly two symbols:
 *
 *     const int jobd_plugin_api_version = JOBD_PLUGIN_API_VERSION;
 *     int jobd_plugin_init(const struct jobd_plugin_api *api);
 *
 * jobd checks the version first (a plugin built for another version is
 * refused), then calls jobd_plugin_init once, on the main thread, before any
 * job runs. It registers its tasks with api->register_task(api->registry,
 * &def) and returns 0; anything else stops jobd's start-up (exit status 2), as
 * does a task that does not register (a duplicate name, a bad definition).
 *
 * The task contract is jobd's own (tasks/task.h, included below): struct
 * task_def, struct task_ctx for thread and process executors, struct
 * task_actx for the async executor's libuv loop. Definitions are copied, but
 * the strings and functions they point to must stay valid: keep them static.
 * Tasks may run on many threads at once and must not keep mutable globals
 * without a lock. Report failures through api->fail / api->afail (the same as
 * task_fail / task_afail, which a plugin cannot link against directly).
 *
 * Building: the only include path a plugin needs is this folder of the jobd
 * source tree; task.h comes from the tree's tasks/ folder next to it, and
 * args and results are cJSON values, so link libcjson:
 *
 *     cc -std=c11 -shared -fPIC -Iinclude -o hello.so examples/plugin/hello.c -lcjson
 *
 * Versioning: JOBD_PLUGIN_API_VERSION changes whenever struct
 * jobd_plugin_api or anything in task.h that a plugin uses changes
 * incompatibly (a field moved, a signature changed). Bump it then.
 */
#ifndef JOBD_PLUGIN_H
#define JOBD_PLUGIN_H

#include "../tasks/task.h"

#define JOBD_PLUGIN_API_VERSION 1

/* jobd's side of one plugin load: pass it back to register_task. */
struct jobd_plugin_registry;

struct jobd_plugin_api {
    int version;                           /* JOBD_PLUGIN_API_VERSION of the loading jobd */
    const char *path;                      /* the plugin's file, as given */
    struct jobd_plugin_registry *registry; /* valid during jobd_plugin_init only */
    /* Registers a task. Returns 0, -EEXIST (a task of that name exists),
     * -EINVAL (bad name, kinds, default kind, or a missing entry point:
     * run() for thread/process kinds, start_async() for async) or -ENOMEM.
     * A failure also fails the plugin's load, whatever init returns. */
    int (*register_task)(struct jobd_plugin_registry *registry, const struct task_def *def);
    /* task_fail() and task_afail(): set the error, return -1. */
    int (*fail)(struct task_ctx *ctx, enum job_error_type type, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
    int (*afail)(struct task_actx *actx, enum job_error_type type, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
};

/* What the plugin defines. */
extern const int jobd_plugin_api_version;
int jobd_plugin_init(const struct jobd_plugin_api *api);

#endif
