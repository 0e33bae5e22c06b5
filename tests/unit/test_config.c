/* test_config.c - server/config.c: defaults, each source, precedence, errors. */
#include "../../server/config.h"

#include <unistd.h>

#include "harness.h"

#define NCORES 2

static struct config cfg;
static char err[1024];

/* argv and envp are NULL-terminated; argv[0] is the program name. */
static enum config_result load(char **argv, char **envp)
{
    static char *no_env[] = {NULL};
    int argc = 0;
    while (argv[argc]) argc++;
    err[0] = '\0';
    return config_load(&cfg, argc, argv, envp ? envp : no_env, NCORES, stdout, err, sizeof err);
}

/* Writes `text` to a new file under /tmp; the path goes into path[64]. */
static void tmp_write(char *path, const char *text)
{
    strcpy(path, "/tmp/jobd_test_config_XXXXXX");
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd < 0) return;
    CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
}

/* Replaces the contents of an existing path. */
static void tmp_rewrite(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (!f) return;
    CHECK(fputs(text, f) >= 0);
    CHECK(fclose(f) == 0);
}

/* Loads with a config file holding `json`, plus argv and env. */
static enum config_result load_file(const char *json, char **argv, char **envp, char *path)
{
    char flag[128];
    char *args[16] = {"jobd", flag};
    int n = 2;
    tmp_write(path, json);
    snprintf(flag, sizeof flag, "--config=%s", path);
    for (int i = 1; argv && argv[i] && n < 15; i++) args[n++] = argv[i];
    args[n] = NULL;
    enum config_result r = load(args, envp);
    unlink(path);
    return r;
}

#define CHECK_ERR_HAS(s)                                                                           \
    do {                                                                                           \
        if (!strstr(err, (s))) fprintf(stderr, "    err was: %s\n", err);                          \
        CHECK(strstr(err, (s)) != NULL);                                                           \
    } while (0)

static void test_defaults(void)
{
    char *argv[] = {"jobd", NULL};
    CHECK_EQ_INT(load(argv, NULL), CONFIG_OK);
    CHECK_EQ_STR(cfg.listen_host, "127.0.0.1");
    CHECK_EQ_INT(cfg.listen_port, 8080);
    CHECK_EQ_STR(cfg.db_path, "./data/jobd.db");
    CHECK_EQ_STR(cfg.config_file, "");
    CHECK_EQ_STR(cfg.token, "");
    /* SPEC §5: thread=thread:2N,process=process:N,async=async:256 */
    CHECK_EQ_INT(cfg.n_executors, 3);
    CHECK_EQ_STR(cfg.executors[0].name, "thread");
    CHECK_EQ_INT(cfg.executors[0].kind, TASK_KIND_THREAD);
    CHECK_EQ_INT(cfg.executors[0].size, 2 * NCORES);
    CHECK_EQ_INT(cfg.executors[0].max_queued, 100000);
    CHECK_EQ_STR(cfg.executors[1].name, "process");
    CHECK_EQ_INT(cfg.executors[1].kind, TASK_KIND_PROCESS);
    CHECK_EQ_INT(cfg.executors[1].size, NCORES);
    CHECK_EQ_STR(cfg.executors[2].name, "async");
    CHECK_EQ_INT(cfg.executors[2].kind, TASK_KIND_ASYNC);
    CHECK_EQ_INT(cfg.executors[2].size, 256);
    CHECK_EQ_INT(cfg.executors[2].memory_mb, 0);
    CHECK(!cfg.allow_exec);
    CHECK_EQ_INT(cfg.log_level, LOG_LEVEL_INFO);
    CHECK_EQ_INT(cfg.log_format, LOG_FORMAT_TEXT);
    CHECK(cfg.sync_full);
    CHECK_EQ_INT(cfg.max_body_bytes, 1048576);
    CHECK_EQ_INT(cfg.http_threads, NCORES);
    CHECK_EQ_INT(cfg.max_connections, 10000);
    CHECK_EQ_INT(cfg.connection_timeout_s, 60);
    CHECK_EQ_INT(cfg.max_wait_ms, 3600000);
    CHECK_EQ_INT(cfg.grace_ms, 30000);
    CHECK_EQ_INT(cfg.max_queued, 100000);
}

static void test_defaults_follow_cores_within_bounds(void)
{
    char *argv[] = {"jobd", NULL};
    static char *no_env[] = {NULL};
    CHECK_EQ_INT(config_load(&cfg, 1, argv, no_env, 200, stdout, err, sizeof err), CONFIG_OK);
    CHECK_EQ_INT(cfg.http_threads, 64);
    CHECK_EQ_INT(cfg.executors[0].size, 400);
    CHECK_EQ_INT(config_load(&cfg, 1, argv, no_env, 0, stdout, err, sizeof err), CONFIG_OK);
    CHECK_EQ_INT(cfg.http_threads, 1);
    CHECK_EQ_INT(cfg.executors[0].size, 2);
}

static void test_each_flag(void)
{
    char *argv[] = {"jobd", "--listen", "0.0.0.0:9000", "--db", "/tmp/x.db", "--token", "s3cret",
                    "--executors", "a=thread:3,b=thread:5", "--allow-exec", "--log-level", "debug",
                    "--log-format", "json", "--sync", "normal", "--max-body", "2048", "--http-threads", "7",
                    "--max-connections", "50", "--connection-timeout", "9", "--max-wait", "0", "--grace", "5",
                    "--max-queued", "77", NULL};
    CHECK_EQ_INT(load(argv, NULL), CONFIG_OK);
    CHECK_EQ_STR(err, "");
    CHECK_EQ_STR(cfg.listen_host, "0.0.0.0");
    CHECK_EQ_INT(cfg.listen_port, 9000);
    CHECK_EQ_STR(cfg.db_path, "/tmp/x.db");
    CHECK_EQ_STR(cfg.token, "s3cret");
    CHECK_EQ_INT(cfg.n_executors, 2);
    CHECK(cfg.allow_exec);
    CHECK_EQ_INT(cfg.log_level, LOG_LEVEL_DEBUG);
    CHECK_EQ_INT(cfg.log_format, LOG_FORMAT_JSON);
    CHECK(!cfg.sync_full);
    CHECK_EQ_INT(cfg.max_body_bytes, 2048);
    CHECK_EQ_INT(cfg.http_threads, 7);
    CHECK_EQ_INT(cfg.max_connections, 50);
    CHECK_EQ_INT(cfg.connection_timeout_s, 9);
    CHECK_EQ_INT(cfg.max_wait_ms, 0);
    CHECK_EQ_INT(cfg.grace_ms, 5000);
    CHECK_EQ_INT(cfg.max_queued, 77);
}

static void test_equals_form(void)
{
    char *argv[] = {"jobd", "--listen=[::1]:0", "--max-body=4096", "--allow-exec=no", "--db=a=b.db", NULL};
    CHECK_EQ_INT(load(argv, NULL), CONFIG_OK);
    CHECK_EQ_STR(cfg.listen_host, "::1");
    CHECK_EQ_INT(cfg.listen_port, 0);
    CHECK_EQ_INT(cfg.max_body_bytes, 4096);
    CHECK(!cfg.allow_exec);
    CHECK_EQ_STR(cfg.db_path, "a=b.db");
}

static void test_env_sets_and_flag_overrides(void)
{
    char *env[] = {"PATH=/bin", "JOBD_LISTEN=10.0.0.1:81", "JOBD_ALLOW_EXEC=1", "JOBD_HTTP_THREADS=3",
                   "JOBD_LOG_LEVEL=warn", "JOBD_UNKNOWN_THING=x", "JOBD_DB=", "JOBD_INSECURE_NO_AUTH=1", NULL};
    char *argv[] = {"jobd", NULL};
    CHECK_EQ_INT(load(argv, env), CONFIG_OK);
    CHECK_EQ_STR(cfg.listen_host, "10.0.0.1");
    CHECK_EQ_INT(cfg.listen_port, 81);
    CHECK(cfg.allow_exec);
    CHECK_EQ_INT(cfg.http_threads, 3);
    CHECK_EQ_INT(cfg.log_level, LOG_LEVEL_WARN);
    CHECK_EQ_STR(cfg.db_path, "./data/jobd.db"); /* empty counts as unset */

    char *argv2[] = {"jobd", "--listen", "127.0.0.1:0", "--http-threads=9", NULL};
    CHECK_EQ_INT(load(argv2, env), CONFIG_OK);
    CHECK_EQ_STR(cfg.listen_host, "127.0.0.1");
    CHECK_EQ_INT(cfg.listen_port, 0);
    CHECK_EQ_INT(cfg.http_threads, 9);
    CHECK(cfg.allow_exec);

    char *env_off[] = {"JOBD_ALLOW_EXEC=off", NULL};
    CHECK_EQ_INT(load(argv, env_off), CONFIG_OK);
    CHECK(!cfg.allow_exec);
}

static void test_env_errors_name_the_variable(void)
{
    char *argv[] = {"jobd", NULL};
    char *env[] = {"JOBD_HTTP_THREADS=0", NULL};
    CHECK_EQ_INT(load(argv, env), CONFIG_ERROR);
    CHECK_EQ_STR(err, "JOBD_HTTP_THREADS: \"0\" is out of range 1..64");
    char *env2[] = {"JOBD_ALLOW_EXEC=maybe", NULL};
    CHECK_EQ_INT(load(argv, env2), CONFIG_ERROR);
    CHECK_ERR_HAS("JOBD_ALLOW_EXEC: \"maybe\"");
    char *env3[] = {"JOBD_MAX_BODY=12x", NULL};
    CHECK_EQ_INT(load(argv, env3), CONFIG_ERROR);
    CHECK_ERR_HAS("JOBD_MAX_BODY: \"12x\" is not a whole number");
}

static void test_file_every_kind_of_key(void)
{
    char path[64];
    const char *json = "{\"listen\": \"0.0.0.0:9000\", \"db\": \"/data/jobd.db\", \"log_level\": \"debug\","
                       " \"log_format\": \"json\", \"sync\": \"normal\", \"max_body\": 2048, \"allow_exec\": true,"
                       " \"token\": \"tok\", \"http_threads\": 5, \"max_connections\": 6,"
                       " \"connection_timeout\": 7, \"max_wait\": 8, \"grace\": 9, \"max_queued\": 500,"
                       " \"executors\": [{\"name\":\"cpu\",\"kind\":\"thread\",\"size\":4,\"max_queued\":1000},"
                       "                {\"name\":\"io\",\"kind\":\"thread\",\"size\":16}]}";
    CHECK_EQ_INT(load_file(json, NULL, NULL, path), CONFIG_OK);
    CHECK_EQ_STR(err, "");
    CHECK_EQ_STR(cfg.config_file, path);
    CHECK_EQ_STR(cfg.listen_host, "0.0.0.0");
    CHECK_EQ_INT(cfg.listen_port, 9000);
    CHECK_EQ_STR(cfg.db_path, "/data/jobd.db");
    CHECK_EQ_INT(cfg.log_level, LOG_LEVEL_DEBUG);
    CHECK_EQ_INT(cfg.log_format, LOG_FORMAT_JSON);
    CHECK(!cfg.sync_full);
    CHECK_EQ_INT(cfg.max_body_bytes, 2048);
    CHECK(cfg.allow_exec);
    CHECK_EQ_STR(cfg.token, "tok");
    CHECK_EQ_INT(cfg.http_threads, 5);
    CHECK_EQ_INT(cfg.max_connections, 6);
    CHECK_EQ_INT(cfg.connection_timeout_s, 7);
    CHECK_EQ_INT(cfg.max_wait_ms, 8000);
    CHECK_EQ_INT(cfg.grace_ms, 9000);
    CHECK_EQ_INT(cfg.n_executors, 2);
    CHECK_EQ_STR(cfg.executors[0].name, "cpu");
    CHECK_EQ_INT(cfg.executors[0].size, 4);
    CHECK_EQ_INT(cfg.executors[0].max_queued, 1000);
    CHECK_EQ_STR(cfg.executors[1].name, "io");
    CHECK_EQ_INT(cfg.executors[1].max_queued, 500);

    CHECK_EQ_INT(load_file("{\"executors\": \"x=thread:3\"}", NULL, NULL, path), CONFIG_OK);
    CHECK_EQ_INT(cfg.n_executors, 1);
    CHECK_EQ_INT(cfg.executors[0].size, 3);
}

static void test_file_env_flag_precedence(void)
{
    char path[64];
    const char *json = "{\"listen\": \"1.1.1.1:1\", \"db\": \"file.db\", \"grace\": 1, \"insecure_no_auth\": true}";
    char *env[] = {"JOBD_LISTEN=2.2.2.2:2", "JOBD_GRACE=2", NULL};
    char *argv[] = {"jobd", "--grace", "3", NULL};
    CHECK_EQ_INT(load_file(json, argv, env, path), CONFIG_OK);
    CHECK_EQ_STR(cfg.db_path, "file.db");     /* file over default */
    CHECK_EQ_STR(cfg.listen_host, "2.2.2.2"); /* env over file */
    CHECK_EQ_INT(cfg.grace_ms, 3000);         /* flag over env */

    /* JOBD_CONFIG names the file when --config does not */
    tmp_write(path, json);
    char env_var[128];
    snprintf(env_var, sizeof env_var, "JOBD_CONFIG=%s", path);
    char *env2[] = {env_var, NULL};
    char *argv2[] = {"jobd", NULL};
    CHECK_EQ_INT(load(argv2, env2), CONFIG_OK);
    CHECK_EQ_STR(cfg.db_path, "file.db");
    CHECK_EQ_STR(cfg.config_file, path);
    unlink(path);
}

static void test_file_errors(void)
{
    char path[64];
    CHECK_EQ_INT(load_file("{\"listne\": \"x\"}", NULL, NULL, path), CONFIG_ERROR);
    CHECK_ERR_HAS("unknown key \"listne\"");
    CHECK_ERR_HAS(path);
    CHECK_EQ_INT(load_file("{\"max_body\": \"2048\"}", NULL, NULL, path), CONFIG_ERROR);
    CHECK_ERR_HAS(": max_body: expected a number, not a string");
    CHECK_EQ_INT(load_file("{\"max_body\": 10}", NULL, NULL, path), CONFIG_ERROR);
    CHECK_ERR_HAS(": max_body: \"10\" is out of range 1024..1073741824");
    CHECK_ERR_HAS(path);
    CHECK_EQ_INT(load_file("{\"max_body\": 2048.5}", NULL, NULL, path), CONFIG_ERROR);
    CHECK_ERR_HAS("not a whole number");
    CHECK_EQ_INT(load_file("{\"allow_exec\": 1}", NULL, NULL, path), CONFIG_ERROR);
    CHECK_ERR_HAS("allow_exec: expected true or false");
    CHECK_EQ_INT(load_file("{\"commands\": 5}", NULL, NULL, path), CONFIG_ERROR);
    CHECK_ERR_HAS("commands");
    CHECK_EQ_INT(load_file("{\"plugins\": 5}", NULL, NULL, path), CONFIG_ERROR);
    CHECK_ERR_HAS("plugins");
    CHECK_EQ_INT(load_file("{\"listen\": 5,}", NULL, NULL, path), CONFIG_ERROR);
    CHECK_ERR_HAS("not valid JSON");
    CHECK_EQ_INT(load_file("[1]", NULL, NULL, path), CONFIG_ERROR);
    CHECK_ERR_HAS("expected a JSON object");
    CHECK_EQ_INT(load_file("{\"executors\": [{\"name\":\"a\",\"kind\":\"thread\",\"size\":1,\"extra\":1}]}", NULL,
                           NULL, path),
                 CONFIG_ERROR);
    CHECK_ERR_HAS("executors[0]: unknown key \"extra\"");
    CHECK_EQ_INT(load_file("{\"executors\": [{\"name\":\"a\",\"kind\":\"thread\",\"size\":0}]}", NULL, NULL, path),
                 CONFIG_ERROR);
    CHECK_ERR_HAS("out of range 1..4096");
    CHECK_EQ_INT(load_file("{\"executors\": [{\"name\":\"a\",\"kind\":\"thread\",\"size\":1,\"max_queued\":0}]}",
                           NULL, NULL, path),
                 CONFIG_ERROR);
    CHECK_ERR_HAS("executors[0].max_queued: \"0\" is out of range");
    CHECK_EQ_INT(load_file("{\"executors\": []}", NULL, NULL, path), CONFIG_ERROR);
    CHECK_ERR_HAS("executors: the list is empty (at least one executor is needed)");
    CHECK_ERR_HAS(path);
    CHECK_EQ_INT(load_file("{\"executors\": 3}", NULL, NULL, path), CONFIG_ERROR);
    CHECK_ERR_HAS("executors: expected a list of executors or a string, not a number");

    char *argv[] = {"jobd", "--config", "/tmp/jobd_test_config_does_not_exist.json", NULL};
    CHECK_EQ_INT(load(argv, NULL), CONFIG_ERROR);
    CHECK_ERR_HAS("/tmp/jobd_test_config_does_not_exist.json");
}

static void test_executor_lists(void)
{
    char *argv[] = {"jobd", "--executors", "cpu=thread:4, io=thread:64,x_1-y=thread:1", NULL};
    CHECK_EQ_INT(load(argv, NULL), CONFIG_OK);
    CHECK_EQ_INT(cfg.n_executors, 3);
    CHECK_EQ_STR(cfg.executors[1].name, "io");
    CHECK_EQ_INT(cfg.executors[1].size, 64);
    CHECK_EQ_STR(cfg.executors[2].name, "x_1-y");

    static const struct { const char *list, *want; } bad[] = {
        {"a=thread:1,a=thread:2", "\"a\" is used twice"},
        {"a=fiber:1", "\"fiber\" is not an executor kind"},
        {"a=thread:0", "\"0\" is out of range 1..4096"},
        {"a=thread:4097", "\"4097\" is out of range 1..4096"},
        {"a=thread:x", "\"x\" is not a whole number"},
        {"A=thread:1", "executor name \"A\""},
        {"a=thread", "\"a=thread\" is not NAME=KIND:SIZE"},
        {"a=thread:1,", "\"\" is not NAME=KIND:SIZE"},
        {"", "is not NAME=KIND:SIZE"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *a[] = {"jobd", "--executors", (char *)bad[i].list, NULL};
        CHECK_EQ_INT(load(a, NULL), CONFIG_ERROR);
        CHECK_ERR_HAS("--executors: ");
        CHECK_ERR_HAS(bad[i].want);
    }
    char *env[] = {"JOBD_EXECUTORS=p=fiber:1", NULL};
    char *argv0[] = {"jobd", NULL};
    CHECK_EQ_INT(load(argv0, env), CONFIG_ERROR);
    CHECK_ERR_HAS("JOBD_EXECUTORS: \"fiber\" is not an executor kind");
    char *okenv[] = {"JOBD_EXECUTORS=p=process:1,a=async:8", NULL};
    CHECK_EQ_INT(load(argv0, okenv), CONFIG_OK);
    CHECK_EQ_INT(cfg.n_executors, 2);
    CHECK_EQ_INT(cfg.executors[0].kind, TASK_KIND_PROCESS);
    CHECK_EQ_INT(cfg.executors[1].kind, TASK_KIND_ASYNC);

    char list[40 * 16] = "";
    for (int i = 0; i <= CONFIG_MAX_EXECUTORS; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%se%d=thread:1", i ? "," : "", i);
    char *a2[] = {"jobd", "--executors", list, NULL};
    CHECK_EQ_INT(load(a2, NULL), CONFIG_ERROR);
    CHECK_ERR_HAS("too many executors");
}

static void test_max_queued_applies_to_listed_executors(void)
{
    char *argv[] = {"jobd", "--executors", "a=thread:1,b=thread:2", "--max-queued", "42", NULL};
    CHECK_EQ_INT(load(argv, NULL), CONFIG_OK);
    CHECK_EQ_INT(cfg.executors[0].max_queued, 42);
    CHECK_EQ_INT(cfg.executors[1].max_queued, 42);
    /* order does not matter, and the env's max_queued reaches the file's list */
    char path[64];
    char *env[] = {"JOBD_MAX_QUEUED=7", NULL};
    CHECK_EQ_INT(load_file("{\"executors\": \"c=thread:1\"}", NULL, env, path), CONFIG_OK);
    CHECK_EQ_INT(cfg.executors[0].max_queued, 7);
    char *argv2[] = {"jobd", NULL};
    CHECK_EQ_INT(load(argv2, env), CONFIG_OK); /* default list too */
    CHECK_EQ_INT(cfg.executors[0].max_queued, 7);
}

static void test_parse_executors_public(void)
{
    char *argv[] = {"jobd", NULL};
    CHECK_EQ_INT(load(argv, NULL), CONFIG_OK);
    cfg.max_queued = 9;
    CHECK_EQ_INT(config_parse_executors(&cfg, "z=thread:2", err, sizeof err), 0);
    CHECK_EQ_INT(cfg.n_executors, 1);
    CHECK_EQ_INT(cfg.executors[0].max_queued, 9);
    CHECK_EQ_INT(config_parse_executors(&cfg, "z=thread:2,z=thread:1", err, sizeof err), -1);
    CHECK_ERR_HAS("used twice");
    CHECK_EQ_INT(cfg.n_executors, 1); /* unchanged on error */
}

static void test_bad_listen(void)
{
    static const char *const bad[] = {"abc", "127.0.0.1", ":8080", "::1:8080", "[::1]8080", "[]:80",
                                      "host:", "host:80x", "host:-1", "a b:80"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *a[] = {"jobd", "--listen", (char *)bad[i], NULL};
        char want[128];
        CHECK_EQ_INT(load(a, NULL), CONFIG_ERROR);
        snprintf(want, sizeof want, "--listen: \"%s\" is not ADDR:PORT (example: 127.0.0.1:8080", bad[i]);
        CHECK_ERR_HAS(want);
    }
    char *a[] = {"jobd", "--listen=localhost:65536", NULL};
    CHECK_EQ_INT(load(a, NULL), CONFIG_ERROR);
    CHECK_ERR_HAS("out of range 0..65535");
    char *ok[] = {"jobd", "--listen", "localhost:65535", NULL};
    CHECK_EQ_INT(load(ok, NULL), CONFIG_OK);
    CHECK_EQ_STR(cfg.listen_host, "localhost");
    CHECK_EQ_INT(cfg.listen_port, 65535);
}

static void test_token_file(void)
{
    char path[64], flag[128];
    tmp_write(path, "  abc.def-123 \n\r\n");
    snprintf(flag, sizeof flag, "--token-file=%s", path);
    char *argv[] = {"jobd", flag, NULL};
    CHECK_EQ_INT(load(argv, NULL), CONFIG_ERROR); /* only trailing whitespace is dropped */
    CHECK_ERR_HAS("without spaces");

    tmp_rewrite(path, "abc.def-123\n");
    CHECK_EQ_INT(load(argv, NULL), CONFIG_OK);
    CHECK_EQ_STR(cfg.token, "abc.def-123");
    char env_var[128];
    snprintf(env_var, sizeof env_var, "JOBD_TOKEN_FILE=%s", path);
    char *env[] = {env_var, NULL};
    char *argv0[] = {"jobd", NULL};
    CHECK_EQ_INT(load(argv0, env), CONFIG_OK);
    CHECK_EQ_STR(cfg.token, "abc.def-123");
    char *argv_tok[] = {"jobd", "--token", "flagtok", NULL};
    CHECK_EQ_INT(load(argv_tok, env), CONFIG_OK); /* flag over env */
    CHECK_EQ_STR(cfg.token, "flagtok");
    char *both[] = {"jobd", "--token", "x", flag, NULL};
    CHECK_EQ_INT(load(both, NULL), CONFIG_ERROR);
    CHECK_ERR_HAS("use one of them");

    tmp_rewrite(path, " \n\n");
    CHECK_EQ_INT(load(argv, NULL), CONFIG_ERROR);
    CHECK_ERR_HAS("is empty");
    unlink(path);

    CHECK_EQ_INT(load(argv, NULL), CONFIG_ERROR); /* now missing */
    CHECK_ERR_HAS("--token-file: cannot read");
    CHECK_ERR_HAS(path);
}

static void test_token_never_echoed(void)
{
    char *argv[] = {"jobd", "--token", "has space", NULL};
    CHECK_EQ_INT(load(argv, NULL), CONFIG_ERROR);
    CHECK_ERR_HAS("--token: ");
    CHECK(strstr(err, "has space") == NULL);
}

static void test_unknown_flags_and_syntax(void)
{
    char *a1[] = {"jobd", "--lisen", "x", NULL};
    CHECK_EQ_INT(load(a1, NULL), CONFIG_ERROR);
    CHECK_ERR_HAS("unknown option \"--lisen\"");
    CHECK_ERR_HAS("--help");
    char *a2[] = {"jobd", "stray", NULL};
    CHECK_EQ_INT(load(a2, NULL), CONFIG_ERROR);
    CHECK_ERR_HAS("--help");
    char *a3[] = {"jobd", "--db", NULL};
    CHECK_EQ_INT(load(a3, NULL), CONFIG_ERROR);
    CHECK_ERR_HAS("--db needs a value");
    char *a4[] = {"jobd", "--db", "--listen", "1.2.3.4:5", NULL};
    CHECK_EQ_INT(load(a4, NULL), CONFIG_ERROR);
    CHECK_ERR_HAS("--db needs a value");
    char *a5[] = {"jobd", "--log-level", "loud", NULL};
    CHECK_EQ_INT(load(a5, NULL), CONFIG_ERROR);
    CHECK_ERR_HAS("--log-level: \"loud\"");
    char *a6[] = {"jobd", "--sync", "fast", NULL};
    CHECK_EQ_INT(load(a6, NULL), CONFIG_ERROR);
    CHECK_ERR_HAS("--sync: \"fast\"");
    char *a7[] = {"jobd", "--max-wait", "-1", NULL};
    CHECK_EQ_INT(load(a7, NULL), CONFIG_ERROR);
    CHECK_ERR_HAS("--max-wait: \"-1\" is out of range 0..86400");
    char *a8[] = {"jobd", "--max-queued", "99999999999999999999999", NULL};
    CHECK_EQ_INT(load(a8, NULL), CONFIG_ERROR);
    CHECK_ERR_HAS("out of range 1..100000000");
}

static void test_help_and_version(void)
{
    static const char *const names[] = {
        "--listen", "--db", "--config", "--token", "--token-file", "--executors", "--allow-exec", "--log-level",
        "--log-format", "--sync", "--max-body", "--http-threads", "--max-connections", "--connection-timeout",
        "--max-wait", "--grace", "--max-queued", "--help", "--version", "JOBD_LISTEN", "JOBD_TOKEN_FILE",
        "JOBD_MAX_QUEUED", "JOBD_ALLOW_EXEC", "127.0.0.1:8080", "thread=thread:2N"};
    static char *no_env[] = {NULL};
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    char *argv[] = {"jobd", "--db", "x.db", "--help", "--bogus", NULL};
    CHECK_EQ_INT(config_load(&cfg, 5, argv, no_env, NCORES, out, err, sizeof err), CONFIG_EXIT);
    fclose(out);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (!strstr(buf, names[i])) fprintf(stderr, "    help lacks %s\n", names[i]);
        CHECK(strstr(buf, names[i]) != NULL);
    }
    free(buf);

    buf = NULL;
    out = open_memstream(&buf, &len);
    char *argv2[] = {"jobd", "-h", NULL};
    CHECK_EQ_INT(config_load(&cfg, 2, argv2, no_env, NCORES, out, err, sizeof err), CONFIG_EXIT);
    fclose(out);
    CHECK(strstr(buf, "--listen") != NULL);
    free(buf);

    buf = NULL;
    out = open_memstream(&buf, &len);
    char *argv3[] = {"jobd", "--version", NULL};
    CHECK_EQ_INT(config_load(&cfg, 2, argv3, no_env, NCORES, out, err, sizeof err), CONFIG_EXIT);
    fclose(out);
    CHECK_EQ_STR(buf, "jobd 0.1.0\n");
    free(buf);
}

static void test_retention_durations(void)
{
    char *argv[] = {"jobd", NULL};
    CHECK_EQ_INT(load(argv, NULL), CONFIG_OK);
    CHECK_EQ_INT(cfg.retention_ms, 7LL * 86400 * 1000);
    CHECK_EQ_INT(cfg.retention_failed_ms, 30LL * 86400 * 1000);
    CHECK_EQ_INT(cfg.prune_interval_ms, 60000);

    char *argv2[] = {"jobd", "--retention", "12h", "--retention-failed=90s", "--prune-interval", "1", NULL};
    CHECK_EQ_INT(load(argv2, NULL), CONFIG_OK);
    CHECK_EQ_INT(cfg.retention_ms, 12LL * 3600 * 1000);
    CHECK_EQ_INT(cfg.retention_failed_ms, 90000);
    CHECK_EQ_INT(cfg.prune_interval_ms, 1000);

    char *env[] = {"JOBD_RETENTION=0", "JOBD_RETENTION_FAILED=5m", "JOBD_PRUNE_INTERVAL=2m", NULL};
    CHECK_EQ_INT(load(argv, env), CONFIG_OK);
    CHECK_EQ_INT(cfg.retention_ms, 0); /* kept forever */
    CHECK_EQ_INT(cfg.retention_failed_ms, 300000);
    CHECK_EQ_INT(cfg.prune_interval_ms, 120000);

    char path[64];
    CHECK_EQ_INT(load_file("{\"retention\": \"2d\", \"retention_failed\": 3600}", NULL, NULL, path), CONFIG_OK);
    CHECK_EQ_INT(cfg.retention_ms, 2LL * 86400 * 1000);
    CHECK_EQ_INT(cfg.retention_failed_ms, 3600000);
    CHECK_EQ_INT(load_file("{\"retention\": true}", NULL, NULL, path), CONFIG_ERROR);
    CHECK_ERR_HAS("retention: expected a number of seconds or a duration string");

    char *bad[][2] = {{"--retention", "7x"}, {"--retention", "d"}, {"--retention", "-1"}, {"--retention", "1.5h"},
                      {"--retention", "7dd"}, {"--retention", " 7d"}, {"--prune-interval", "0"},
                      {"--retention", "3651d"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *a[] = {"jobd", bad[i][0], bad[i][1], NULL};
        CHECK_EQ_INT(load(a, NULL), CONFIG_ERROR);
        CHECK_ERR_HAS(bad[i][0]);
    }
    char *a[] = {"jobd", "--retention", "7x", NULL};
    CHECK_EQ_INT(load(a, NULL), CONFIG_ERROR);
    CHECK_ERR_HAS("is not a duration");
    char *b[] = {"jobd", "--prune-interval", "0", NULL};
    CHECK_EQ_INT(load(b, NULL), CONFIG_ERROR);
    CHECK_ERR_HAS("out of range 1s..86400s");
    /* 15 digits of days overflowed the seconds (found by fuzz_config): out of range, not UB. */
    const char *huge[] = {"999959999999999d", "999999999999999h", "999999999999999m", "999999999999999"};
    for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
        char *c[] = {"jobd", "--retention-failed", (char *)huge[i], NULL};
        CHECK_EQ_INT(load(c, NULL), CONFIG_ERROR);
        CHECK_ERR_HAS("is out of range");
    }
}

/* SPEC §3: without a token, loopback only unless told otherwise explicitly. */
static void test_non_loopback_needs_a_token_or_insecure_no_auth(void)
{
    const char *loop[] = {"127.0.0.1:0", "127.9.8.7:1", "[::1]:0", "localhost:80", "LOCALHOST:80",
                          "[::ffff:127.0.0.1]:0"};
    for (size_t i = 0; i < sizeof loop / sizeof loop[0]; i++) {
        char *a[] = {"jobd", "--listen", (char *)loop[i], NULL};
        CHECK_EQ_INT(load(a, NULL), CONFIG_OK);
    }
    const char *open[] = {"0.0.0.0:8080", "10.1.2.3:80", "[::]:8080", "myhost:80", "128.0.0.1:1",
                          "127.example.com:1"};
    for (size_t i = 0; i < sizeof open / sizeof open[0]; i++) {
        char *a[] = {"jobd", "--listen", (char *)open[i], NULL};
        CHECK_EQ_INT(load(a, NULL), CONFIG_ERROR);
        CHECK_ERR_HAS("--listen: ");
        CHECK_ERR_HAS("--token");
        CHECK_ERR_HAS("--token-file");
        CHECK_ERR_HAS("JOBD_TOKEN");
        CHECK_ERR_HAS("--insecure-no-auth");
        char *b[] = {"jobd", "--listen", (char *)open[i], "--insecure-no-auth", NULL};
        CHECK_EQ_INT(load(b, NULL), CONFIG_OK);
        CHECK(cfg.insecure_no_auth);
        char *c[] = {"jobd", "--listen", (char *)open[i], "--token", "t0k", NULL};
        CHECK_EQ_INT(load(c, NULL), CONFIG_OK);
    }
    char *a[] = {"jobd", NULL};
    char *env[] = {"JOBD_LISTEN=0.0.0.0:1", "JOBD_INSECURE_NO_AUTH=1", NULL};
    CHECK_EQ_INT(load(a, env), CONFIG_OK);
    char *env2[] = {"JOBD_LISTEN=0.0.0.0:1", "JOBD_INSECURE_NO_AUTH=0", NULL};
    CHECK_EQ_INT(load(a, env2), CONFIG_ERROR);
    char *env3[] = {"JOBD_LISTEN=0.0.0.0:1", "JOBD_TOKEN=abc", NULL};
    CHECK_EQ_INT(load(a, env3), CONFIG_OK);
    char path[64];
    CHECK_EQ_INT(load_file("{\"listen\": \"0.0.0.0:1\", \"insecure_no_auth\": true}", NULL, NULL, path), CONFIG_OK);
    CHECK_EQ_INT(load_file("{\"listen\": \"0.0.0.0:1\"}", NULL, NULL, path), CONFIG_ERROR);
}

int main(void)
{
    RUN(test_defaults);
    RUN(test_defaults_follow_cores_within_bounds);
    RUN(test_each_flag);
    RUN(test_equals_form);
    RUN(test_env_sets_and_flag_overrides);
    RUN(test_env_errors_name_the_variable);
    RUN(test_file_every_kind_of_key);
    RUN(test_file_env_flag_precedence);
    RUN(test_file_errors);
    RUN(test_executor_lists);
    RUN(test_max_queued_applies_to_listed_executors);
    RUN(test_parse_executors_public);
    RUN(test_bad_listen);
    RUN(test_token_file);
    RUN(test_token_never_echoed);
    RUN(test_unknown_flags_and_syntax);
    RUN(test_help_and_version);
    RUN(test_retention_durations);
    RUN(test_non_loopback_needs_a_token_or_insecure_no_auth);
    return harness_finish();
}
