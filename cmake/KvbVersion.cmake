# Bake provenance into kvb/version.h at configure time (nvbench's NVBENCH_GIT_SHA1 pattern).
execute_process(COMMAND git rev-parse HEAD WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
                OUTPUT_VARIABLE KVB_GIT_SHA OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE _sha_rc)
if(NOT _sha_rc EQUAL 0 OR KVB_GIT_SHA STREQUAL "")
  set(KVB_GIT_SHA "unknown")
endif()
execute_process(COMMAND git status --porcelain --untracked-files=no WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
                OUTPUT_VARIABLE _dirty OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
if(_dirty STREQUAL "")
  set(KVB_GIT_DIRTY 0)
else()
  set(KVB_GIT_DIRTY 1)
endif()
if(KVB_CUDA_ENABLED)
  set(KVB_CUDA_BUILT 1)
else()
  set(KVB_CUDA_BUILT 0)
endif()
configure_file(${PROJECT_SOURCE_DIR}/cmake/version.h.in ${PROJECT_BINARY_DIR}/generated/kvb/version.h @ONLY)
