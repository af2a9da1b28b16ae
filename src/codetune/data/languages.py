"""Which files are code, and in which language.

A file's language comes from its exact name (`Makefile`, `Dockerfile`) or its extension,
through the tables below, extended by the user's `prepare.languages`. Known non-code formats
(images, archives, weights, ...) are dropped as `non_code`; any other unknown extension as
`unknown_language`. Keeping an explicit table (rather than sniffing content) makes the result
predictable and easy to extend.
"""

from __future__ import annotations

import os

# Extension (lower case, with the dot) -> language.
EXTENSIONS: dict[str, str] = {
    ".py": "Python", ".pyi": "Python", ".pyx": "Cython", ".pxd": "Cython",
    ".ipynb": "Python",  # code cells; the kernel's language replaces it when known
    ".js": "JavaScript", ".mjs": "JavaScript", ".cjs": "JavaScript", ".jsx": "JavaScript",
    ".ts": "TypeScript", ".tsx": "TypeScript", ".mts": "TypeScript", ".cts": "TypeScript",
    ".vue": "Vue", ".svelte": "Svelte",
    ".java": "Java", ".kt": "Kotlin", ".kts": "Kotlin", ".scala": "Scala", ".sc": "Scala",
    ".groovy": "Groovy", ".gradle": "Groovy", ".clj": "Clojure", ".cljs": "Clojure",
    ".c": "C", ".h": "C", ".cc": "C++", ".cpp": "C++", ".cxx": "C++", ".hpp": "C++",
    ".hh": "C++", ".hxx": "C++", ".ipp": "C++", ".inl": "C++", ".cu": "CUDA", ".cuh": "CUDA",
    ".m": "Objective-C", ".mm": "Objective-C++", ".swift": "Swift",
    ".cs": "C#", ".fs": "F#", ".fsx": "F#", ".vb": "Visual Basic",
    ".go": "Go", ".rs": "Rust", ".zig": "Zig", ".nim": "Nim", ".d": "D", ".v": "Verilog",
    ".sv": "SystemVerilog", ".vhd": "VHDL", ".vhdl": "VHDL",
    ".rb": "Ruby", ".rake": "Ruby", ".gemspec": "Ruby", ".php": "PHP", ".pl": "Perl",
    ".pm": "Perl", ".lua": "Lua", ".r": "R", ".jl": "Julia", ".dart": "Dart",
    ".ex": "Elixir", ".exs": "Elixir", ".erl": "Erlang", ".hrl": "Erlang",
    ".hs": "Haskell", ".ml": "OCaml", ".mli": "OCaml", ".elm": "Elm", ".lisp": "Lisp",
    ".el": "Emacs Lisp", ".scm": "Scheme", ".rkt": "Racket", ".f90": "Fortran", ".f": "Fortran",
    ".pas": "Pascal", ".asm": "Assembly", ".s": "Assembly", ".sol": "Solidity", ".mojo": "Mojo",
    ".sh": "Shell", ".bash": "Shell", ".zsh": "Shell", ".fish": "Shell", ".ps1": "PowerShell",
    ".bat": "Batchfile", ".cmd": "Batchfile", ".awk": "Awk",
    ".sql": "SQL", ".graphql": "GraphQL", ".gql": "GraphQL", ".proto": "Protocol Buffer",
    ".thrift": "Thrift", ".tf": "HCL", ".hcl": "HCL", ".nix": "Nix", ".cmake": "CMake",
    ".mk": "Makefile", ".bzl": "Starlark", ".star": "Starlark",
    ".html": "HTML", ".htm": "HTML", ".css": "CSS", ".scss": "SCSS", ".sass": "Sass",
    ".less": "Less", ".jinja": "Jinja", ".j2": "Jinja",
    ".md": "Markdown", ".mdx": "MDX", ".rst": "reStructuredText", ".tex": "TeX",
    ".json": "JSON", ".jsonc": "JSON", ".yaml": "YAML", ".yml": "YAML", ".toml": "TOML",
    ".xml": "XML", ".ini": "INI", ".cfg": "INI", ".csv": "CSV", ".tsv": "CSV",
}

# Exact file names -> language (checked before the extension).
FILENAMES: dict[str, str] = {
    "Makefile": "Makefile", "GNUmakefile": "Makefile", "makefile": "Makefile",
    "Dockerfile": "Dockerfile", "Containerfile": "Dockerfile", "CMakeLists.txt": "CMake",
    "Jenkinsfile": "Groovy", "Rakefile": "Ruby", "Gemfile": "Ruby", "Vagrantfile": "Ruby",
    "BUILD": "Starlark", "BUILD.bazel": "Starlark", "WORKSPACE": "Starlark",
    "Justfile": "Just", "justfile": "Just", ".bashrc": "Shell", ".zshrc": "Shell",
}

# Formats that are data rather than code: kept only within `data_file_{min,max}_bytes`.
DATA_LANGUAGES = frozenset({"JSON", "YAML", "XML", "CSV"})

# Extensions that are never code. Dropped as `non_code` with the category as detail.
NON_CODE: dict[str, str] = {}
for _cat, _exts in {
    "image": ".png .jpg .jpeg .gif .bmp .ico .icns .tif .tiff .webp .svg .psd .heic .avif .eps",
    "audio": ".mp3 .wav .flac .ogg .m4a .aac .wma .aiff .opus .mid .midi",
    "video": ".mp4 .avi .mov .mkv .webm .wmv .flv .m4v .mpg .mpeg",
    "archive": ".zip .tar .gz .tgz .bz2 .xz .zst .7z .rar .jar .war .whl .egg .deb .rpm .dmg "
               ".iso .apk .nupkg",
    "document": ".pdf .doc .docx .xls .xlsx .ppt .pptx .odt .ods .odp .rtf .key .pages .numbers",
    "model_weights": ".bin .pt .pth .ckpt .safetensors .onnx .h5 .hdf5 .pb .tflite .gguf .ggml "
                     ".npy .npz .pkl .pickle .joblib .parquet .arrow .feather .msgpack",
    "font": ".ttf .otf .woff .woff2 .eot .fon",
    "compiled": ".so .dll .dylib .exe .o .a .lib .obj .class .pyc .pyo .pyd .wasm .beam",
    "database": ".db .sqlite .sqlite3 .mdb",
}.items():
    for _ext in _exts.split():
        NON_CODE[_ext] = _cat


class LanguageTable:
    """Maps a path to a language, with user extensions layered over the defaults."""

    def __init__(self, extra: dict[str, str] | None = None):
        self.extensions = dict(EXTENSIONS)
        self.filenames = dict(FILENAMES)
        for key, lang in (extra or {}).items():
            if key.startswith("."):
                self.extensions[key.lower()] = lang
            else:
                self.filenames[key] = lang

    def classify(self, path: str) -> tuple[str | None, str | None, str]:
        """(language, None, "") for code, or (None, reason, detail): reason `non_code` with the
        category as detail, or `unknown_language` with the extension."""
        name = os.path.basename(path)
        if name in self.filenames:
            return self.filenames[name], None, ""
        ext = os.path.splitext(name)[1].lower()
        if ext in self.extensions:
            return self.extensions[ext], None, ""
        if ext in NON_CODE:
            return None, "non_code", NON_CODE[ext]
        return None, "unknown_language", ext or "(no extension)"
