/* libvault: the demo's shared library. vault_record() has an off-by-one
 * bounds check: asking for record 3 reads the secret stored after the table. */
#include <stdio.h>

#define RECORDS 3
static const char *records[RECORDS + 1] = {
    "alice: 3 parcels", "bob: 1 parcel", "carol: 7 parcels",
    "SECRET api-key=hunter2", /* must never be served */
};
static int lookups;

const char *vault_record(int index)
{
    lookups++;
    if (index < 0 || index > RECORDS) /* bug: must be >= RECORDS */
        return "error: no such record";
    return records[index];
}

int vault_lookups(void) { return lookups; }
