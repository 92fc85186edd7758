/* The live patch for libvault (compile with -DLEVEL=1 or 2). Level 1 fixes
 * the bounds check; level 2 also counts what it rejected (new state of its own). */
#ifndef LEVEL
#define LEVEL 1
#endif
#include <stdio.h>

extern const char *records[];   /* static in libvault.c: linked through the symbol map */
extern int lookups;             /* static in libvault.c */
static int rejected;            /* new variable: lives in the patch */
static char message[64];

const char *vault_record_fixed(int index)
{
    lookups++;
    if (index < 0 || index >= 3) {
        rejected++;
        if (LEVEL == 1)
            return "error: no such record";
        snprintf(message, sizeof message, "error: no such record (%d rejected)", rejected);
        return message;
    }
    return records[index];
}
