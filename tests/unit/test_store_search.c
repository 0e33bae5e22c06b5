/* test_store_search.c - storage/: the search text of store_job_list (q): what
 * matches (id, args, result, error message; ASCII case-insensitive), LIKE's
 * wildcards taken literally, and q combined with the other filters, several
 * statuses and keyset paging.
 *
 * Each test works in its own mkdtemp directory and removes it; inserts are
 * committed with store_sync() before any read.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/clock.h"
#include "../../common/id.h"
#include "../../common/job.h"
#include "../../common/log.h"
#include "../../storage/store.h"
#include "harness.h"
#include "tmpdir.h"

#define NJOBS 12

/* Inserts a job (moved into the store); copies its id to id_out when not NULL. */
static void put(struct store *st, enum job_status status, const char *args, const char *result, const char *error,
                char *id_out)
{
    struct job *j = job_new();
    if (!j) abort();
    id_new(j->id);
    if (job_set_str(&j->task, "echo") || job_set_str(&j->executor, "thread") || job_set_str(&j->args, args))
        abort();
    if (result && job_set_str(&j->result, result)) abort();
    if (error) {
        j->error_type = JOB_ERR_TASK;
        if (job_set_str(&j->error_message, error)) abort();
    }
    j->status = status;
    j->created_at_ms = j->scheduled_at_ms = clock_wall_ms();
    if (id_out) memcpy(id_out, j->id, ID_LEN + 1);
    CHECK_EQ_INT(store_job_insert(st, j, NULL, NULL), 0);
}

/* Every page of f (limit as set), newest first; returns how many jobs matched
 * and copies their ids into ids (up to cap). */
static size_t search_all(struct store *st, struct store_filter f, char ids[][ID_LEN + 1], size_t cap)
{
    size_t total = 0;
    char cursor[ID_LEN + 1] = "";
    for (int page = 0; page < 100; page++) {
        struct job **jobs = NULL;
        size_t n = 0;
        char next[ID_LEN + 1];
        f.before_id = cursor[0] ? cursor : NULL;
        CHECK_EQ_INT(store_job_list(st, &f, &jobs, &n, next), 0);
        for (size_t i = 0; i < n; i++) {
            if (total > 0 && total <= cap) CHECK(strcmp(ids[total - 1], jobs[i]->id) > 0);
            if (total < cap) memcpy(ids[total], jobs[i]->id, ID_LEN + 1);
            total++;
        }
        store_jobs_free(jobs, n);
        if (!next[0]) break;
        memcpy(cursor, next, sizeof cursor);
    }
    return total;
}

static size_t count_q(struct store *st, const char *q)
{
    char ids[NJOBS + 2][ID_LEN + 1];
    return search_all(st, (struct store_filter){.q = q, .limit = 1000}, ids, NJOBS + 2);
}

static void test_search_matches_id_args_result_and_error(void)
{
    struct tmp t;
    tmp_make(&t, "search");
    struct store_options opt = {.path = t.db};
    struct store *st = NULL;
    CHECK_EQ_INT(store_open(&opt, &st), 0);
    char by_args[ID_LEN + 1], by_result[ID_LEN + 1], by_error[ID_LEN + 1], plain[ID_LEN + 1];
    put(st, JOB_QUEUED, "{\"city\":\"Zanzibar\"}", NULL, NULL, by_args);
    put(st, JOB_SUCCEEDED, "{}", "{\"found\":\"QUOKKA\"}", NULL, by_result);
    put(st, JOB_FAILED, "{}", NULL, "the wombat escaped", by_error);
    put(st, JOB_SUCCEEDED, "{\"n\":1}", "1", NULL, plain);
    put(st, JOB_QUEUED, "{\"pct\":\"100%\",\"u\":\"a_b\",\"bs\":\"c\\\\d\"}", NULL, NULL, NULL);
    put(st, JOB_QUEUED, "{\"pct\":\"1000\",\"u\":\"axb\",\"bs\":\"cd\"}", NULL, NULL, NULL);
    store_sync(st);

    char ids[NJOBS][ID_LEN + 1];
    struct store_filter f = {.q = "zanzibar", .limit = 50}; /* case-insensitive, inside args */
    CHECK_EQ_INT(search_all(st, f, ids, NJOBS), 1);
    CHECK_EQ_STR(ids[0], by_args);
    f.q = "quokka";
    CHECK_EQ_INT(search_all(st, f, ids, NJOBS), 1);
    CHECK_EQ_STR(ids[0], by_result);
    f.q = "WOMBAT";
    CHECK_EQ_INT(search_all(st, f, ids, NJOBS), 1);
    CHECK_EQ_STR(ids[0], by_error);
    f.q = plain; /* an id matches exactly */
    CHECK_EQ_INT(search_all(st, f, ids, NJOBS), 1);
    CHECK_EQ_STR(ids[0], plain);
    CHECK_EQ_INT(count_q(st, "nothing like this"), 0);

    /* %, _ and \ are literal characters, not LIKE's wildcards and escape */
    CHECK_EQ_INT(count_q(st, "100%"), 1);
    CHECK_EQ_INT(count_q(st, "a_b"), 1);
    CHECK_EQ_INT(count_q(st, "c\\\\d"), 1); /* the JSON text holds c\\d */
    CHECK_EQ_INT(count_q(st, "\\"), 1);
    CHECK_EQ_INT(count_q(st, "%"), 1);
    CHECK_EQ_INT(count_q(st, "_"), 1);
    /* a quote cannot break out of the statement: values are bound */
    CHECK_EQ_INT(count_q(st, "' OR 1=1 --"), 0);

    store_close(st);
    tmp_remove(&t);
}

static void test_search_combines_with_filters_and_pages(void)
{
    struct tmp t;
    tmp_make(&t, "search");
    struct store_options opt = {.path = t.db};
    struct store *st = NULL;
    CHECK_EQ_INT(store_open(&opt, &st), 0);
    char ids[NJOBS][ID_LEN + 1];
    int n_hit = 0, n_hit_ok = 0;
    for (int i = 0; i < NJOBS; i++) {
        bool hit = i % 3 != 0, ok = i % 2 == 0;
        put(st, ok ? JOB_SUCCEEDED : JOB_QUEUED, hit ? "{\"tag\":\"needle\"}" : "{\"tag\":\"hay\"}", NULL, NULL,
            ids[i]);
        n_hit += hit;
        n_hit_ok += hit && ok;
    }
    store_sync(st);

    char seen[NJOBS][ID_LEN + 1];
    /* pages of 2: newest first, exactly the matching jobs */
    struct store_filter f = {.q = "needle", .limit = 2};
    CHECK_EQ_INT(search_all(st, f, seen, NJOBS), n_hit);
    for (int i = NJOBS - 1, k = 0; i >= 0; i--)
        if (i % 3 != 0) CHECK_EQ_STR(seen[k++], ids[i]);
    f = (struct store_filter){.q = "needle", .status_mask = 1u << JOB_SUCCEEDED, .limit = 1};
    CHECK_EQ_INT(search_all(st, f, seen, NJOBS), n_hit_ok);
    /* several statuses (a UNION of one walk per status), with task and executor */
    f = (struct store_filter){.q = "needle", .status_mask = (1u << JOB_SUCCEEDED) | (1u << JOB_QUEUED) |
                                                            (1u << JOB_RUNNING) | (1u << JOB_FAILED) |
                                                            (1u << JOB_CANCELLED),
                              .task = "echo", .executor = "thread", .limit = 3};
    CHECK_EQ_INT(search_all(st, f, seen, NJOBS), n_hit);
    f = (struct store_filter){.q = "needle", .task = "sleep", .limit = 3};
    CHECK_EQ_INT(search_all(st, f, seen, NJOBS), 0);
    f = (struct store_filter){.q = "needle", .status_mask = 1u << JOB_RUNNING, .limit = 3};
    CHECK_EQ_INT(search_all(st, f, seen, NJOBS), 0);

    store_close(st);
    tmp_remove(&t);
}

int main(void)
{
    log_init(LOG_LEVEL_OFF, LOG_FORMAT_TEXT);
    RUN(test_search_matches_id_args_result_and_error);
    RUN(test_search_combines_with_filters_and_pages);
    return harness_finish();
}
