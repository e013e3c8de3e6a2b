"""Run llama.cpp's own converter on the random-weight checkpoint (a subprocess of bench.peer_bench).

    python -m bench.peer_convert LLAMA_CPP_DIR -- CONVERTER_ARGS...

The converter names a BPE pre-tokenizer by hashing how the tokenizer splits a test string, and knows only the
hashes of published tokenizers. The checkpoint's tokenizer is trained offline (no hub), with Qwen2's exact split
pattern (workers/modelstore/tiny.py), so its hash is new while its pre-tokenizer is `qwen2`: that one answer is
given here; everything else (tensors, the mmproj, GGUF metadata) is the converter's own code, unchanged.
"""
from __future__ import annotations

import sys
from pathlib import Path


def main() -> None:
    llama_cpp = Path(sys.argv[1])
    args = sys.argv[sys.argv.index("--") + 1:]
    sys.path[:0] = [str(llama_cpp), str(llama_cpp / "gguf-py")]
    from conversion.base import TextModel

    TextModel.get_vocab_base_pre = lambda self, tokenizer: "qwen2"
    import convert_hf_to_gguf

    sys.argv = ["convert_hf_to_gguf.py", *args]
    convert_hf_to_gguf.main()


if __name__ == "__main__":
    main()
