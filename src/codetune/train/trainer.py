"""`codetune train`: fine-tune a base model on a prepared dataset, resumably.

The run folder is self-describing, so `eval`, `merge`, `complete` and `serve` need nothing
else:

    RUN/adapter_model.safetensors, adapter_config.json   (peft.PeftModel.from_pretrained(base, RUN))
    RUN/tokenizer files                                  (with FIM tokens, if they were added)
    RUN/config.yaml      the resolved configuration
    RUN/run.json         base model identity (Hub id + revision, or file hash), dataset content
                         hash, FIM format, LoRA shape, versions: what --resume checks
    RUN/metrics.json     every logged value (losses, tokens/s, MFU) and the summary
    RUN/loss_curve.png   train loss and both eval losses
    RUN/checkpoints/checkpoint-N/   complete checkpoints (see checkpoints.py)
    RUN/logs/            TensorBoard

Training is the Hugging Face Trainer with three changes: the loss is computed without
materialising full-vocabulary logits (`loss.py`), checkpoints are atomic and carry the exact
position of every rank's data stream, and the DataLoader is torchdata's StatefulDataLoader over
codetune's stream (each rank reads its own disjoint share: no dispatching from rank 0).
"""


from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from codetune import outputs
from codetune.config import RunConfig
from codetune.errors import CodetuneError
from codetune.train import checkpoints
from codetune.train.rundir import (
    _check_resume_compatible,
    _dataset_identity,
    _run_record,
    check_output,
    finished_step,
    resume_dataset,
    write_run_files,
)


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    seconds: float
    train_loss: float | None
    eval_losses: dict[str, float] = field(default_factory=dict)
    tokens_per_second: float | None = None
    resumed_from: str | None = None
    already_finished: bool = False  # --resume of a run that had reached train.max_steps
    loss_path: str = ""
    trainable_params: int = 0
    total_params: int = 0
    log_history: list[dict[str, Any]] = field(default_factory=list, repr=False)
    model: Any = field(default=None, repr=False)  # the trained model, for notebook users
    kept: dict[str, Any] | None = None  # train.keep=best: the step kept, its loss, and why

    def summary(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()
                if k not in ("log_history", "model")}


def _trainer_class():
    """The Trainer subclass (built lazily: transformers is imported only when training)."""
    import torch
    from transformers import Trainer

    class CodetuneTrainer(Trainer):
        stream_state: dict | None = None
        throughput = None
        _train_dl = None

        def get_train_dataloader(self):
            from torch.utils.data import default_collate
            from torchdata.stateful_dataloader import StatefulDataLoader

            # Not passed through accelerator.prepare: the stream already gives each rank its
            # own share, and a prepared loader would dispatch or re-shard batches.
            workers = self.args.dataloader_num_workers
            # A generator of its own: creating the iterator must not draw from torch's global
            # RNG, or a resumed run (iterator created after the RNG state is restored) would
            # get different dropout masks from the uninterrupted one.
            dl = StatefulDataLoader(
                self.train_dataset, batch_size=self.args.per_device_train_batch_size,
                num_workers=workers, collate_fn=default_collate, drop_last=True,
                generator=torch.Generator().manual_seed(self.args.seed),
                pin_memory=torch.cuda.is_available(),
                persistent_workers=workers > 0, prefetch_factor=2 if workers else None)
            if self.stream_state is not None:
                dl.load_state_dict(self.stream_state)
            self._train_dl = dl
            return dl

        def get_eval_dataloader(self, eval_dataset=None):
            from torch.utils.data import DataLoader, default_collate

            ds = eval_dataset if eval_dataset is not None else self.eval_dataset
            if isinstance(ds, str):
                ds = self.eval_dataset[ds]
            return DataLoader(ds, batch_size=self.args.per_device_eval_batch_size,
                              collate_fn=default_collate)

        def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
            # The Trainer loads optimizer and scheduler together or not at all, silently. From
            # a checkpoint that lacks one (checkpoints.for_resume chose it, train warned) keep
            # the other, and put the schedule at the checkpoint's step: the built-in schedules
            # are functions of the step, so a fresh one stepped there is the saved one.
            ck = Path(checkpoint) if checkpoint else None
            if ck is None or self.is_fsdp_enabled or self.is_deepspeed_enabled or all(
                    (ck / f).is_file() for f in ("optimizer.pt", "scheduler.pt")):
                super()._load_optimizer_and_scheduler(checkpoint)
                return
            import warnings

            if (ck / "optimizer.pt").is_file():
                self.optimizer.load_state_dict(torch.load(ck / "optimizer.pt", map_location="cpu",
                                                          weights_only=True))
            sched = self.lr_scheduler
            if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                return  # driven by eval losses, not the step: it starts over
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "lr_scheduler.step() before optimizer.step()"
                for _ in range(self.state.global_step):
                    sched.step()

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            if "loss" in logs and self.throughput is not None:
                logs.update(self.throughput.measure(self.state.global_step))
            super().log(logs, start_time)

        def _save_checkpoint(self, model, trial) -> None:
            # HF writes checkpoint-N in place; here it is written under a temporary name,
            # sealed with checksums, and renamed only when complete (see checkpoints.py).
            step = self.state.global_step
            root = Path(self.args.output_dir)
            tmp, final = root / checkpoints.tmp_name(step), root / f"checkpoint-{step}"
            if self.args.should_save:
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
            self.accelerator.wait_for_everyone()
            self.store_flos()
            self.save_model(str(tmp), _internal_call=True)
            if not self.args.save_only_model:
                self._save_optimizer_and_scheduler(str(tmp))
                self._save_scaler(str(tmp))
                self._save_rng_state(str(tmp))
            if self._train_dl is not None:
                rank = self.args.process_index
                (tmp / f"stream_rank{rank}.json").write_text(
                    json.dumps(self._train_dl.state_dict()))
            if self.args.should_save:
                self.state.save_to_json(str(tmp / "trainer_state.json"))
            self.accelerator.wait_for_everyone()
            if self.args.should_save:
                checkpoints.seal(tmp, {"step": step, "world_size": self.args.world_size})
                checkpoints.finalize(tmp, final)
                limit = self.args.save_total_limit
                if limit:
                    done = sorted((int(p.name.split("-")[1]), p) for p in root.glob("checkpoint-*"))
                    for _, old in done[:-limit]:
                        shutil.rmtree(old, ignore_errors=True)
            self.accelerator.wait_for_everyone()
            if self.args.push_to_hub:
                self._push_from_checkpoint(str(final))

    return CodetuneTrainer


def context_providers(cfg: RunConfig, tokenizer) -> tuple[Any, Any]:
    """(train, held-out) `context(repo_id, path, text, fits=None)` callables for
    data.context=repo, on the dataset's repository index: a train file gets its neighbours
    computed at index time (no retrieval while streaming); a held-out file, which the index
    never holds, gets a retrieval against the train files of its repository with its first
    lines as the query. With data.context_select=window (`per_window`), the stream asks again
    for each window of a long file, with that window's text and a `fits` test (the window's
    context must take no more tokens than the file's, which the windows were cut for): the
    neighbours ranked for the window (`RepoIndex.window_neighbours`); a held-out window
    retrieves with its own last lines, as eval does at a cursor."""
    from codetune.context import RepoIndex, repo_context
    from codetune.tokens.fim import token_counter

    index = RepoIndex.for_dataset(cfg.data.dataset)
    if index is None:
        raise CodetuneError(
            f"data.context=repo needs the repository index of {cfg.data.dataset}, and it has "
            "none (prepared by an older codetune, or with prepare.context_index=false); "
            "prepare it again with `codetune prepare SOURCE... -o DATASET --overwrite`")
    budget = cfg.data.context_tokens
    count = token_counter(tokenizer)

    def train_ctx(repo_id: str, path: str, text: str, fits=None):
        snippets = (index.neighbours(repo_id, path) if fits is None else
                    index.window_neighbours(repo_id, path, text))
        return repo_context(snippets, budget, count, repo_id, path, fits)[0]

    def held_out_ctx(repo_id: str, path: str, text: str, fits=None):
        query = "\n".join(text.splitlines()[:40]) if fits is None else text
        return repo_context(index.retrieve(query, "", path, repo_id), budget, count, repo_id,
                            path, fits)[0]

    per_window = cfg.data.context_select == "window"
    train_ctx.per_window = held_out_ctx.per_window = per_window  # type: ignore[attr-defined]
    return train_ctx, held_out_ctx


class _Capped:
    """An eval stream limited to `n` sequences (a torch IterableDataset). With `exact`, it
    yields exactly `n`, going round its stream again if that is shorter (then round `fallback`,
    if the stream is empty): on several ranks every rank must run the same number of eval
    batches, or the loss gather of distributed evaluation waits forever."""

    def __new__(cls, stream, n: int | None, exact: bool = False, fallback=None):
        if n is None:
            return stream
        import itertools

        from torch.utils.data import IterableDataset

        class Capped(IterableDataset):
            def __iter__(self):
                if not exact:
                    return itertools.islice(iter(stream), n)
                return itertools.islice(self._forever(), n)

            def _forever(self):
                for source in (stream, fallback):
                    while source is not None:  # round and round; islice stops it at n
                        got = False
                        for item in source:
                            got = True
                            yield item
                        if not got:
                            break  # an empty share: go round the fallback instead

        return Capped()


def train(cfg: RunConfig, out_dir: str | Path, resume: bool = False, overwrite: bool = False,
          force: bool = False, progress: bool = True) -> TrainResult:
    """Fine-tune `cfg.model.name` on `cfg.data.dataset` into `out_dir` (see module docstring)."""
    import torch
    from transformers import TrainingArguments

    from codetune.data.store import resolve_files
    from codetune.model import load as M
    from codetune.model.source import resolve_source
    from codetune.tokens.stream import make_stream, rank_and_world, resolve_fim
    from codetune.train import lora as L
    from codetune.train.loss import enable_efficient_loss
    from codetune.train.telemetry import (
        Throughput,
        count_params,
        flops_per_token,
        plot_losses,
        progress_callback,
        write_metrics,
    )

    out = Path(out_dir).absolute()
    rank, world = rank_and_world()
    defaulted = cfg.model.name is None
    if defaulted:
        from codetune.mini import default_model, default_model_note

        cfg.model.name = default_model()
        if rank == 0:
            print(default_model_note(), file=sys.stderr)
    if cfg.data.dataset is None:
        raise CodetuneError("no dataset given: pass --dataset DIR (a folder written by "
                            "`codetune prepare`)")
    if resume and overwrite:
        raise CodetuneError("--resume and --overwrite contradict each other; pick one")
    if rank == 0:  # other ranks would see the folder rank 0 is creating
        check_output(out, resume, overwrite, inputs=[("dataset", cfg.data.dataset),
                                                     ("base model", cfg.model.name)])
    if resume:
        done = finished_step(out, cfg.train.max_steps)
        if done is not None:
            if rank == 0:
                print(f"{out} finished at step {done} (train.max_steps={cfg.train.max_steps});"
                      " nothing to train. To continue it, raise train.max_steps, e.g. "
                      f"`codetune train -o {out} --resume train.max_steps={2 * done}`",
                      file=sys.stderr)
            return TrainResult(out_dir=out, steps=done, seconds=0.0, train_loss=None,
                               already_finished=True)
    # Everything is checked and loaded before an old run is touched: a typo in --dataset or
    # --model fails here and loses nothing.
    typed = cfg.data.dataset  # as given: what config.yaml keeps
    if resume:  # the run's own dataset, found by run.json (never relative to this folder)
        cfg.data.dataset = resume_dataset(out, cfg.data.dataset, force, quiet=rank != 0)
    resolve_files(cfg.data.dataset, "train")
    dataset = _dataset_identity(cfg)
    source = resolve_source(cfg.model.name, cfg.model.revision)
    started = time.perf_counter()
    t = cfg.train
    if t.warmup_steps >= t.max_steps and t.learning_rate > 0 and rank == 0:
        # Seen on the real-model loop: the reference notebook's 30 warm-up steps in a 12-step
        # CPU run kept the learning rate under 40 % of its peak for the whole run.
        print(f"warning: train.warmup_steps={t.warmup_steps} is not below train.max_steps="
              f"{t.max_steps}, so the learning rate never reaches train.learning_rate="
              f"{t.learning_rate:g}; set train.warmup_steps={max(1, t.max_steps // 10)} "
              "(a tenth of the run) for a short run", file=sys.stderr)

    from transformers import set_seed

    set_seed(t.seed)  # LoRA initialisation, dropout and the Trainer's RNG
    tokenizer = M.load_tokenizer(cfg.model)
    n_vocab = len(tokenizer)
    fim_tokens = resolve_fim(tokenizer, cfg.fim)
    train_ctx = held_out_ctx = None
    if cfg.data.context == "repo":  # the dataset's index is checked before anything is touched
        train_ctx, held_out_ctx = context_providers(cfg, tokenizer)
    new_ids = list(range(n_vocab, len(tokenizer)))
    model = M.load_model(cfg, tokenizer)
    positions = getattr(model.config, "max_position_embeddings", None) or getattr(
        model.config, "n_positions", None)
    if positions and cfg.data.seq_length > positions:
        if not defaulted:
            raise CodetuneError(f"data.seq_length={cfg.data.seq_length} is longer than the "
                                f"model's {positions} positions; set data.seq_length={positions}")
        cfg.data.seq_length = positions  # the bundled model, not the user's choice: fit it
    if new_ids:
        model.resize_token_embeddings(len(tokenizer))
    model = L.prepare_for_training(model, cfg, new_ids)
    loss_path = enable_efficient_loss(model, cfg.train.loss_chunk_tokens)
    counts = count_params(model)
    record = _run_record(cfg, source, fim_tokens, dataset, counts)

    with contextlib.ExitStack() as stack:
        if not resume and rank == 0:
            # A failed new run is removed (and an old one put back) unless it reached a
            # checkpoint, which `--resume` can continue.
            stack.enter_context(outputs.replacing(
                out, overwrite, "run",
                keep_failed=lambda p: checkpoints.latest(p / "checkpoints", quiet=True)
                is not None))
        ckpt_root = out / "checkpoints"
        resume_from = None
        recorded = []

        def record_run() -> None:
            """config.yaml and run.json, once. A resume writes them only when under way (its
            first step begins: weights, optimizer, RNG and data position loaded), so one that
            fails before that leaves the run's record as it was."""
            if rank == 0 and not recorded:
                write_run_files(out, cfg, typed, record)
            recorded.append(True)

        if resume:
            _check_resume_compatible(out, record, force)
            if rank == 0:
                checkpoints.clean_partial(ckpt_root)
            resume_from, lacks = checkpoints.for_resume(ckpt_root, world)
            if resume_from is None:
                print("note: no complete checkpoint yet; starting this run from step 0",
                      file=sys.stderr)
            elif lacks and rank == 0:
                lost = "; ".join(checkpoints.STATE[n if n in checkpoints.STATE else
                                                   "rng_state.pth"] for n in lacks)
                inexact = any(n != "scheduler.pt" for n in lacks)
                print(f"warning: no complete checkpoint holds all the state of an exact resume;"
                      f" resuming from {resume_from.name} without {', '.join(lacks)}: {lost}"
                      + (". Not an exact resume: the run goes on, but differs from an "
                         "uninterrupted one" if inexact else " (exact for step-based schedules)"),
                      file=sys.stderr)
        else:
            if rank == 0:
                out.mkdir(parents=True, exist_ok=True)
            record_run()

        train_stream = make_stream(cfg, tokenizer, "train", seed=cfg.train.seed,
                                   fim_tokens=fim_tokens, context=train_ctx)
        evals = {}
        if resolve_files(cfg.data.dataset, "validation")[0]:
            # Train-time evaluation is capped (data.max_eval_sequences) so its cost does not grow
            # with the held-out split, and the cap is shared between ranks: each rank evaluates
            # its own share, exactly cap/world sequences, so all run the same number of batches.
            cap = cfg.data.max_eval_sequences
            per_rank = cap if cap is None or world == 1 else -(-cap // world)

            def held_out(**kw):
                kw["context"] = held_out_ctx
                if per_rank is None:  # all of it: every rank evaluates everything, in step
                    return make_stream(cfg, tokenizer, "validation", rank=0, world_size=1, **kw)
                share = make_stream(cfg, tokenizer, "validation", rank=rank, world_size=world,
                                    **kw)
                whole = make_stream(cfg, tokenizer, "validation", rank=0, world_size=1, **kw)
                return _Capped(share, per_rank, exact=world > 1, fallback=whole)

            if cfg.data.eval_ltr:
                evals["ltr"] = held_out(fim_rate=0.0)
            if cfg.data.eval_fim and fim_tokens is not None:
                evals["fim"] = held_out(fim_tokens=fim_tokens)
        elif rank == 0:
            print("note: the dataset has no validation split; training without evaluation",
                  file=sys.stderr)

        cuda = torch.cuda.is_available()
        dtype = M.compute_dtype(cfg.model)
        do_eval = bool(evals) and t.eval_steps > 0
        args = TrainingArguments(
            output_dir=str(ckpt_root), max_steps=t.max_steps,
            per_device_train_batch_size=t.batch_size, per_device_eval_batch_size=t.batch_size,
            gradient_accumulation_steps=t.grad_accum, learning_rate=t.learning_rate,
            lr_scheduler_type=t.lr_scheduler, warmup_steps=t.warmup_steps,
            weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm, optim=t.optim,
            eval_strategy="steps" if do_eval else "no", eval_steps=t.eval_steps or None,
            save_strategy="steps", save_steps=t.save_steps, logging_steps=t.logging_steps,
            save_total_limit=t.save_total_limit, seed=t.seed, data_seed=t.seed,
            # Checkpointing is switched on (non-reentrant) by model.prepare_for_training.
            bf16=dtype == torch.bfloat16 and cuda, fp16=dtype == torch.float16 and cuda,
            use_cpu=not cuda, dataloader_num_workers=t.dataloader_workers,
            dataloader_drop_last=True, remove_unused_columns=False, label_names=["labels"],
            prediction_loss_only=True, ignore_data_skip=True, report_to="none",
            ddp_find_unused_parameters=False,
            ddp_backend="gloo" if world > 1 and not cuda else None,
            accelerator_config={"dispatch_batches": False, "split_batches": False},
            push_to_hub=t.push_to_hub, hub_model_id=t.hub_model_id or out.name,
            disable_tqdm=True, logging_first_step=True,  # progress: metrics.progress_callback
        )
        callbacks = []
        if t.report_to == "tensorboard" and rank == 0:
            from torch.utils.tensorboard import SummaryWriter
            from transformers.integrations import TensorBoardCallback

            callbacks.append(TensorBoardCallback(SummaryWriter(log_dir=str(out / "logs"))))
        elif t.report_to not in ("none", "tensorboard"):
            args.report_to = [t.report_to]
        if resume:
            from transformers import TrainerCallback

            class RecordWhenUnderWay(TrainerCallback):
                def on_step_begin(self, args, state, control, **kwargs):
                    record_run()

            callbacks.append(RecordWhenUnderWay())
        trainer = _trainer_class()(model=model, args=args, train_dataset=train_stream,
                                   eval_dataset=evals or None, callbacks=callbacks)
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        trainer.remove_callback(PrinterCallback)  # it prints raw dicts of strings
        trainer.remove_callback(ProgressCallback)
        if progress and rank == 0:
            trainer.add_callback(progress_callback(live=sys.stderr.isatty()))
        tokens_per_step = t.batch_size * cfg.data.seq_length * t.grad_accum * world
        trainer.throughput = Throughput(tokens_per_step,
                                        flops_per_token(model, counts, cfg.data.seq_length),
                                        world)
        if resume_from is not None:
            state_file = resume_from / f"stream_rank{rank}.json"
            if not state_file.is_file():
                raise CodetuneError(f"{resume_from} has no stream position for rank {rank}; it was "
                                    "saved with a different number of processes. Resume with the "
                                    "same number of processes.")
            trainer.stream_state = json.loads(state_file.read_text())
            trainer.throughput.reset(int(resume_from.name.split("-")[1]))
        try:
            if resume_from is not None and checkpoints.step_of(resume_from) >= t.max_steps:
                # Killed after its last checkpoint, before the final save. The Trainer checks
                # max_steps only after a step, so resuming it would train one step too many:
                # load the checkpoint's weights and state and go straight to the final save.
                from transformers import TrainerState

                trainer._load_from_checkpoint(str(resume_from))
                trainer.state = TrainerState.load_from_json(
                    str(resume_from / "trainer_state.json"))
            else:
                trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
            record_run()  # (no step ran: nothing left to train)
        except torch.cuda.OutOfMemoryError:
            raise CodetuneError(
                "out of GPU memory. Lower train.batch_size (raise train.grad_accum to keep the "
                "effective batch), lower data.seq_length, keep train.gradient_checkpointing=true, "
                "or load the base in 4 bits (model.quantization=4bit).") from None

        history = trainer.state.log_history
        train_losses = [r["loss"] for r in history if "loss" in r]
        evals_final = {k: v for r in history for k, v in r.items()
                       if k.startswith("eval_") and k.endswith("_loss")}
        tps = trainer.throughput.history
        result = TrainResult(
            out_dir=out, steps=trainer.state.global_step, seconds=time.perf_counter() - started,
            train_loss=train_losses[-1] if train_losses else None, eval_losses=evals_final,
            tokens_per_second=sum(tps) / len(tps) if tps else None,
            resumed_from=str(resume_from) if resume_from else None, loss_path=loss_path,
            trainable_params=counts.get("trainable", 0), total_params=counts.get("total", 0),
            log_history=history, model=trainer.model)
        if t.keep == "best":
            result.kept = _keep_best(trainer, ckpt_root, rank)
        trainer.save_model(str(out))  # every rank: under FSDP the weights are gathered
        if trainer.is_world_process_zero():
            tokenizer.save_pretrained(str(out))
            write_metrics(out / "metrics.json", history, result.summary())
            plot_losses(history, out / "loss_curve.png")
            if t.push_to_hub:
                trainer.push_to_hub()
        return result


def _keep_best(trainer: Any, ckpt_root: Path, rank: int) -> dict[str, Any] | None:
    """train.keep=best: load the weights of the checkpoint with the lowest held-out loss
    (`checkpoints.best_step`) before the final save; say which and why."""
    final = trainer.state.global_step
    best = checkpoints.best_step(trainer.state.log_history,
                                 checkpoints.complete_steps(ckpt_root), final)
    if best is None:
        if rank == 0:
            print("warning: train.keep=best, but no saved step was evaluated; keeping the last "
                  "weights (set train.eval_steps to divide train.save_steps)", file=sys.stderr)
        return None
    if best["step"] != final:
        trainer._load_from_checkpoint(str(ckpt_root / f"checkpoint-{best['step']}"))
    if rank == 0:
        print(f"keeping the weights of step {best['step']}: {best['why']}", file=sys.stderr)
    return best


def print_summary(r: TrainResult) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"codetune train -> {r.out_dir}", show_edge=False, show_header=False)
    table.add_column("")
    table.add_column("", justify="right")
    table.add_row("steps", str(r.steps))
    table.add_row("time", f"{r.seconds / 60:.1f} min")
    if r.train_loss is not None:
        table.add_row("last train loss", f"{r.train_loss:.4f}")
    for k, v in r.eval_losses.items():
        table.add_row(k.replace("_", " "), f"{v:.4f}")
    if r.tokens_per_second:
        table.add_row("tokens/s (mean)", f"{r.tokens_per_second:,.0f}")
    table.add_row("trainable params", f"{r.trainable_params:,} of {r.total_params:,}")
    table.add_row("loss", r.loss_path)
    if r.resumed_from:
        table.add_row("resumed from", Path(r.resumed_from).name)
    if r.kept:
        table.add_row("kept", f"step {r.kept['step']} (held-out loss {r.kept['loss']:.4f})")
    Console().print(table)
    print(f"next: codetune eval {r.out_dir}   (base vs fine-tuned on your held-out code)")
