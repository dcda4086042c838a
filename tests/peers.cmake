# Peer checks: qshard's exports loaded by the real loaders (GPTQModel,
# transformers + optimum, llama.cpp via llama-cpp-python) from the side venv
# that scripts/install_peers.sh makes (QS_PEERS_VENV, default .peers/venv).
# Label `peers`: not part of scripts/test.sh (which runs ctest -LE peers; the
# stack is several GB); each test skips with the reason when its stage of the
# venv is missing. Run them with: ctest -L peers (30 to 140 s on 2 cores, with GPTQModel's import most of it).
set(QS_PEERS_VENV "$ENV{QS_PEERS_VENV}" CACHE PATH "the peers venv (empty: <source>/.peers/venv)")

foreach(peer gptq llama_cpp)
  qs_add_py_test(peer_${peer} tests/peers/test_peer_${peer}.py LABELS peers TIMEOUT 900)
  set_property(TEST peer_${peer} APPEND PROPERTY ENVIRONMENT
    "QS_PEERS_VENV=${QS_PEERS_VENV}" "QS_GGUF_TOOL=$<TARGET_FILE:gguf_tool>")
endforeach()
