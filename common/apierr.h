/* apierr.h - the API's error vocabulary (SPEC §3), shared by core's validation
 * and the server's replies. It names the codes; only server/ maps them to HTTP.
 */
#ifndef JOBD_APIERR_H
#define JOBD_APIERR_H

#include <stdarg.h>

enum api_code {
    API_OK = 0,
    API_BAD_JSON,
    API_INVALID_ARGUMENT,
    API_UNAUTHORIZED,
    API_NOT_FOUND,
    API_METHOD_NOT_ALLOWED,
    API_CONFLICT,
    API_PAYLOAD_TOO_LARGE,
    API_UNSUPPORTED_MEDIA_TYPE,
    API_QUEUE_FULL,
    API_INTERNAL,
    API_UNAVAILABLE,
};

/* An error a person can act on: a code, a sentence, and the JSON path of the
 * offending value ("args.seconds", "jobs[3].task") or "" when there is none. */
struct api_err {
    enum api_code code;
    char message[384];
    char field[128];
};

/* Sets all three fields; returns -1 so validators can `return api_err_set(...)`. */
int api_err_set(struct api_err *err, enum api_code code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

const char *api_code_name(enum api_code code);

/* Maps a negative errno from a lower layer to an api code and a message. */
int api_err_from_errno(struct api_err *err, int rc, const char *what);

#endif
