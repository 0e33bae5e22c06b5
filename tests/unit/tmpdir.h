/* tmpdir.h - a directory of its own for each test that needs files (a real
 * store's database, its WAL): made under /tmp, removed with all it holds.
 *
 * A test includes this once, after harness.h. Everything is static inline so
 * that a test needs only what it calls.
 */
#ifndef JOBD_TMPDIR_H
#define JOBD_TMPDIR_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

struct tmp {
    char dir[64]; /* /tmp/jobd-test-<name>-XXXXXX */
    char db[128]; /* <dir>/jobd.db, for store_open(); not created here */
};

/* Makes a new directory /tmp/jobd-test-<name>-XXXXXX (the name says which
 * test left it behind, should one be). Aborts when it cannot. */
static inline void tmp_make(struct tmp *t, const char *name)
{
    snprintf(t->dir, sizeof t->dir, "/tmp/jobd-test-%s-XXXXXX", name);
    if (!mkdtemp(t->dir)) {
        perror("mkdtemp");
        abort();
    }
    snprintf(t->db, sizeof t->db, "%s/jobd.db", t->dir);
}

static inline int tmp_rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Removes t->dir and everything under it (files first, links not followed). */
static inline void tmp_remove(const struct tmp *t)
{
    if (nftw(t->dir, tmp_rm_one, 16, FTW_DEPTH | FTW_PHYS) != 0) perror("nftw");
}

#endif
