# LOADSTAR_SANITIZE=address -> ASan + UBSan; =thread -> TSan. Applied to every target.
if(LOADSTAR_SANITIZE STREQUAL "address")
  add_compile_options($<$<COMPILE_LANGUAGE:CXX>:-fsanitize=address,undefined>
                      $<$<COMPILE_LANGUAGE:CXX>:-fno-omit-frame-pointer>
                      $<$<COMPILE_LANGUAGE:CXX>:-fno-sanitize-recover=undefined>)
  add_link_options(-fsanitize=address,undefined)
elseif(LOADSTAR_SANITIZE STREQUAL "thread")
  add_compile_options($<$<COMPILE_LANGUAGE:CXX>:-fsanitize=thread>
                      $<$<COMPILE_LANGUAGE:CXX>:-fno-omit-frame-pointer>)
  add_link_options(-fsanitize=thread)
elseif(NOT LOADSTAR_SANITIZE STREQUAL "")
  message(FATAL_ERROR "LOADSTAR_SANITIZE must be '', address or thread")
endif()
