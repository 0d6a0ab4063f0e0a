/*
 * sqlite_walbuf — a SQLite VFS that writes a commit's log frames in one
 * write instead of two per page.
 *
 * SQLite writes each frame of its write-ahead log with two pwrite calls
 * (the 24-byte frame header, then the page), neither aligned to the OS's
 * pages: a Message Center batch of ~200 pages made ~400 system calls
 * touching ~400 page-cache pages, a quarter of the writing thread's time
 * in make bench. This VFS wraps the default one and, for a log file only,
 * gathers consecutive writes in a buffer of its handle and passes them on
 * as one write:
 *
 * - with the commit frame's page (a frame header whose "database size"
 *   field is not zero marks the commit frame): the commit's last write,
 *   so a failure to write fails the commit, as without the buffer;
 * - before anything else touches the log through this handle (read,
 *   size, truncate, sync, file control, close), and before the database
 *   file's wal-index is locked or published (xShmLock, xShmBarrier):
 *   no reader, in this process or another, is ever told of a frame that
 *   is not in the file. A write that fails at the barrier (which cannot
 *   report one; it only happens when the commit frame did not end the
 *   buffer, which SQLite's NORMAL and OFF synchronous modes never do)
 *   aborts the process before the frames are published: the log's
 *   checksums then make recovery ignore them, as after a crash.
 *
 * Durability is unchanged: every byte reaches the OS within the same
 * commit call, before it returns. Other files (the database, the
 * wal-index) pass straight through. The buffer is 1 MiB per open log,
 * allocated on its first write.
 */
#ifndef HERALD_SQLITE_WALBUF_H
#define HERALD_SQLITE_WALBUF_H

#include <sqlite3.h>

#define SQLITE_WALBUF_VFS "herald-walbuf"

/* The VFS's name for sqlite3_open_v2, registered on first use (not as
 * the default), or NULL when the default VFS cannot be wrapped (then the
 * default is used). Thread-safe. */
const char *sqlite_walbuf_vfs(void);

#endif
