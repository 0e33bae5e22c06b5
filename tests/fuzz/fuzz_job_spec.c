/* fuzz_job_spec.c - the job-spec parser and validator: a request body as
 * POST /v1/jobs and POST /v1/batches receive it (srv_parse_body's UTF-8 and
 * cJSON checks), then core_job_from_json and core_batch_from_json against a
 * real core. Nothing is ever submitted.
 *
 * The core is opened once (LLVMFuzzerInitialize): a store in a temp
 * directory, a thread and an async executor, the built-in tasks with exec
 * allowed and two command tasks, so every task's args validator is
 * reachable. Validation changes no state of the core but the id generator's,
 * so inputs do not affect each other (depends_on names jobs that never
 * exist: the store stays empty).
 *
 * Oracles: a refusal has an error code and a message; an accepted job has
 * its task, executor, args and depends_on set, serialises (job_to_json), and
 * its args text parses back as JSON.
 */
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "../../common/log.h"
#include "../../common/utf8.h"
#include "../../core/core.h"
#include "../unit/tmpdir.h"
#include "fuzz.h"

static struct tmp g_tmp;
static struct store *g_store;
static struct task_registry *g_reg;
static struct core *g_core;

static const struct core_executor_config k_execs[] = {
    {.name = "w", .kind = TASK_KIND_THREAD, .size = 1, .max_queued = 1000},
    {.name = "async", .kind = TASK_KIND_ASYNC, .size = 4, .max_queued = 1000},
};

/* Command tasks (SPEC §4) with every arg type; argv[0] must be executable. */
static const char k_commands[] =
    "[{\"name\": \"greet\", \"argv\": [\"/bin/echo\", \"hello {who}\", \"--n={n}\", \"{x}\"],"
    "  \"args\": {\"who\": \"string\", \"n\": \"integer\", \"x\": \"number\"}, \"executor\": \"async\", \"timeout\": 5},"
    " {\"name\": \"plain\", \"argv\": [\"/bin/true\"]}]";

static void fuzz_atexit(void)
{
    core_close(g_core);
    store_close(g_store);
    task_registry_free(g_reg);
    tmp_remove(&g_tmp);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char err[512] = "";
    log_init(LOG_LEVEL_OFF, LOG_FORMAT_TEXT);
    tmp_make(&g_tmp, "fuzz-job-spec");
    struct store_options so = {.path = g_tmp.db};
    struct task_registry_options to = {.allow_exec = true};
    cJSON *cmds = cJSON_Parse(k_commands);
    if (store_open(&so, &g_store) != 0 || task_registry_new(&to, &g_reg) != 0 || !cmds ||
        task_register_commands(g_reg, cmds, NULL, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_job_spec: set-up failed: %s\n", err);
        abort();
    }
    cJSON_Delete(cmds);
    struct core_options co = {.executors = k_execs, .n_executors = 2, .tasks = g_reg, .store = g_store};
    if (core_open(&co, &g_core) != 0) abort();
    atexit(fuzz_atexit);
    return 0;
}

static void check_job(const struct job *j)
{
    FUZZ_CHECK(j->task && j->executor && j->args && j->depends_on && j->id[0]);
    FUZZ_CHECK(j->max_attempts >= 1);
    cJSON *args = cJSON_Parse(j->args);
    cJSON *deps = cJSON_Parse(j->depends_on);
    FUZZ_CHECK(args != NULL && cJSON_IsArray(deps));
    cJSON_Delete(args);
    cJSON_Delete(deps);
    cJSON *out = job_to_json(j);
    FUZZ_CHECK(out != NULL);
    char *text = cJSON_PrintUnformatted(out);
    FUZZ_CHECK(text != NULL);
    cJSON_free(text);
    cJSON_Delete(out);
}

static void check_refusal(const struct api_err *err)
{
    FUZZ_CHECK(err->code != API_OK && err->message[0]);
    FUZZ_CHECK(memchr(err->field, '\0', sizeof err->field) && memchr(err->message, '\0', sizeof err->message));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* As srv_parse_body: UTF-8 first, then JSON with the NUL counted so that
     * trailing garbage is refused. */
    size_t bad_at = 0;
    if (!utf8_valid((const char *)data, size, &bad_at)) return 0;
    char *body = malloc(size + 1);
    if (!body) return 0;
    memcpy(body, data, size);
    body[size] = '\0';
    const char *end = NULL;
    cJSON *spec = cJSON_ParseWithLengthOpts(body, size + 1, &end, true);
    free(body);
    if (!spec) return 0;

    struct job *job = NULL;
    struct api_err err = {0};
    if (core_job_from_json(g_core, spec, "", &job, &err) == 0) check_job(job);
    else check_refusal(&err);
    job_free(job);
    job = NULL;

    /* As an entry of a batch: errors carry the prefix. */
    memset(&err, 0, sizeof err);
    if (core_job_from_json(g_core, spec, "jobs[9999].", &job, &err) == 0) check_job(job);
    else check_refusal(&err);
    job_free(job);

    struct store_batch batch;
    struct job **jobs = NULL;
    size_t n = 0;
    memset(&err, 0, sizeof err);
    if (core_batch_from_json(g_core, spec, NULL, &batch, &jobs, &n, &err) == 0) {
        FUZZ_CHECK(n >= 1 && (int64_t)n == batch.total);
        for (size_t i = 0; i < n; i++) {
            check_job(jobs[i]);
            FUZZ_CHECK(jobs[i]->batch_id && strcmp(jobs[i]->batch_id, batch.id) == 0);
            job_free(jobs[i]);
        }
        free(jobs);
        store_batch_clear(&batch);
    } else {
        check_refusal(&err);
    }
    cJSON_Delete(spec);
    return 0;
}
