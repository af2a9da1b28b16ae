"""Where a model comes from (`source`: Hub id, folder, .gguf) and how it is loaded (`load`:
quantization, dtype, attention kernel, the one `load_tokenizer`)."""
