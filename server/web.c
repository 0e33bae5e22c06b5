/* web.c - GET /, /app.js, /app.css: the dashboard (SPEC §7), compiled in.
 *
 * The files of web/ (app.js is the scripts of web/js joined in name order) are turned
 * by the Makefile into $(OBJDIR)/gen/web_assets.c
 * (one NUL-terminated byte array per file and its length without the NUL), so
 * nothing is read from disk at run time and the binary serves the dashboard it
 * was built with. The page holds no data: these routes need no token, and the
 * page's own API calls carry it.
 *
 * Caching: each reply has a strong ETag (FNV-1a 64 of the file, computed once)
 * and `Cache-Control: no-cache`, so a browser revalidates every time and gets a
 * 304 with no body while the binary is the same. The Content-Security-Policy
 * allows nothing but this origin: no inline script or style, no other host.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "server.h"

/* Defined in the generated $(OBJDIR)/gen/web_assets.c. */
extern const unsigned char jobd_web_index_html[];
extern const size_t jobd_web_index_html_len;
extern const unsigned char jobd_web_app_js[];
extern const size_t jobd_web_app_js_len;
extern const unsigned char jobd_web_app_css[];
extern const size_t jobd_web_app_css_len;

/* connect-src 'self' covers fetch() of /v1; img-src data: is for the inline SVG favicon. */
#define WEB_CSP                                                                                      \
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "                \
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

enum { WEB_INDEX, WEB_JS, WEB_CSS, WEB_N };

struct web_asset {
    const unsigned char *data;
    const size_t *len;
    const char *content_type;
};

static const struct web_asset web_assets[WEB_N] = {
    [WEB_INDEX] = {jobd_web_index_html, &jobd_web_index_html_len, "text/html; charset=utf-8"},
    [WEB_JS] = {jobd_web_app_js, &jobd_web_app_js_len, "text/javascript; charset=utf-8"},
    [WEB_CSS] = {jobd_web_app_css, &jobd_web_app_css_len, "text/css; charset=utf-8"},
};

/* Written once by web_etags_init (under web_once), read-only after. */
static char web_etags[WEB_N][24];
static pthread_once_t web_once = PTHREAD_ONCE_INIT;

static void web_etags_init(void)
{
    for (int i = 0; i < WEB_N; i++) {
        uint64_t h = 1469598103934665603ULL; /* FNV-1a 64 */
        for (size_t k = 0; k < *web_assets[i].len; k++) {
            h ^= web_assets[i].data[k];
            h *= 1099511628211ULL;
        }
        snprintf(web_etags[i], sizeof web_etags[i], "\"%016llx\"", (unsigned long long)h);
    }
}

/* True when an If-None-Match list names etag (or is "*"). */
static bool web_etag_matches(const char *header, const char *etag)
{
    if (!header) return false;
    size_t n = strlen(etag);
    for (const char *p = header; *p;) {
        p += strspn(p, " \t,");
        if (strncmp(p, "W/", 2) == 0) p += 2; /* weak comparison, as RFC 9110 asks for GET */
        size_t len = strcspn(p, ",");
        while (len && (p[len - 1] == ' ' || p[len - 1] == '\t')) len--;
        if ((len == 1 && *p == '*') || (len == n && strncmp(p, etag, n) == 0)) return true;
        p += strcspn(p, ",");
    }
    return false;
}

static enum srv_step web_reply(struct srv_req *req, int which)
{
    pthread_once(&web_once, web_etags_init);
    const struct web_asset *a = &web_assets[which];
    const char *etag = web_etags[which];
    if (web_etag_matches(srv_req_header(req, "If-None-Match"), etag))
        srv_reply_empty(req, 304);
    else
        srv_reply_static(req, 200, a->content_type, a->data, *a->len);
    srv_reply_header(req, "ETag", etag);
    srv_reply_header(req, "Cache-Control", "no-cache");
    srv_reply_header(req, "X-Content-Type-Options", "nosniff");
    srv_reply_header(req, "Content-Security-Policy", WEB_CSP);
    srv_reply_header(req, "Referrer-Policy", "no-referrer");
    return STEP_DONE;
}

enum srv_step srv_h_web_index(struct srv_req *req)
{
    return web_reply(req, WEB_INDEX);
}

enum srv_step srv_h_web_js(struct srv_req *req)
{
    return web_reply(req, WEB_JS);
}

enum srv_step srv_h_web_css(struct srv_req *req)
{
    return web_reply(req, WEB_CSS);
}
