/* hello.c - an example jobd plugin: the task `hello {"name"}` returns
 * {"greeting": "hello, NAME"}. See README.md next to this file.
 *
 *     cc -std=c11 -shared -fPIC -Iinclude -o hello.so examples/plugin/hello.c -lcjson
 *     jobd --plugin ./hello.so
 */
#include <jobd_plugin.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NAME_MAX_BYTES 256

const int jobd_plugin_api_version = JOBD_PLUGIN_API_VERSION;

/* Reads args.name: a string of 1 to NAME_MAX_BYTES bytes. Returns it, or NULL
 * with a message in why. */
static const char *hello_name(const cJSON *args, char *why, size_t size)
{
    const cJSON *name = cJSON_IsObject(args) ? cJSON_GetObjectItemCaseSensitive(args, "name") : NULL;
    if (!cJSON_IsObject(args)) {
        snprintf(why, size, "args of hello must be an object such as {\"name\": \"world\"}.");
        return NULL;
    }
    for (const cJSON *c = args->child; c; c = c->next) {
        if (strcmp(c->string, "name") != 0) {
            snprintf(why, size, "args has no field \"%.64s\"; hello takes only \"name\".", c->string);
            return NULL;
        }
    }
    if (!cJSON_IsString(name) || !name->valuestring[0] || strlen(name->valuestring) > NAME_MAX_BYTES) {
        snprintf(why, size, "args.name is required: a string of 1 to %d bytes, e.g. {\"name\": \"world\"}.",
                 NAME_MAX_BYTES);
        return NULL;
    }
    return name->valuestring;
}

static int hello_validate(const cJSON *args, struct api_err *err)
{
    char why[sizeof err->message];
    if (hello_name(args, why, sizeof why)) return 0;
    /* struct api_err is plain data: fill it directly (api_err_set is jobd's). */
    err->code = API_INVALID_ARGUMENT;
    snprintf(err->field, sizeof err->field, "%s", strstr(why, "args.name") == why ? "args.name" : "args");
    snprintf(err->message, sizeof err->message, "%s", why);
    return -1;
}

/* Fails the job. struct task_ctx is plain data too; api->fail (jobd's
 * task_fail) would do the same, with a format. */
static int hello_fail(struct task_ctx *ctx, const char *message)
{
    ctx->error_type = JOB_ERR_TASK;
    snprintf(ctx->error_message, sizeof ctx->error_message, "%s", message);
    return -1;
}

static int hello_run(struct task_ctx *ctx)
{
    char why[256], greeting[NAME_MAX_BYTES + 16];
    const char *name = hello_name(ctx->args, why, sizeof why);
    if (!name) return hello_fail(ctx, why);
    snprintf(greeting, sizeof greeting, "hello, %s", name);
    cJSON *result = cJSON_CreateObject();
    if (!result || !cJSON_AddStringToObject(result, "greeting", greeting)) {
        cJSON_Delete(result);
        return hello_fail(ctx, "out of memory");
    }
    ctx->result = result; /* jobd frees it */
    return 0;
}

static const struct task_def hello_def = {
    .name = "hello",
    .description = "Greets args.name (an example plugin).",
    .kinds = TASK_KIND_THREAD | TASK_KIND_PROCESS,
    .default_kind = TASK_KIND_THREAD,
    .kinds_reason = "the example plugin has no async implementation",
    .validate = hello_validate,
    .run = hello_run,
    .start_async = NULL,
};

int jobd_plugin_init(const struct jobd_plugin_api *api)
{
    if (api->version != JOBD_PLUGIN_API_VERSION) return 1;
    return api->register_task(api->registry, &hello_def) == 0 ? 0 : 1;
}
