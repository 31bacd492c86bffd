# ctest "install_consumer" (cmake -P): prove that an installed pgkernels is
# usable by a project that knows nothing but find_package(pgkernels REQUIRED).
#
#   1. cmake --install PGK_BUILD_DIR into PGK_WORK_DIR/prefix;
#   2. check the layout: <prefix>/include/pgkernels/*.h and the package files;
#   3. configure, build and run PGK_EXAMPLE_DIR (examples/cpp) against that
#      prefix alone (package registries off, so nothing else can be found);
#   4. check that find_package took the package from the prefix, that the
#      example passed, and that it reports the project's version.
foreach(_var PGK_BUILD_DIR PGK_EXAMPLE_DIR PGK_WORK_DIR PGK_INSTALL_CMAKEDIR PGK_GENERATOR PGK_CXX_COMPILER
             PGK_VERSION)
  if(NOT DEFINED ${_var} OR "${${_var}}" STREQUAL "")
    message(FATAL_ERROR "InstallConsumerTest.cmake: -D${_var}=... is required")
  endif()
endforeach()
if(NOT PGK_CONFIG)
  set(PGK_CONFIG Release)
endif()

set(_prefix "${PGK_WORK_DIR}/prefix")
set(_build "${PGK_WORK_DIR}/build")
file(REMOVE_RECURSE "${PGK_WORK_DIR}")

function(_pgk_run what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _err)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (${_rc}):\n${_out}\n${_err}")
  endif()
  set(_pgk_last_output "${_out}" PARENT_SCOPE)
endfunction()

_pgk_run("cmake --install"
  "${CMAKE_COMMAND}" --install "${PGK_BUILD_DIR}" --prefix "${_prefix}" --config "${PGK_CONFIG}")

foreach(_h compare.h prg.h bits.h network.h ring.h version.h)
  if(NOT EXISTS "${_prefix}/include/pgkernels/${_h}")
    message(FATAL_ERROR "not installed: ${_prefix}/include/pgkernels/${_h}")
  endif()
endforeach()
if(EXISTS "${_prefix}/include/core")
  message(FATAL_ERROR "headers must install under include/pgkernels/, found ${_prefix}/include/core")
endif()
set(_cmakedir "${_prefix}/${PGK_INSTALL_CMAKEDIR}")
foreach(_f pgkernelsConfig.cmake pgkernelsConfigVersion.cmake pgkernelsTargets.cmake)
  if(NOT EXISTS "${_cmakedir}/${_f}")
    message(FATAL_ERROR "not installed: ${_cmakedir}/${_f}")
  endif()
endforeach()

_pgk_run("configuring examples/cpp against the installed package"
  "${CMAKE_COMMAND}" -S "${PGK_EXAMPLE_DIR}" -B "${_build}" -G "${PGK_GENERATOR}"
  "-DCMAKE_CXX_COMPILER=${PGK_CXX_COMPILER}"
  "-DCMAKE_BUILD_TYPE=${PGK_CONFIG}"
  "-DCMAKE_PREFIX_PATH=${_prefix}"
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
  -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF)

# find_package must have found the package in the fresh prefix.
file(STRINGS "${_build}/CMakeCache.txt" _dir_line REGEX "^pgkernels_DIR:")
string(REGEX REPLACE "^pgkernels_DIR:[A-Z]+=" "" _found_dir "${_dir_line}")
file(REAL_PATH "${_found_dir}" _found_dir)
file(REAL_PATH "${_cmakedir}" _want_dir)
if(NOT _found_dir STREQUAL _want_dir)
  message(FATAL_ERROR "find_package(pgkernels) found '${_found_dir}', not the package in ${_want_dir}")
endif()

_pgk_run("building examples/cpp" "${CMAKE_COMMAND}" --build "${_build}" --config "${PGK_CONFIG}")

find_program(_exe compare_example PATHS "${_build}" "${_build}/${PGK_CONFIG}" NO_DEFAULT_PATH)
if(NOT _exe)
  message(FATAL_ERROR "compare_example was not built in ${_build}")
endif()
_pgk_run("running compare_example" "${_exe}")
if(NOT _pgk_last_output MATCHES "pgkernels ${PGK_VERSION}\n")
  message(FATAL_ERROR "compare_example does not report pgkernels ${PGK_VERSION}:\n${_pgk_last_output}")
endif()
if(NOT _pgk_last_output MATCHES "\nOK: ")
  message(FATAL_ERROR "compare_example did not pass:\n${_pgk_last_output}")
endif()
message(STATUS "installed pgkernels ${PGK_VERSION} into ${_prefix}; examples/cpp built against it and passed")
