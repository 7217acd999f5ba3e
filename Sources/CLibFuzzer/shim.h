#pragma once
#include <stddef.h>
#include <stdint.h>

// libFuzzer's entry for programs that keep their own main (compiler-rt's FuzzerInterface.h).
// No library is linked here: -sanitize=fuzzer brings libFuzzer in, and only the fuzz targets,
// built with that flag (fuzz/run.sh), import this module.
int LLVMFuzzerRunDriver(int *argc, char ***argv,
                        int (*UserCb)(const uint8_t *Data, size_t Size));
