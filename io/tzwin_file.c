/*
 * tzwin_file — reading a time zone's TZif file (common/tzwin.h:
 * tzwin_load); what it holds is read by common/tzwin.c.
 */
#include "tzwin.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TZWIN_DIR "/usr/share/zoneinfo"
#define TZWIN_FILE_MAX (1024 * 1024) /* bytes; a real zone is < 4 KiB */

/* strerror, thread-safe (the GNU strerror_r). */
static const char *
errstr(int err, char *buf, size_t n)
{
    return strerror_r(err, buf, n);
}

/* Reads the whole regular file at path (at most TZWIN_FILE_MAX bytes). */
static int
read_zone_file(const char *name, const char *path, unsigned char **out,
               size_t *len, struct herr *e)
{
    char eb[128];
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        int err = errno;
        if (err == ENOENT || err == ENOTDIR)
            return herr_set(e, HERR_NOTFOUND, "time_zone",
                            "no time zone named '%s' (no %s)", name, path);
        return herr_set(e, HERR_IO, "time_zone", "time zone '%s': %s: %s", name,
                        path, errstr(err, eb, sizeof eb));
    }
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) != 0)
        rc = herr_set(e, HERR_IO, "time_zone", "time zone '%s': %s: %s", name,
                      path, errstr(errno, eb, sizeof eb));
    else if (S_ISDIR(st.st_mode))
        rc =
            herr_set(e, HERR_NOTFOUND, "time_zone",
                     "no time zone named '%s' (%s is a directory)", name, path);
    else if (!S_ISREG(st.st_mode))
        rc = herr_set(e, HERR_INVALID, "time_zone",
                      "time zone '%s': %s is not a regular file", name, path);
    else if (st.st_size > TZWIN_FILE_MAX)
        rc = herr_set(e, HERR_INVALID, "time_zone",
                      "time zone '%s': %s is over %d bytes, not a zone file",
                      name, path, TZWIN_FILE_MAX);
    if (rc) {
        close(fd);
        return rc;
    }
    /* One byte more than the cap, to see a file that grew meanwhile. */
    unsigned char *buf = xmalloc(TZWIN_FILE_MAX + 1);
    size_t n = 0;
    while (n < TZWIN_FILE_MAX + 1) {
        ssize_t r = read(fd, buf + n, TZWIN_FILE_MAX + 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = herr_set(e, HERR_IO, "time_zone", "time zone '%s': %s: %s",
                          name, path, errstr(errno, eb, sizeof eb));
            break;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    if (rc == 0 && n > TZWIN_FILE_MAX)
        rc = herr_set(e, HERR_INVALID, "time_zone",
                      "time zone '%s': %s is over %d bytes, not a zone file",
                      name, path, TZWIN_FILE_MAX);
    if (rc) {
        free(buf);
        return rc;
    }
    *out = buf;
    *len = n;
    return 0;
}

int
tzwin_load(const char *dir, const char *name, struct tzwin **out,
           struct herr *e)
{
    *out = NULL;
    if (!tzwin_valid_name(name))
        return herr_set(e, HERR_INVALID, "time_zone",
                        "'%.80s' is not a time zone name (1-%d bytes of "
                        "[A-Za-z0-9_+-] parts separated by '/', e.g. "
                        "Europe/Paris)",
                        name ? name : "", TZWIN_NAME_MAX);
    if (strcmp(name, "UTC") == 0 || strcmp(name, "Etc/UTC") == 0) {
        *out = tzwin_utc(name);
        return 0;
    }
    char path[PATH_MAX];
    int n = snprintf(path, sizeof path, "%s/%s", dir ? dir : TZWIN_DIR, name);
    if (n < 0 || (size_t)n >= sizeof path)
        return herr_set(e, HERR_IO, "time_zone",
                        "time zone '%s': the path is too long", name);
    unsigned char *data = NULL;
    size_t len = 0;
    int rc = read_zone_file(name, path, &data, &len, e);
    if (rc)
        return rc;
    rc = tzwin_from_tzif(name, path, data, len, out, e);
    free(data);
    return rc;
}
