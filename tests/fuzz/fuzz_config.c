/* fuzz_config.c - the configuration loader (server/config.c, config_file.c): argv, the
 * environment and the config file together, as config_load reads them, then
 * the file's "commands" as the task registry reads them at start-up
 * (task_register_commands), the way main() goes on.
 *
 * Input: NUL-separated parts. Part 0 is the config file's contents, written
 * to a temp file; every later part is an environment entry when it starts
 * with "JOBD_" and an argument otherwise (argv[0] is "jobd"). In parts, "@@"
 * stands for the temp file's path, so --config=@@, JOBD_CONFIG=@@ and
 * --token-file=@@ read it.
 *
 * The loader opens the paths it is given. So that no input can block the
 * fuzzer on a terminal, a FIFO or /dev/stdin, the link wraps fopen()
 * (-Wl,--wrap=fopen): paths that are not regular files or directories fail
 * with EACCES. Regular files and directories behave as in jobd.
 *
 * Oracles: CONFIG_OK leaves a config that passes its own checks (listen
 * host set, 1..CONFIG_MAX_EXECUTORS executors of a known kind and size >= 1,
 * max_queued >= 1, no more plugins than the maximum); CONFIG_ERROR comes
 * with a message; after config_free nothing is left (LeakSanitizer).
 */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../server/config.h"
#include "../unit/tmpdir.h"
#include "fuzz.h"

#define MAX_PARTS 64

static struct tmp g_tmp;
static char g_file[128];
static FILE *g_null;

FILE *__real_fopen(const char *path, const char *mode);
FILE *__wrap_fopen(const char *path, const char *mode);

FILE *__wrap_fopen(const char *path, const char *mode)
{
    struct stat sb;
    if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode) && !S_ISDIR(sb.st_mode)) {
        errno = EACCES;
        return NULL;
    }
    return __real_fopen(path, mode);
}

static void fuzz_atexit(void)
{
    if (g_null) fclose(g_null);
    tmp_remove(&g_tmp);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    tmp_make(&g_tmp, "fuzz-config");
    snprintf(g_file, sizeof g_file, "%s/jobd.json", g_tmp.dir);
    if (!(g_null = __real_fopen("/dev/null", "w"))) abort(); /* --help and --version print here */
    atexit(fuzz_atexit);
    return 0;
}

/* A copy of the n bytes at s with every "@@" replaced by the temp file's path. */
static char *expand(const char *s, size_t n)
{
    size_t plen = strlen(g_file), count = 0;
    for (size_t i = 0; i + 1 < n; i++)
        if (s[i] == '@' && s[i + 1] == '@') count++, i++;
    char *out = malloc(n + count * plen + 1), *o = out;
    if (!out) return NULL;
    for (size_t i = 0; i < n; i++) {
        if (i + 1 < n && s[i] == '@' && s[i + 1] == '@') {
            memcpy(o, g_file, plen);
            o += plen;
            i++;
        } else {
            *o++ = s[i];
        }
    }
    *o = '\0';
    return out;
}

static void check_config(const struct config *cfg)
{
    FUZZ_CHECK(cfg->listen_host[0] && cfg->listen_port >= 0 && cfg->listen_port <= 65535);
    FUZZ_CHECK(cfg->n_executors >= 1 && cfg->n_executors <= CONFIG_MAX_EXECUTORS);
    for (int i = 0; i < cfg->n_executors; i++) {
        const struct core_executor_config *e = &cfg->executors[i];
        FUZZ_CHECK(e->name[0] && memchr(e->name, '\0', sizeof e->name));
        FUZZ_CHECK(e->kind == TASK_KIND_THREAD || e->kind == TASK_KIND_PROCESS || e->kind == TASK_KIND_ASYNC);
        FUZZ_CHECK(e->size >= 1 && e->max_queued >= 1);
    }
    FUZZ_CHECK(cfg->n_plugins >= 0 && cfg->n_plugins <= CONFIG_MAX_PLUGINS);
    for (int i = 0; i < cfg->n_plugins; i++) FUZZ_CHECK(cfg->plugins[i] && cfg->plugins[i][0]);
    FUZZ_CHECK(memchr(cfg->token, '\0', sizeof cfg->token) && memchr(cfg->db_path, '\0', sizeof cfg->db_path));
    FUZZ_CHECK(cfg->max_body_bytes > 0 && cfg->http_threads >= 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct config cfg; /* large; config_load frees what an earlier run left (nothing: freed below) */
    char *argv[MAX_PARTS + 2] = {"jobd"}, *envp[MAX_PARTS + 1] = {NULL};
    char *owned[MAX_PARTS];
    int argc = 1, envc = 0, n_owned = 0;
    const char *s = (const char *)data, *end = s + size;
    const char *nul = memchr(s, '\0', size);
    size_t flen = nul ? (size_t)(nul - s) : size;

    FILE *f = fopen(g_file, "w");
    if (!f) abort();
    if (fwrite(s, 1, flen, f) != flen || fclose(f) != 0) abort();
    for (const char *p = nul ? nul + 1 : end; p < end && n_owned < MAX_PARTS;) {
        const char *q = memchr(p, '\0', (size_t)(end - p));
        size_t len = q ? (size_t)(q - p) : (size_t)(end - p);
        char *part = expand(p, len);
        if (!part) break;
        owned[n_owned++] = part;
        if (strncmp(part, "JOBD_", 5) == 0) envp[envc++] = part;
        else argv[argc++] = part;
        p += len + 1;
    }
    argv[argc] = NULL;
    envp[envc] = NULL;

    char err[1024];
    enum config_result r = config_load(&cfg, argc, argv, envp, 2, g_null, err, sizeof err);
    FUZZ_CHECK(r == CONFIG_OK || r == CONFIG_EXIT || r == CONFIG_ERROR);
    FUZZ_CHECK(memchr(err, '\0', sizeof err) != NULL);
    if (r == CONFIG_ERROR) FUZZ_CHECK(err[0]);
    if (r == CONFIG_OK) {
        check_config(&cfg);
        /* What main() does next with the file's commands. */
        struct task_registry *reg = NULL;
        char msg[1024];
        struct task_registry_options to = {.allow_exec = cfg.allow_exec};
        if (task_registry_new(&to, &reg) == 0) {
            if (task_register_commands(reg, cfg.commands, envp, msg, sizeof msg) < 0) FUZZ_CHECK(msg[0]);
            task_registry_free(reg);
        }
    }
    config_free(&cfg);
    for (int i = 0; i < n_owned; i++) free(owned[i]);
    return 0;
}
