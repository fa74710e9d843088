# Version from `git describe`, written into a generated source at configure time.
find_package(Git QUIET)
set(CTOK_VERSION "0.1.0-unknown")
if(GIT_FOUND AND EXISTS ${CMAKE_SOURCE_DIR}/.git)
  execute_process(COMMAND ${GIT_EXECUTABLE} describe --always --dirty --tags
    WORKING_DIRECTORY ${CMAKE_SOURCE_DIR} OUTPUT_VARIABLE _desc
    OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE _rc)
  if(_rc EQUAL 0 AND _desc)
    set(CTOK_VERSION "0.1.0+g${_desc}")
  endif()
endif()
file(MAKE_DIRECTORY ${CMAKE_BINARY_DIR}/generated)
file(CONFIGURE OUTPUT ${CMAKE_BINARY_DIR}/generated/version.cpp CONTENT
"namespace ctok { const char* version_string() { return \"@CTOK_VERSION@\"; } }\n" @ONLY)
