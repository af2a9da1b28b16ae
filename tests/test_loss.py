"""codetune.loss: equal to transformers' full-logit loss in value and gradients, without the
full logits. Tiny models (2 layers, hidden 64, vocab 50k) built locally; CPU only."""

from __future__ import annotations

import copy
import gc
import inspect
import logging
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers.loss.loss_utils import ForCausalLMLoss

from codetune.train import loss as L
from codetune.train.loss import (
    chunked_cross_entropy,
    disable_efficient_loss,
    enable_efficient_loss,
    fused_linear_cross_entropy,
    num_loss_tokens,
)

VOCAB = 50_000


def close(actual, expected, tol=1e-6):
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol)


def reference(hidden, head, labels, num_items_in_batch=None):
    """transformers' own loss on full fp32 logits."""
    logits = head(hidden)
    return ForCausalLMLoss(logits, labels, logits.shape[-1], num_items_in_batch=num_items_in_batch)


def random_problem(b=3, t=37, h=16, v=1000, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b, t, h, generator=g, requires_grad=True)
    head = nn.Linear(h, v, bias=bias)
    with torch.no_grad():
        head.weight.copy_(torch.randn(v, h, generator=g) * 0.3)
        if bias:
            head.bias.copy_(torch.randn(v, generator=g))
    labels = torch.randint(0, v, (b, t), generator=g)
    labels[0, :5] = -100
    labels[2, 10:20] = -100
    labels[1, -1] = -100
    return hidden, head, labels


def grads(loss, hidden, head):
    return torch.autograd.grad(loss, [hidden, *head.parameters()])


# ----------------------------------------------------------------------------- the functions


@pytest.mark.parametrize("chunk_tokens", [1024, 7, 1])  # 7 and 1 do not divide the 93 rows
@pytest.mark.parametrize("num_items_in_batch", [None, 250, "tensor"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("recompute", [False, True])
def test_chunked_equals_full_logits(chunk_tokens, num_items_in_batch, bias, recompute):
    hidden, head, labels = random_problem(bias=bias)
    if num_items_in_batch == "tensor":
        num_items_in_batch = torch.tensor(250)
    ours = chunked_cross_entropy(hidden, head, labels, chunk_tokens, num_items_in_batch,
                                 recompute=recompute)
    ref = reference(hidden, head, labels, num_items_in_batch)
    assert ours.dtype == torch.float32
    close(ours, ref)
    for a, b in zip(grads(ours, hidden, head), grads(ref, hidden, head), strict=True):
        close(a, b)


def test_num_items_in_batch_is_a_sum_over_the_step():
    """Two micro-batches with the step's token count sum to the mean over the whole step."""
    hidden, head, labels = random_problem()
    n = num_loss_tokens(labels)
    assert n == int((F.pad(labels, (0, 1), value=-100)[..., 1:] != -100).sum())
    whole = chunked_cross_entropy(hidden, head, labels, 16)
    split = sum(chunked_cross_entropy(hidden[i:i + 1], head, labels[i:i + 1], 16,
                                      num_items_in_batch=n) for i in range(3))
    close(split, whole)


def test_bf16_head_upcasts_logits_like_transformers():
    hidden, head, labels = random_problem()
    head = head.to(torch.bfloat16)
    hidden = hidden.detach().to(torch.bfloat16).requires_grad_()
    ours = chunked_cross_entropy(hidden, head, labels, 10)
    ref = reference(hidden, head, labels)
    assert ours.dtype == torch.float32
    close(ours, ref, tol=1e-5)
    for a, b in zip(grads(ours, hidden, head), grads(ref, hidden, head), strict=True):
        close(a.float(), b.float(), tol=1e-2)


@pytest.mark.parametrize("recompute", [False, True])
def test_all_ignored_gives_zero_with_a_connected_graph(recompute):
    """Decision: loss 0, not transformers' nan, and zero gradients reach hidden and head, so
    backward, gradient accumulation and DDP's all-reduce proceed normally."""
    hidden, head, labels = random_problem()
    labels[:] = -100
    for nib in (None, 7):
        loss = chunked_cross_entropy(hidden, head, labels, 8, nib, recompute=recompute)
        assert loss.item() == 0.0 and loss.requires_grad
        for g in grads(loss, hidden, head):
            assert g is not None and not g.any()
    assert torch.isnan(reference(hidden, head, labels))  # what transformers gives instead


def test_only_some_inputs_need_grad_and_the_loss_is_used_downstream():
    hidden, head, labels = random_problem()
    frozen_body = hidden.detach()  # only the head trains
    ours = chunked_cross_entropy(frozen_body, head, labels, 10)
    ref = reference(frozen_body, head, labels)
    for a, b in zip(torch.autograd.grad(3 * ours**2, list(head.parameters())),
                    torch.autograd.grad(3 * ref**2, list(head.parameters())), strict=True):
        close(a, b, 1e-5)
    head.requires_grad_(False)  # only the body trains (QLoRA: frozen head)
    ours = chunked_cross_entropy(hidden, head, labels, 10)
    close(torch.autograd.grad(ours, hidden)[0],
          torch.autograd.grad(reference(hidden, head, labels), hidden)[0])


def test_no_grad_path_and_non_module_heads():
    hidden, head, labels = random_problem()
    with torch.no_grad():
        close(chunked_cross_entropy(hidden, head, labels, 5), reference(hidden, head, labels))
    # any module works: here a head with a LoRA-like side branch
    side = nn.Sequential(nn.Linear(16, 2, bias=False), nn.Linear(2, 1000, bias=False))
    wrapped = _Sum(head, side)
    close(chunked_cross_entropy(hidden, wrapped, labels, 9), reference(hidden, wrapped, labels))
    for a, b in zip(grads(chunked_cross_entropy(hidden, wrapped, labels, 9), hidden, wrapped),
                    grads(reference(hidden, wrapped, labels), hidden, wrapped), strict=True):
        close(a, b)


class _Sum(nn.Module):
    def __init__(self, a, b):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x):
        return self.a(x) + self.b(x)


def test_4bit_head():
    bnb = pytest.importorskip("bitsandbytes")
    hidden, head, labels = random_problem(v=3000)
    q = bnb.nn.Linear4bit(16, 3000, bias=True, compute_dtype=torch.float32, quant_type="nf4")
    q.load_state_dict(head.state_dict())
    q = q.to("cpu")  # quantizes
    ours = chunked_cross_entropy(hidden, q, labels, 13)
    ref = reference(hidden, q, labels)
    close(ours, ref)
    close(torch.autograd.grad(ours, hidden)[0], torch.autograd.grad(ref, hidden)[0])


def test_fused_falls_back_to_chunked_on_cpu():
    hidden, head, labels = random_problem()
    close(fused_linear_cross_entropy(hidden, head, labels, 11), reference(hidden, head, labels))


def test_fused_liger_plumbing(monkeypatch):
    """Liger itself needs CUDA; check what we hand it (shifted, labelled rows, sum, bias) with a
    stand-in that has liger_fused_linear_cross_entropy's signature."""
    calls = []

    def fake_liger(input, weight, target, bias=None, ignore_index=-100, reduction="mean"):
        calls.append((input.shape, reduction, ignore_index))
        assert (target != ignore_index).all()  # only labelled rows are sent
        return F.cross_entropy(F.linear(input, weight, bias).float(), target,
                               ignore_index=ignore_index, reduction=reduction)

    monkeypatch.setattr(L, "_liger_function", lambda: fake_liger)
    monkeypatch.setattr(L, "_liger_applies", lambda hidden, head: True)
    hidden, head, labels = random_problem()
    with torch.no_grad():  # no backward coming: the chunked loss, not Liger
        close(fused_linear_cross_entropy(hidden, head, labels), reference(hidden, head, labels))
    assert not calls
    for nib in (None, 100):
        ours = fused_linear_cross_entropy(hidden, head, labels, num_items_in_batch=nib)
        ref = reference(hidden, head, labels, nib)
        close(ours, ref)
        for a, b in zip(grads(ours, hidden, head), grads(ref, hidden, head), strict=True):
            close(a, b)
    assert calls[0] == (torch.Size([num_loss_tokens(labels), 16]), "sum", -100)


# ----------------------------------------------------------------------------- memory


class _LargestTensor(torch.utils._python_dispatch.TorchDispatchMode):
    """Largest tensor any aten op produces, forward and backward."""

    largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


class _Saved:
    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor):
        self.tensor = tensor


def _saved_bytes(fn):
    """Bytes of distinct storages autograd keeps saved for backward once `fn` has returned
    (tensors saved by graphs that were already freed, inside `fn`, do not count)."""
    holders = weakref.WeakSet()

    def pack(t):
        holder = _Saved(t)
        holders.add(holder)
        return holder

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda holder: holder.tensor):
        loss = fn()
    gc.collect()
    storages = {h.tensor.untyped_storage().data_ptr(): h.tensor.untyped_storage().nbytes()
                for h in list(holders)}
    return loss, sum(storages.values())


@pytest.mark.parametrize("recompute", [False, True])
def test_chunked_saves_far_less_for_backward_and_never_builds_full_logits(recompute):
    b, t, h, v, chunk = 2, 512, 64, VOCAB, 256
    hidden = torch.randn(b, t, h, requires_grad=True)
    head = nn.Linear(h, v, bias=False)
    labels = torch.randint(0, v, (b, t))

    def ours():
        return chunked_cross_entropy(hidden, head, labels, chunk, recompute=recompute)

    full_loss, full_bytes = _saved_bytes(lambda: reference(hidden, head, labels))
    ours_loss, ours_bytes = _saved_bytes(ours)
    close(ours_loss, full_loss)
    assert full_bytes >= b * t * v * 4  # the fp32 logits (or their softmax) are kept
    assert ours_bytes < 0.2 * full_bytes, (ours_bytes, full_bytes)

    largest = {}
    for name, fn in (("full", lambda: reference(hidden, head, labels)), ("ours", ours)):
        with _LargestTensor() as mode:
            fn().backward()
        largest[name] = mode.largest
    assert largest["full"] >= b * t * v
    assert largest["ours"] == chunk * v  # one chunk's logits, in forward and in backward


# ----------------------------------------------------------------------------- patched models


def tiny_llama(seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, bos_token_id=0, eos_token_id=1,
                      pad_token_id=None)
    return LlamaForCausalLM(cfg)


def tiny_bigcode(seed=0):
    from transformers import GPTBigCodeConfig, GPTBigCodeForCausalLM

    torch.manual_seed(seed)
    cfg = GPTBigCodeConfig(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=256,
                           resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                           bos_token_id=0, eos_token_id=1)
    return GPTBigCodeForCausalLM(cfg)


MODELS = {"llama": tiny_llama, "gpt_bigcode": tiny_bigcode}


def packed_batch(seed=0):
    """Two rows of 48 tokens, each three documents (16 + 20 + 12) with restarting positions;
    first token of each document unlabelled, as codetune's packer does."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (2, 48), generator=g)
    pos = torch.cat([torch.arange(16), torch.arange(20), torch.arange(12)]).repeat(2, 1)
    labels = ids.clone()
    labels[pos == 0] = -100
    return ids, labels, pos


def assert_same_grads(model, ref, tol=1e-5):
    n = 0
    for (name, p), (_, q) in zip(model.named_parameters(), ref.named_parameters(), strict=True):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            close(p.grad, q.grad, tol)
            n += 1
    assert n > 0


@pytest.mark.parametrize("family", MODELS)
@pytest.mark.parametrize("packed", [True, False])
def test_patched_model_equals_unpatched(family, packed):
    model = MODELS[family]()
    ref = copy.deepcopy(model)
    assert enable_efficient_loss(model, chunk_tokens=17) == "chunked"
    ids, labels, pos = packed_batch()
    kw = {"position_ids": pos} if packed else {}
    ours = model(ids, labels=labels, **kw)
    theirs = ref(ids, labels=labels, use_cache=False, **kw)
    assert ours.logits is None
    close(ours.loss, theirs.loss, 1e-5)
    ours.loss.backward()
    theirs.loss.backward()
    assert_same_grads(model, ref)

    # num_items_in_batch passes through (Trainer's gradient-accumulation count)
    close(model(ids, labels=labels, num_items_in_batch=200, **kw).loss,
          ref(ids, labels=labels, num_items_in_batch=200, use_cache=False, **kw).loss, 1e-5)


def test_packed_documents_do_not_see_each_other():
    """use_cache is forced off in the loss path, so the packed mask applies even in eval mode
    (where transformers' default use_cache=True would let documents attend across)."""
    model = tiny_llama().eval()
    enable_efficient_loss(model)
    ids, labels, pos = packed_batch()
    whole = model(ids[:1], labels=labels[:1], position_ids=pos[:1], num_items_in_batch=1).loss
    parts = sum(model(ids[:1, s:e], labels=labels[:1, s:e], num_items_in_batch=1).loss
                for s, e in ((0, 16), (16, 36), (36, 48)))
    close(whole, parts, 1e-5)


@pytest.mark.parametrize("family", MODELS)
def test_without_labels_forward_and_generate_are_untouched(family):
    model = MODELS[family]().eval()
    ref = copy.deepcopy(model)
    enable_efficient_loss(model)
    assert enable_efficient_loss(model, chunk_tokens=8) == "chunked"  # again: not nested
    assert not getattr(model.forward._codetune_original, "_codetune_loss", False)
    # the Trainer passes num_items_in_batch only to a forward whose signature has **kwargs
    params = inspect.signature(model.forward).parameters
    assert "labels" in params
    assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    ids, _, pos = packed_batch()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, ref(ids).logits)
        assert torch.equal(model(ids, position_ids=pos, use_cache=False).logits,
                           ref(ids, position_ids=pos, use_cache=False).logits)
        gen = dict(attention_mask=torch.ones(2, 5, dtype=torch.long), max_new_tokens=6,
                   do_sample=False, pad_token_id=1)
        assert torch.equal(model.generate(ids[:, :5], **gen), ref.generate(ids[:, :5], **gen))
    assert disable_efficient_loss(model) and "forward" not in model.__dict__
    assert model(ids, labels=ids).logits is not None


def test_peft_lora_model_including_a_lora_head():
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "lm_head"],
                     init_lora_weights=False)
    model = get_peft_model(tiny_llama(), cfg)
    ref = copy.deepcopy(model)
    assert enable_efficient_loss(model, chunk_tokens=13) == "chunked"
    assert "forward" in model.base_model.model.__dict__  # on the CausalLM, under peft
    ids, labels, pos = packed_batch()
    ours = model(input_ids=ids, labels=labels, position_ids=pos, num_items_in_batch=150)
    theirs = ref(input_ids=ids, labels=labels, position_ids=pos, num_items_in_batch=150,
                 use_cache=False)
    close(ours.loss, theirs.loss, 1e-5)
    ours.loss.backward()
    theirs.loss.backward()
    assert_same_grads(model, ref)
    lora_grads = [n for n, p in model.named_parameters() if p.grad is not None]
    assert lora_grads and all("lora_" in n for n in lora_grads)
    assert any("lm_head" in n for n in lora_grads)


def test_ddp_wrapped(tmp_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        model = tiny_bigcode()
        ref = copy.deepcopy(model)
        ddp = DistributedDataParallel(model)
        assert enable_efficient_loss(ddp) == "chunked"
        ids, labels, pos = packed_batch()
        out = ddp(input_ids=ids, labels=labels, position_ids=pos, num_items_in_batch=90)
        out.loss.backward()
        theirs = ref(input_ids=ids, labels=labels, position_ids=pos, num_items_in_batch=90,
                     use_cache=False)
        theirs.loss.backward()
        close(out.loss, theirs.loss, 1e-5)
        assert_same_grads(model, ref)
    finally:
        dist.destroy_process_group()


def test_refuses_softcapped_and_scaled_logits(caplog):
    from transformers import CohereConfig, CohereForCausalLM, Gemma2Config, Gemma2ForCausalLM

    small = dict(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                 num_attention_heads=2, num_key_value_heads=1, head_dim=16)
    with caplog.at_level(logging.WARNING, logger="codetune.loss"):
        gemma = Gemma2ForCausalLM(Gemma2Config(**small, final_logit_softcapping=30.0))
        assert enable_efficient_loss(gemma) == "standard"
        cohere = CohereForCausalLM(CohereConfig(**small, logit_scale=0.0625))
        assert enable_efficient_loss(cohere) == "standard"
    assert "final_logit_softcapping" in caplog.text and "logit_scale" in caplog.text
    assert "forward" not in gemma.__dict__ and "forward" not in cohere.__dict__


def test_probe_catches_logit_processing_no_config_field_announces(caplog):
    from transformers import LlamaForCausalLM

    class ScaledLlamaForCausalLM(LlamaForCausalLM):
        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            out.logits = out.logits * 2
            return out

    model = ScaledLlamaForCausalLM(tiny_llama().config).eval()
    rng = torch.get_rng_state()
    with caplog.at_level(logging.WARNING, logger="codetune.loss"):
        assert enable_efficient_loss(model) == "standard"
    assert "probe" in caplog.text
    assert not model.training  # the probe restores the mode ...
    assert torch.equal(torch.get_rng_state(), rng)  # ... and the RNG


def test_probe_passes_with_dropout_and_4bit_model_still_trains(tmp_path):
    """GPT-BigCode with dropout, loaded in 4-bit (its Linear4bit layers have a bias): the probe
    must not refuse it for dropout noise, nor leave bitsandbytes' CPU weights repacked for
    inference (an eval-mode forward does that, and the next training forward then fails)."""
    pytest.importorskip("bitsandbytes")
    from transformers import (
        AutoModelForCausalLM,
        BitsAndBytesConfig,
        GPTBigCodeConfig,
        GPTBigCodeForCausalLM,
    )

    from codetune.train.loss import find_causal_lm

    cfg = GPTBigCodeConfig(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=256,
                           bos_token_id=0, eos_token_id=1)  # default dropouts 0.1
    torch.manual_seed(0)
    GPTBigCodeForCausalLM(cfg).save_pretrained(tmp_path)
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                           bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, quantization_config=q,
                                                 device_map={"": "cpu"}, dtype=torch.float32)
    assert not model.training  # from_pretrained gives eval mode
    assert enable_efficient_loss(model) == "chunked"
    assert find_causal_lm(model) is model and not model.training
    ids, labels, pos = packed_batch()
    model.train()
    for p in model.parameters():  # stand-in for LoRA: train the float parameters
        p.requires_grad_(p.is_floating_point())
    out = model(ids, labels=labels, position_ids=pos)
    out.loss.backward()
    assert torch.isfinite(out.loss)


def test_no_causal_lm_inside():
    assert enable_efficient_loss(nn.Linear(2, 2)) == "standard"
