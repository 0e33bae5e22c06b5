/* openapi.c - GET /v1/openapi.json: the OpenAPI 3.1 description of the API.
 *
 * The document is docs/openapi.json, compiled into the binary: the Makefile
 * turns it into $(OBJDIR)/gen/openapi_json.c (a byte array, NUL-terminated,
 * and its length without the NUL), so nothing is read from disk at run time
 * and the binary always serves the document it was built with.
 * tests/integration/test_docs.py checks the document against the route
 * table, the live server and docs/API.md.
 */
#include <stddef.h>

#include "server.h"

/* Defined in the generated $(OBJDIR)/gen/openapi_json.c. */
extern const unsigned char jobd_openapi_json[];
extern const size_t jobd_openapi_json_len;

enum srv_step srv_h_openapi(struct srv_req *req)
{
    srv_reply_static(req, 200, "application/json", jobd_openapi_json, jobd_openapi_json_len);
    return STEP_DONE;
}
