#include "apierr.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

int api_err_set(struct api_err *err, enum api_code code, const char *field, const char *fmt, ...)
{
    err->code = code;
    snprintf(err->field, sizeof err->field, "%s", field ? field : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return -1;
}

const char *api_code_name(enum api_code code)
{
    switch (code) {
    case API_OK: return "ok";
    case API_BAD_JSON: return "bad_json";
    case API_INVALID_ARGUMENT: return "invalid_argument";
    case API_UNAUTHORIZED: return "unauthorized";
    case API_NOT_FOUND: return "not_found";
    case API_METHOD_NOT_ALLOWED: return "method_not_allowed";
    case API_CONFLICT: return "conflict";
    case API_PAYLOAD_TOO_LARGE: return "payload_too_large";
    case API_UNSUPPORTED_MEDIA_TYPE: return "unsupported_media_type";
    case API_QUEUE_FULL: return "queue_full";
    case API_INTERNAL: return "internal";
    case API_UNAVAILABLE: return "unavailable";
    }
    return "internal";
}

int api_err_from_errno(struct api_err *err, int rc, const char *what)
{
    switch (rc) {
    case -ENOENT: return api_err_set(err, API_NOT_FOUND, NULL, "%s was not found.", what);
    case -EEXIST:
    case -EALREADY: return api_err_set(err, API_CONFLICT, NULL, "%s is in a state that does not allow this.", what);
    case -EAGAIN: return api_err_set(err, API_QUEUE_FULL, NULL, "The queue is full; retry later.");
    case -ENOSPC:
        return api_err_set(err, API_UNAVAILABLE, NULL,
                           "The database is out of space; nothing was stored. Free disk space and retry.");
    case -ESHUTDOWN:
        return api_err_set(err, API_UNAVAILABLE, NULL, "The server is shutting down; retry on another instance.");
    case -EBUSY:
    case -EIO:
        return api_err_set(err, API_UNAVAILABLE, NULL, "The database is unavailable (%s); nothing was stored. Retry.",
                           strerror(-rc));
    case -ENOMEM: return api_err_set(err, API_INTERNAL, NULL, "The server ran out of memory.");
    default: return api_err_set(err, API_INTERNAL, NULL, "Internal error: %s.", strerror(-rc));
    }
}
