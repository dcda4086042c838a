# Warning flags for every qshard target; -Werror when QS_WERROR is ON (CI).
function(qs_target_warnings tgt)
  target_compile_options(${tgt} PRIVATE
    $<$<COMPILE_LANGUAGE:C>:-Wall -Wextra -Wshadow -Wno-unused-parameter -Wstrict-prototypes>)
  if(QS_WERROR)
    target_compile_options(${tgt} PRIVATE $<$<COMPILE_LANGUAGE:C>:-Werror>)
  endif()
endfunction()

# Sanitizers and libFuzzer instrument the C code (nvcc does not take these flags).
if(QS_SANITIZE)
  add_compile_options($<$<COMPILE_LANGUAGE:C>:-fsanitize=address,undefined> $<$<COMPILE_LANGUAGE:C>:-fno-omit-frame-pointer>
    $<$<COMPILE_LANGUAGE:C>:-fno-sanitize-recover=undefined>)
  add_link_options(-fsanitize=address,undefined)
endif()

# libFuzzer build (clang): every object is instrumented; targets in tests/fuzz/.
if(QS_FUZZ)
  # -fno-sanitize-recover: undefined behaviour aborts, so libFuzzer reports it
  # as a crash and keeps the input (recovering, it only printed a line)
  add_compile_options($<$<COMPILE_LANGUAGE:C>:-fsanitize=fuzzer-no-link,address,undefined>
    $<$<COMPILE_LANGUAGE:C>:-fno-omit-frame-pointer> $<$<COMPILE_LANGUAGE:C>:-fno-sanitize-recover=undefined>)
  add_link_options(-fsanitize=address,undefined)
endif()
