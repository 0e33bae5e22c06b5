/* task_int.h - private to tasks/: what registry.c needs from builtin.c.
 *
 * Nothing outside tasks/ includes this file; the public contract is task.h.
 */
#ifndef JOBD_TASK_INT_H
#define JOBD_TASK_INT_H

#include <stddef.h>

#include "task.h"

/* The built-in tasks, in the order task_registry_new() registers them (the
 * order GET /v1/tasks lists them). Returns a static table of *count entries;
 * the caller must not free it. */
const struct task_def *task_builtin_defs(size_t *count);

#endif
