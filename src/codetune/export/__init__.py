"""`codetune export`: a fine-tuned model for the tools teams serve code completion with.

    gguf     one GGUF file (F16 / BF16 / Q8_0; K-quants through llama-quantize) with the
             tokenizer and the FIM token ids, read back and checked against the model
    ollama   the GGUF and a Modelfile whose template takes Ollama's `suffix`
    tabby    Tabby's model folder: tabby.json (the FIM prompt template) and ggml/
    vllm     the `vllm serve` command (the adapter with multi-LoRA, or the merged model) and a
             client that sends the FIM prompt pre-formatted

pipeline.py runs it (checks, merge, write, verify, swap into place); gguf.py and vocab.py write
the file; verify.py reads it back; llama_cpp.py runs llama.cpp's tools when installed;
ollama.py, tabby.py, vllm.py write each target's files; prompts.py spells the FIM prompt."""

from codetune.export.pipeline import TARGETS, export

__all__ = ["TARGETS", "export"]
