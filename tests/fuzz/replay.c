/*
 * replay.c - the main of every replay_<name> program: runs each file of the
 * corpus directories it is given through one fuzz target's
 * LLVMFuzzerTestOneInput (tests/fuzz/fuzz_<name>.c, linked beside it), so the
 * seed corpus and every committed crash reproducer are checked by the normal
 * (gcc) test suite, without libFuzzer. A target that finds a broken invariant
 * aborts, which fails the test. Usage: replay_<name> <corpus dir>...
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;

    if (f == NULL) {
        perror(path);
        return -1;
    }
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 4096;
            uint8_t *n = realloc(buf, cap);
            if (n == NULL) {
                free(buf);
                fclose(f);
                return -1;
            }
            buf = n;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        if (got == 0)
            break;
        len += got;
    }
    fclose(f);
    LLVMFuzzerTestOneInput(buf, len);
    free(buf);
    return 0;
}

int main(int argc, char **argv)
{
    int files = 0, bad = 0;

    for (int i = 1; i < argc; i++) {
        DIR *d = opendir(argv[i]);
        struct dirent *e;
        if (d == NULL) {
            perror(argv[i]);
            return 1;
        }
        while ((e = readdir(d)) != NULL) {
            char path[4096];
            if (e->d_name[0] == '.')
                continue;
            snprintf(path, sizeof path, "%s/%s", argv[i], e->d_name);
            if (replay_file(path) < 0)
                bad++;
            files++;
        }
        closedir(d);
    }
    printf("%s: %d inputs replayed, %d unreadable\n", argv[0], files, bad);
    return files > 0 && bad == 0 ? 0 : 1;
}
