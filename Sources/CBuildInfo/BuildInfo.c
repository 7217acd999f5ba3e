#include "CBuildInfo.h"

// Package.swift passes both as C string literals; a C target is the one place SwiftPM lets a
// manifest hand a value (not only a flag) to the code.
#ifndef VPNSUP_VERSION
#define VPNSUP_VERSION "unknown"
#endif
#ifndef VPNSUP_COMMIT
#define VPNSUP_COMMIT "unknown"
#endif

const char *vpnsup_build_version(void) { return VPNSUP_VERSION; }
const char *vpnsup_build_commit(void) { return VPNSUP_COMMIT; }
