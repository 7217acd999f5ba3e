#ifndef VPNSUP_BUILD_INFO_H
#define VPNSUP_BUILD_INFO_H

/// The release and the git commit vpnsup was built from (Package.swift defines them).
const char *vpnsup_build_version(void);
const char *vpnsup_build_commit(void);

#endif
