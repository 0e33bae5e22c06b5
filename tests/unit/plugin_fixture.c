/* plugin_fixture.c - broken plugins for test_tasks_extra.c, one per macro:
 *
 *   FIXTURE_nover     exports no jobd_plugin_api_version
 *   FIXTURE_badver    exports version 999
 *   FIXTURE_noinit    exports the version but no jobd_plugin_init
 *   FIXTURE_initfail  jobd_plugin_init returns 7
 *   FIXTURE_dup       registers "echo", which jobd has built in (and returns 0)
 */
#include <jobd_plugin.h>

#if !defined(FIXTURE_nover)
#if defined(FIXTURE_badver)
const int jobd_plugin_api_version = 999;
#else
const int jobd_plugin_api_version = JOBD_PLUGIN_API_VERSION;
#endif
#endif

#if !defined(FIXTURE_noinit)
__attribute__((unused)) static int fixture_run(struct task_ctx *ctx)
{
    ctx->result = NULL;
    return 0;
}

int jobd_plugin_init(const struct jobd_plugin_api *api)
{
#if defined(FIXTURE_initfail)
    (void)api;
    return 7;
#else
    static const struct task_def def = {"echo", "a second echo", TASK_KIND_THREAD, TASK_KIND_THREAD, NULL, NULL,
                                        fixture_run, NULL};
    api->register_task(api->registry, &def); /* ignores the refusal: jobd must not */
    return 0;
#endif
}
#else
int jobd_plugin_fixture_unused(void);
int jobd_plugin_fixture_unused(void)
{
    return 0;
}
#endif
