"""`codetune export`: check the inputs, merge, write, verify, then swap the folder into place.

    export(SOURCE, "gguf" | "ollama" | "tabby" | "vllm", OUT, ftype="F16")

Order (the habits of `merge`): every input is checked before any work (the source folder, the
architecture, the type, llama.cpp's tools where the type needs them, the OUT folder); a LoRA run
is merged into a temporary folder beside OUT; the GGUF is written into OUT's hidden build
folder, read back and compared with the merged model (`verify`); only when it passes are the
target's files, README.md and codetune_export.json added and the folder renamed into place. A
failed check leaves OUT as it was.

Pass marks (the same numbers are printed and recorded):
    F32 / F16 / BF16  largest |logit difference| <= merge.TOLERANCE["bfloat16"] (0.25): the
                      rounding a bf16 merge already accepts
    Q8_0              top-1 agreement >= 99 % of the positions
    K-quants          reported, not judged (llama-quantize's choice of precision per tensor)
    metadata          the architecture keys equal config.json's; every token string, and each
                      FIM key naming the registry's sentinel
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from codetune import __version__, outputs
from codetune.errors import CodetuneError
from codetune.export import gguf, llama_cpp, ollama, source, tabby, verify, vllm, vocab
from codetune.infer.generate import GenParams
from codetune.infer.probe import probe_texts
from codetune.merge import TOLERANCE, merge
from codetune.model.load import load_tokenizer
from codetune.tokens.fim import detect_fim

TARGETS = ("gguf", "ollama", "tabby", "vllm")
CONVERTERS = ("auto", "codetune", "llama.cpp")
MIN_TOP1 = 0.99


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def export(src_path: str | Path, to: str, out: str | Path, *, ftype: str = "F16",
           name: str | None = None, overwrite: bool = False, converter: str = "auto",
           merge_dtype: str = "bfloat16", echo: Any = _say) -> dict[str, Any]:
    """Export the run or model at `src_path` for `to` into the folder `out`; returns the
    record written to OUT/codetune_export.json (with the verification figures)."""
    if to not in TARGETS:
        raise CodetuneError(f"unknown export target {to!r}; choose one of {', '.join(TARGETS)}")
    if converter not in CONVERTERS:
        raise CodetuneError(f"--converter must be one of {', '.join(CONVERTERS)}")
    out = outputs.check(out, overwrite, "export", inputs=[("model", src_path)])
    name = check_name(name) if name is not None else default_name(out)
    src = source.resolve(src_path)
    if src.cfg is not None:
        outputs.check_inputs(out, [("base model", src.cfg.model.name),
                                   ("run", src.run_dir)])
    needs_gguf = to != "vllm"
    if needs_gguf:
        _need_gguf_package()
        ftype = gguf.check_type(ftype)
        arch = source.model_type(src)
        if arch is not None and arch not in gguf.ARCHS:
            raise CodetuneError(f"cannot export a {arch!r} model to GGUF; supported "
                                f"architectures: {gguf.SUPPORTED}")
        if ftype not in gguf.NATIVE_TYPES:
            llama_cpp.need_quantize(ftype)
        if converter == "llama.cpp":
            llama_cpp.need_convert()

    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-work-", dir=out.parent))
    try:
        with outputs.staged(out, overwrite, "export", checked=True) as tmp:
            if needs_gguf:
                record = _gguf_target(src, to, tmp, work, ftype, name, converter,
                                      merge_dtype, echo)
            else:
                record = _vllm_target(src, tmp, out, name, merge_dtype, echo)
            record["seconds"] = round(time.monotonic() - t0, 2)
            record["files"] = {str(p.relative_to(tmp)): p.stat().st_size
                               for p in sorted(tmp.rglob("*")) if p.is_file()}
            outputs.write_json(tmp / "codetune_export.json", record)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {**record, "out_dir": str(out)}


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_name(name: str) -> str:
    """The model's name in file names, Modelfiles and `--served-model-name`: letters, digits,
    `.`, `_` and `-`, starting with a letter or digit. A name is never a path (`../x`, `/x`,
    `a/b` are refused), so nothing export writes can leave OUT."""
    if _NAME.fullmatch(name) and ".." not in name:
        return name
    raise CodetuneError(f"--name {name!r} is not a plain name; use letters, digits, '.', "
                        "'_' and '-' (no '/', no '..'), e.g. --name my-model")


def default_name(out: Path) -> str:
    """OUT's folder name made a plain name (`my model` -> `my-model`)."""
    return re.sub(r"[^A-Za-z0-9._-]+|\.\.+", "-", out.name).strip("._-")[:128] or "model"


def _need_gguf_package() -> None:
    try:
        import gguf as package  # optional: gguf (the export extra)
    except ImportError:
        raise CodetuneError("GGUF export needs the `gguf` package: pip install "
                            "'codetune[export]'") from None
    if not hasattr(package.Keys.Tokenizer, "FIM_PRE_ID"):
        raise CodetuneError(f"the installed gguf {getattr(package, '__version__', '')} predates "
                            "the FIM token keys; pip install -U gguf") from None


def _record(src: source.Source, to: str, name: str) -> dict[str, Any]:
    return {**outputs.mark("export"), "codetune_version": __version__, "target": to,
            "name": name, **src.provenance()}


def _tokenizer(model_dir: Path, src: source.Source) -> tuple[Any, Any]:
    tokenizer = load_tokenizer(str(model_dir))
    try:
        return tokenizer, detect_fim(tokenizer, src.fim_format)
    except CodetuneError:
        return tokenizer, None


def build_gguf(model_dir: Path, dest: Path, ftype: str, tokenizer: Any, fim: Any, name: str,
               converter: str, work: Path) -> dict[str, Any]:
    """Write `dest` (any --type) with llama.cpp's converter or codetune's writer."""
    tools = llama_cpp.find()
    use_llama = converter == "llama.cpp" or (converter == "auto" and tools["convert"])
    base_type = ftype if ftype in gguf.NATIVE_TYPES else "F16"
    first = dest if base_type == ftype else work / "unquantized.gguf"
    dest.parent.mkdir(parents=True, exist_ok=True)
    if use_llama:
        script = tools["convert"] or llama_cpp.need_convert()
        info = {"converter": "llama.cpp", **llama_cpp.convert(
            script, model_dir, first, base_type, pre=_pre_for_converter(tokenizer))}
        # the FIM / EOT keys it leaves out, and the stop tokens typed CONTROL
        ids = vocab.special_ids(tokenizer, fim)
        control = tuple(fim.stop_ids) if fim is not None else ()
        info["added_keys"] = llama_cpp.add_metadata(first, ids, control)
    else:
        d = GenParams()
        info = {"converter": "codetune", **gguf.write(
            model_dir, first, base_type, tokenizer=tokenizer, fim=fim, name=name,
            sampling={"temp": d.temperature, "top_k": d.top_k, "top_p": d.top_p})}
    if first != dest:
        llama_cpp.quantize(llama_cpp.need_quantize(ftype), first, dest, ftype)
        info["quantized_by"] = "llama-quantize"
    return info


def _pre_for_converter(tokenizer: Any) -> str | None:
    """The pre-tokenizer name codetune gives llama.cpp's converter for a byte-level tokenizer
    its hash table lacks (`llama_cpp.convert`); None where codetune cannot name it either (the
    converter's own table may still know it) or the tokenizer is not byte-level BPE."""
    try:
        spec = vocab.tokenizer_spec(tokenizer)
        return vocab.pre_type(tokenizer, spec) if vocab.kind(spec) == "gpt2" else None
    except CodetuneError:
        return None


def check_vocab_fits(tokenizer: Any, fim: Any, cfg: dict[str, Any], where: Path) -> None:
    """Every token id must have an embedding row: a GGUF lists the tokenizer's tokens, and
    llama.cpp refuses a file whose token list is longer than token_embd (and a FIM sentinel
    past the rows would be a token the model never saw)."""
    rows = cfg["vocab_size"]
    if len(tokenizer) <= rows:
        return
    sentinels = [i for i in (fim.prefix_id, fim.suffix_id, fim.middle_id) if i >= rows] \
        if fim is not None else []
    which = f", the FIM sentinels {sentinels} among them" if sentinels else ""
    raise CodetuneError(
        f"the tokenizer of {where} has {len(tokenizer)} tokens but the model only {rows} "
        f"embedding rows (config.json vocab_size): ids {rows}..{len(tokenizer) - 1}{which} "
        "have none, so llama.cpp would refuse the file. Export the run folder instead (its "
        "merge resizes the embeddings to the tokenizer), or resize them yourself "
        "(model.resize_token_embeddings(len(tokenizer)), then save_pretrained)")


def judge(check: dict[str, Any], ftype: str) -> list[str]:
    """What fails the pass marks in the module docstring (empty: it passed)."""
    bad = [f"tokenizer metadata: {p}" for p in check["tokenizer"]["problems"]]
    bad += [f"metadata: {p}" for p in check.get("hparams_problems", [])]
    if ftype in ("F32", "F16", "BF16") and check["max_abs_logit_diff"] > TOLERANCE["bfloat16"]:
        bad.append(f"largest |logit difference| {check['max_abs_logit_diff']:.4g} is over the "
                   f"bf16 tolerance {TOLERANCE['bfloat16']}")
    if ftype == "Q8_0" and check["top1_agreement"] < MIN_TOP1:
        bad.append(f"top-1 agreement {check['top1_agreement']:.2%} is under {MIN_TOP1:.0%}")
    return bad


def _gguf_target(src: source.Source, to: str, tmp: Path, work: Path, ftype: str, name: str,
                 converter: str, merge_dtype: str, echo: Any) -> dict[str, Any]:
    model_dir, merge_info = source.merged(src, work, merge_dtype, echo)
    cfg = gguf.model_config(model_dir)
    tokenizer, fim = _tokenizer(model_dir, src)
    check_vocab_fits(tokenizer, fim, cfg, src.path)
    if to != "gguf" and fim is None:
        raise CodetuneError(f"the tokenizer of {src.path} has no FIM tokens, so {to} could not "
                            "infill with it; use --to gguf for plain completion")
    rel = {"gguf": f"{name}.{ftype}.gguf", "ollama": ollama.GGUF_NAME,
           "tabby": tabby.GGUF_PATH}[to]
    dest = outputs.inside(tmp, rel)
    t0 = time.monotonic()
    info = build_gguf(model_dir, dest, ftype, tokenizer, fim, name, converter, work)
    seconds = time.monotonic() - t0
    echo(f"wrote {rel} ({dest.stat().st_size / 1e6:.1f} MB, {ftype}) in {seconds:.1f} s; "
         "reading it back ...")
    probe = probe_texts(src.run_dir, 4, src.cfg)  # the run's held-out files, else snippets
    if src.run_dir is not None and not probe.held_out:
        _say(f"warning: the export is checked on built-in code snippets{probe.note}")
    texts, where = probe.texts, probe.where
    check = verify.verify(dest, model_dir, tokenizer, fim, texts)
    check["texts"] = where
    echo(f"check ({check['reader']} reader, {check['positions']} positions of {where}): "
         f"largest |logit difference| {check['max_abs_logit_diff']:.4g}, "
         f"top-1 agreement {check['top1_agreement']:.2%}")
    bad = judge(check, ftype)
    if bad:
        raise CodetuneError(f"the exported {ftype} file does not match the model: "
                            f"{'; '.join(bad)}. Nothing was written.")
    window = cfg.get("max_position_embeddings") or cfg.get("n_positions")
    record = {**_record(src, to, name), "type": ftype, "gguf": rel, "write_seconds":
              round(seconds, 2), "check": check, **info}
    if merge_info is not None:
        record["merge"] = {"dtype": merge_info["dtype"],
                           "max_abs_logit_diff": merge_info["max_abs_logit_diff"]}
    if to == "ollama":
        section = ollama.write(tmp, fim, name, window)
    elif to == "tabby":
        section = tabby.write(tmp, fim, name)
    else:
        section = _gguf_section(rel)
    _readme(tmp, record, section)
    return record


def _gguf_section(rel: str) -> str:
    return f"""## Run it

```bash
llama-server -m {rel} --port 8012          # llama.cpp: /infill, /v1/completions
llama-cli -m {rel} -p 'def fib(n):'
```

The file carries the FIM token ids (`tokenizer.ggml.fim_pre_token_id`, ...), which llama.cpp's
`/infill` endpoint (and llama.vscode, which uses it) needs, and codetune's sampling defaults
(`general.sampling.*`).
"""


def _vllm_target(src: source.Source, tmp: Path, out: Path, name: str, merge_dtype: str,
                 echo: Any) -> dict[str, Any]:
    record = _record(src, "vllm", name)
    if src.kind == "lora-run" and not src.added_tokens:
        rank = vllm.lora_rank(src.cfg.lora.r)
        command = vllm.serve_command(src.cfg.model.name, name, revision=src.cfg.model.revision,
                                     adapter=str(src.path), rank=rank)
        note = (f"The adapter of `{src.path}` (LoRA r={src.cfg.lora.r}) on its base "
                f"`{src.cfg.model.name}`, batched with any other adapters of the same base "
                f"(`--max-lora-rank {rank}`: the smallest rank vLLM accepts that holds "
                f"r={src.cfg.lora.r}). Clients send `model: \"{name}\"`.")
        record.update(mode="lora", max_lora_rank=rank)
    else:
        model = src.path
        if src.kind == "lora-run":  # added tokens: only a merged model carries them

            echo("the run added FIM tokens to the vocabulary; merging it into OUT/model ...")
            merge(src.path, tmp / "model", dtype=merge_dtype, flag="--merge-dtype", echo=echo)
            model = out / "model"  # where it will be once the folder is in place
            why = "The run added FIM tokens (fim.add_tokens), which an adapter on the unchanged " \
                  "base cannot carry: the merged model is in `model/`."
        elif src.kind == "full-run":
            why = "A full fine-tune: the run folder holds the whole model."
        else:
            why = "A merged model folder."
        command = vllm.serve_command(str(model), name)
        note = why
        record.update(mode="model")
    _, fim = _tokenizer(src.path, src)
    section = vllm.write(tmp, fim, name, command, str(src.path), note)
    record["command"] = command
    _readme(tmp, record, section)
    return record


def _readme(folder: Path, record: dict[str, Any], section: str) -> None:
    base = record.get("base_model")
    base_name = base
    if isinstance(base, dict):
        base_name = base.get("path") or base.get("name")
        if base.get("revision"):
            base_name = f"{base_name}@{base['revision']}"
        if base.get("identity"):
            base_name = f"{base_name} ({base['identity']})"
    ds = record.get("dataset") or {}
    lines = [f"# {record['name']}: codetune export for {record['target']}", "",
             f"Written by codetune {record['codetune_version']} (`codetune export "
             f"{record['source']} --to {record['target']}`).", "",
             "## Where it came from", "",
             f"- source: `{record['source']}` ({record['kind']})",
             f"- run: `{record['run']}`" if record.get("run") else "- run: unknown",
             f"- base model: `{base_name}`" if base_name else "- base model: unknown",
             f"- dataset: `{ds.get('path')}`, content hash `{ds.get('content_hash')}`"
             if ds else "- dataset: unknown",
             f"- FIM format: {record.get('fim_format') or 'unknown'}"]
    if record.get("lora"):
        lora = record["lora"]
        lines.append(f"- fine-tuning: LoRA r={lora.get('r')}, alpha={lora.get('alpha')}")
    check = record.get("check")
    if check:
        lines += ["", "## Checked after writing", "",
                  f"`{record['gguf']}` ({record['type']}, {record.get('converter')} converter) "
                  f"was read back with the {check['reader']} reader and compared with the "
                  f"merged model on {check['texts']} ({check['positions']} positions): largest "
                  f"|logit difference| {check['max_abs_logit_diff']:.4g}, top-1 agreement "
                  f"{check['top1_agreement']:.2%}. Its {check['tokenizer']['tokens']} tokens and "
                  "FIM token ids match the tokenizer codetune trained with."]
    lines += ["", section.rstrip(), ""]
    (folder / "README.md").write_text("\n".join(lines), encoding="utf-8")
