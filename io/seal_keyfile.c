/*
 * seal_keyfile — reading the key file (common/seal.h: seal_key_load);
 * what it holds is read by common/seal.c (seal_key_parse).
 */
#include "seal.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int
seal_key_load(const char *path, struct seal_key **out, struct herr *e)
{
    *out = NULL;
    if (path == NULL || path[0] == '\0')
        return herr_set(e, HERR_INVALID, NULL, "no key file given");
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        int err = errno;
        return herr_set(e, HERR_IO, NULL, "cannot open key file %s: %s", path,
                        strerror(err));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int err = errno;
        close(fd);
        return herr_set(e, HERR_IO, NULL, "cannot stat key file %s: %s", path,
                        strerror(err));
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return herr_set(e, HERR_INVALID, NULL,
                        "key file %s is a directory; expected a file of 32 "
                        "raw bytes or 64 hex characters",
                        path);
    }
    /* Refused before a byte of it is read: any user of the host could
     * have read the key. A group-readable file (a secret mounted for a
     * service group) is accepted, with a warning. */
    if (st.st_mode & S_IROTH) {
        close(fd);
        return herr_set(e, HERR_INVALID, NULL,
                        "key file %s is readable by other users (mode %04o): "
                        "chmod 600 it",
                        path, (unsigned)(st.st_mode & 07777));
    }
    unsigned warnings = 0;
    if (st.st_mode & S_IRGRP)
        warnings |= SEAL_WARN_MODE;

    /* One byte over the cap tells "too long" from "exactly the cap". */
    unsigned char b[SEAL_KEYFILE_MAX + 1];
    size_t n = 0;
    while (n < sizeof b) {
        ssize_t r = read(fd, b + n, sizeof b - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int err = errno;
            close(fd);
            OPENSSL_cleanse(b, sizeof b);
            return herr_set(e, HERR_IO, NULL, "cannot read key file %s: %s",
                            path, strerror(err));
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    if (n > SEAL_KEYFILE_MAX) {
        OPENSSL_cleanse(b, sizeof b);
        return herr_set(e, HERR_INVALID, NULL,
                        "key file %s is over %d bytes; expected 32 raw bytes "
                        "or 64 hex characters",
                        path, SEAL_KEYFILE_MAX);
    }
    int rc = seal_key_parse(path, b, n, warnings, out, e);
    OPENSSL_cleanse(b, sizeof b);
    return rc;
}
