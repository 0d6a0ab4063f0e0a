/*
 * sqlite_walbuf — see sqlite_walbuf.h.
 */
#include "sqlite_walbuf.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define WALBUF_CAP (1u << 20) /* flushed at this size as well */

struct wfile {
    sqlite3_file base;
    sqlite3_file *real; /* the default VFS's file, right after this struct */
    int is_wal;
    struct wfile *main; /* a log: its database file's */
    struct wfile *wal;  /* a database file: its open log, if any */
    /* a log's writes not yet passed on: len bytes at off */
    unsigned char *buf;
    size_t len;
    sqlite3_int64 off;
    int commit_next; /* the next write is a commit frame's page */
};

static sqlite3_vfs *base_vfs;
static sqlite3_vfs walbuf_vfs;

/* The unix VFS writes at most 128 KiB - 1 a call (its seekAndWrite
 * masks the length with 0x1ffff): the buffer goes in pieces under that. */
#define WRITE_MAX (124u << 10)

static int
flush(struct wfile *w)
{
    int rc = SQLITE_OK;
    for (size_t o = 0; rc == SQLITE_OK && o < w->len; o += WRITE_MAX) {
        size_t n = w->len - o < WRITE_MAX ? w->len - o : WRITE_MAX;
        rc = w->real->pMethods->xWrite(w->real, w->buf + o, (int)n,
                                       w->off + (sqlite3_int64)o);
    }
    w->len = 0;
    return rc;
}

static int
x_close(sqlite3_file *f)
{
    struct wfile *w = (struct wfile *)f;
    int rc = flush(w);
    if (w->is_wal && w->main)
        w->main->wal = NULL;
    if (w->wal)
        w->wal->main = NULL;
    free(w->buf);
    int rc2 = w->real->pMethods->xClose(w->real);
    return rc != SQLITE_OK ? rc : rc2;
}

static int
x_read(sqlite3_file *f, void *p, int n, sqlite3_int64 off)
{
    struct wfile *w = (struct wfile *)f;
    int rc = flush(w);
    if (rc != SQLITE_OK)
        return rc;
    return w->real->pMethods->xRead(w->real, p, n, off);
}

static int
x_write(sqlite3_file *f, const void *p, int n, sqlite3_int64 off)
{
    struct wfile *w = (struct wfile *)f;
    if (!w->is_wal)
        return w->real->pMethods->xWrite(w->real, p, n, off);
    int rc;
    if (w->len && (off != w->off + (sqlite3_int64)w->len ||
                   w->len + (size_t)n > WALBUF_CAP)) {
        if ((rc = flush(w)) != SQLITE_OK)
            return rc;
    }
    if ((size_t)n > WALBUF_CAP)
        return w->real->pMethods->xWrite(w->real, p, n, off);
    if (w->buf == NULL && (w->buf = malloc(WALBUF_CAP)) == NULL)
        return w->real->pMethods->xWrite(w->real, p, n, off);
    if (w->len == 0)
        w->off = off;
    memcpy(w->buf + w->len, p, (size_t)n);
    w->len += (size_t)n;
    /* A frame's 24-byte header, whose bytes 4..7 (the database size
     * after a commit) are not zero, is a commit frame's: its page is the
     * commit's last write, and the commit goes out with it, where a
     * failure still fails the commit. */
    int commit = w->commit_next;
    w->commit_next =
        n == 24 && memcmp((const unsigned char *)p + 4, "\0\0\0\0", 4) != 0;
    if (commit)
        return flush(w);
    return SQLITE_OK;
}

static int
x_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    struct wfile *w = (struct wfile *)f;
    int rc = flush(w);
    return rc != SQLITE_OK ? rc : w->real->pMethods->xTruncate(w->real, size);
}

static int
x_sync(sqlite3_file *f, int flags)
{
    struct wfile *w = (struct wfile *)f;
    int rc = flush(w);
    return rc != SQLITE_OK ? rc : w->real->pMethods->xSync(w->real, flags);
}

static int
x_filesize(sqlite3_file *f, sqlite3_int64 *size)
{
    struct wfile *w = (struct wfile *)f;
    int rc = flush(w);
    return rc != SQLITE_OK ? rc : w->real->pMethods->xFileSize(w->real, size);
}

static int
x_lock(sqlite3_file *f, int l)
{
    struct wfile *w = (struct wfile *)f;
    return w->real->pMethods->xLock(w->real, l);
}

static int
x_unlock(sqlite3_file *f, int l)
{
    struct wfile *w = (struct wfile *)f;
    return w->real->pMethods->xUnlock(w->real, l);
}

static int
x_check_reserved(sqlite3_file *f, int *out)
{
    struct wfile *w = (struct wfile *)f;
    return w->real->pMethods->xCheckReservedLock(w->real, out);
}

static int
x_file_control(sqlite3_file *f, int op, void *arg)
{
    struct wfile *w = (struct wfile *)f;
    int rc = flush(w);
    if (rc != SQLITE_OK)
        return rc;
    return w->real->pMethods->xFileControl(w->real, op, arg);
}

static int
x_sector_size(sqlite3_file *f)
{
    struct wfile *w = (struct wfile *)f;
    return w->real->pMethods->xSectorSize(w->real);
}

static int
x_device_chars(sqlite3_file *f)
{
    struct wfile *w = (struct wfile *)f;
    return w->real->pMethods->xDeviceCharacteristics(w->real);
}

static int
x_shm_map(sqlite3_file *f, int pg, int pgsz, int extend, void volatile **pp)
{
    struct wfile *w = (struct wfile *)f;
    return w->real->pMethods->xShmMap(w->real, pg, pgsz, extend, pp);
}

/* Before the log's frames are published (the wal-index header) or a lock
 * moves, every buffered write of this database's log is in the file. */
static int
x_shm_lock(sqlite3_file *f, int offset, int n, int flags)
{
    struct wfile *w = (struct wfile *)f;
    if (w->wal) {
        int rc = flush(w->wal);
        if (rc != SQLITE_OK)
            return rc;
    }
    return w->real->pMethods->xShmLock(w->real, offset, n, flags);
}

static void
x_shm_barrier(sqlite3_file *f)
{
    struct wfile *w = (struct wfile *)f;
    if (w->wal && flush(w->wal) != SQLITE_OK)
        abort(); /* see sqlite_walbuf.h: never publish frames not written */
    w->real->pMethods->xShmBarrier(w->real);
}

static int
x_shm_unmap(sqlite3_file *f, int del)
{
    struct wfile *w = (struct wfile *)f;
    return w->real->pMethods->xShmUnmap(w->real, del);
}

static int
x_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **pp)
{
    struct wfile *w = (struct wfile *)f;
    int rc = flush(w);
    return rc != SQLITE_OK ? rc
                           : w->real->pMethods->xFetch(w->real, off, n, pp);
}

static int
x_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
    struct wfile *w = (struct wfile *)f;
    return w->real->pMethods->xUnfetch(w->real, off, p);
}

static const sqlite3_io_methods walbuf_methods = {
    3,
    x_close,
    x_read,
    x_write,
    x_truncate,
    x_sync,
    x_filesize,
    x_lock,
    x_unlock,
    x_check_reserved,
    x_file_control,
    x_sector_size,
    x_device_chars,
    x_shm_map,
    x_shm_lock,
    x_shm_barrier,
    x_shm_unmap,
    x_fetch,
    x_unfetch,
};

static int
x_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *f, int flags,
       int *out)
{
    (void)vfs;
    struct wfile *w = (struct wfile *)f;
    memset(w, 0, sizeof *w);
    w->real = (sqlite3_file *)(w + 1);
    int rc = base_vfs->xOpen(base_vfs, name, w->real, flags, out);
    if (w->real->pMethods == NULL)
        return rc; /* nothing to close: base.pMethods stays NULL */
    w->base.pMethods = &walbuf_methods;
    if (rc == SQLITE_OK && (flags & SQLITE_OPEN_WAL) && name) {
        w->is_wal = 1;
        w->main = (struct wfile *)sqlite3_database_file_object(name);
        if (w->main)
            w->main->wal = w;
    }
    return rc;
}

static pthread_once_t once = PTHREAD_ONCE_INIT;

static void
walbuf_init(void)
{
    base_vfs = sqlite3_vfs_find(NULL);
    if (base_vfs == NULL || base_vfs->iVersion < 3)
        return;
    walbuf_vfs = *base_vfs;
    walbuf_vfs.zName = SQLITE_WALBUF_VFS;
    walbuf_vfs.szOsFile = (int)sizeof(struct wfile) + base_vfs->szOsFile;
    walbuf_vfs.pNext = NULL;
    walbuf_vfs.xOpen = x_open;
    if (sqlite3_vfs_register(&walbuf_vfs, 0) != SQLITE_OK)
        base_vfs = NULL;
}

const char *
sqlite_walbuf_vfs(void)
{
    pthread_once(&once, walbuf_init);
    return base_vfs ? SQLITE_WALBUF_VFS : NULL;
}
