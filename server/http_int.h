/* http_int.h - private to server/: the pure parts of request intake in
 * http.c (route lookup with {id} extraction, the query-argument, Content-Type
 * and token checks, the access log's URL escaping), exposed as a test seam so
 * that tests/fuzz/fuzz_router.c can drive them without libmicrohttpd. The
 * double underscore marks them internal (libuv's `uv__`): only http.c and
 * tests call them. None allocates, locks or reads global state but the
 * constant route table.
 */
#ifndef JOBD_HTTP_INT_H
#define JOBD_HTTP_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "../common/id.h"
#include "server.h"

/* What a request line maps to. */
struct srv__route_hit {
    int route;              /* srv_routes index of the matching route, -1 = none */
    int route_idx;          /* the route, or with a wrong method the first route of the path; -1 = none */
    char path_id[ID_LEN + 8]; /* the {id} segment (NUL-terminated); "#..." when too long to be an id */
    bool has_id;
    bool bad_method;        /* the path is known, the method is not: reply 405 with allow */
    char allow[64];         /* "GET, DELETE": the methods of the path, set with bad_method */
};

/* Looks method and url (the path, without the query string) up in srv_routes.
 * HEAD matches GET routes. Fills *hit; never fails. */
void srv__route_find(const char *method, const char *url, struct srv__route_hit *hit);

/* True when `key` is a query argument route r allows (r->query; NULL = none). */
bool srv__query_allowed(const struct srv_route *r, const char *key);

/* True when a POST body's Content-Type (NULL or "" = none given) is JSON or a
 * form that libmicrohttpd would hand over as is. */
bool srv__content_type_ok(const char *ct);

/* True when no token is configured (token ""), or when header is "Bearer
 * TOKEN" (scheme case-insensitive). Constant time in the token's length. */
bool srv__auth_ok(const char *token, const char *header);

/* Writes url into out (cap >= 1 bytes) for the access log: printable
 * ASCII as is, every other byte as %XX; truncated when long; always
 * NUL-terminated. */
void srv__log_url(char *out, size_t cap, const char *url);

#endif
