/* CHECK(cond) for the plain-C API tests: report the failed condition with
 * ext4dio_last_error() and count it in `failures` (defined by the test). */
#ifndef EXT4DIO_TEST_CAPI_CHECK_H_
#define EXT4DIO_TEST_CAPI_CHECK_H_

#include <stdio.h>

#include "ext4dio/ext4dio.h"

extern int failures;

#define CHECK(cond)                                                   \
  do {                                                                \
    if (!(cond)) {                                                    \
      fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n",   \
              __FILE__, __LINE__, #cond, ext4dio_last_error());       \
      failures++;                                                     \
    }                                                                 \
  } while (0)

#endif /* EXT4DIO_TEST_CAPI_CHECK_H_ */
