/* libgreet: the worked example of docs/recipes.md. Two planted bugs, two fixes. */
#include <string.h>

/* Copies "hello, NAME" into OUT, which holds SIZE bytes. Bug: SIZE is ignored. */
int greet(char *out, unsigned long size, const char *name)
{
    (void)size;
    strcpy(out, "hello, ");
    strcat(out, name);
    return (int)strlen(out);
}

/* The greeting's language for a locale code. Bug: code 3 reads past the table. */
static const char *const languages[] = {"en", "fr", "de"};

const char *greet_language(int code)
{
    return code < 0 ? "en" : languages[code];
}
