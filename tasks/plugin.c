/* plugin.c - loading task plugins (include/jobd_plugin.h).
 *
 * A plugin is dlopen'ed with RTLD_NOW (every symbol resolved now, so a
 * missing one fails the start, not a job) and RTLD_LOCAL (its symbols stay
 * its own). It stays loaded until the registry is freed: the registry owns
 * the handle and closes it after every definition is gone. The checks, in
 * order: the file loads; it exports jobd_plugin_api_version, equal to ours;
 * it exports jobd_plugin_init; init returns 0 and every task it registers is
 * accepted. Any failure is a start-up error naming --plugin and the path.
 */
#include "task_extra_int.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "../include/jobd_plugin.h"

struct jobd_plugin_registry {
    struct task_registry *reg;
    int first_rc;        /* the first refused registration, 0 = none */
    char first_name[72]; /* its task name */
};

static int plugin_register(struct jobd_plugin_registry *pr, const struct task_def *def)
{
    if (!pr) return -EINVAL;
    int rc = task_register(pr->reg, def);
    if (rc < 0 && pr->first_rc == 0) {
        pr->first_rc = rc;
        snprintf(pr->first_name, sizeof pr->first_name, "%.64s", def && def->name ? def->name : "(no name)");
    }
    return rc;
}

static void plugin_unload(void *handle)
{
    dlclose(handle); /* nothing to do about a failure at exit */
}

static int plugin_fail(char *err, size_t errlen, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int plugin_fail(char *err, size_t errlen, const char *path, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (err && errlen) snprintf(err, errlen, "--plugin %s: %s", path, msg);
    return -1;
}

int task_load_plugin(struct task_registry *reg, const char *path, char *err, size_t errlen)
{
    char file[PATH_MAX];
    if (!path || !*path) return plugin_fail(err, errlen, "\"\"", "the path is empty");
    /* Without a '/', dlopen would search the library path, not the directory. */
    if (snprintf(file, sizeof file, "%s%s", strchr(path, '/') ? "" : "./", path) >= (int)sizeof file)
        return plugin_fail(err, errlen, path, "the path is too long");
    dlerror();
    void *handle = dlopen(file, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        const char *why = dlerror();
        return plugin_fail(err, errlen, path, "cannot load: %s", why ? why : "unknown error");
    }
    if (task_registry_own(reg, plugin_unload, handle) < 0) {
        dlclose(handle);
        return plugin_fail(err, errlen, path, "out of memory");
    }
    const int *version = dlsym(handle, "jobd_plugin_api_version");
    if (!version)
        return plugin_fail(err, errlen, path,
                           "does not export jobd_plugin_api_version; is it a jobd plugin built with "
                           "include/jobd_plugin.h?");
    if (*version != JOBD_PLUGIN_API_VERSION)
        return plugin_fail(err, errlen, path,
                           "was built for plugin API version %d, but this jobd speaks version %d; rebuild it "
                           "against this jobd's include/jobd_plugin.h",
                           *version, JOBD_PLUGIN_API_VERSION);
    int (*init)(const struct jobd_plugin_api *) = NULL;
    void *sym = dlsym(handle, "jobd_plugin_init");
    memcpy(&init, &sym, sizeof init); /* POSIX: a data pointer from dlsym holds a function */
    if (!init) return plugin_fail(err, errlen, path, "does not export jobd_plugin_init");

    struct jobd_plugin_registry pr = {.reg = reg};
    const struct jobd_plugin_api api = {
        .version = JOBD_PLUGIN_API_VERSION,
        .path = path,
        .registry = &pr,
        .register_task = plugin_register,
        .fail = task_fail,
        .afail = task_afail,
    };
    int rc = init(&api);
    if (pr.first_rc == -EEXIST)
        return plugin_fail(err, errlen, path, "task \"%s\": a task of that name is already registered",
                           pr.first_name);
    if (pr.first_rc == -EINVAL)
        return plugin_fail(err, errlen, path,
                           "task \"%s\": invalid definition (name of 1 to 64 [a-z0-9_.-], kinds with the "
                           "default kind among them, run() for thread/process, start_async() for async)",
                           pr.first_name);
    if (pr.first_rc < 0)
        return plugin_fail(err, errlen, path, "task \"%s\": %s", pr.first_name, strerror(-pr.first_rc));
    if (rc != 0) return plugin_fail(err, errlen, path, "jobd_plugin_init returned %d (failure)", rc);
    return 0;
}
