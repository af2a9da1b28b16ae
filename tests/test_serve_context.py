"""Repository context in `codetune serve`: /infill (llama.cpp's contract), snippets from a live
working tree that is followed as it changes, the file being completed never in its own
context, prompts already laid out taken as given, and context off reproducing today's prompt."""

from __future__ import annotations

import httpx
import openai
import pytest

from codetune import infer as inference
from codetune.context import index_tree
from codetune.serve.app import BackgroundServer, create_app
from codetune.serve.context import Hole, ServeContext, open_context, parse_repo_prompt
from codetune.serve.limits import ServeSettings

MONEY = "def cents(amount):\n    return round(amount * 100)\n\n\nRATE = 0.21\n"
CART = ("from shop.money import cents, RATE\n\n\ndef total(items):\n"
        "    net = sum(cents(i.price) for i in items)\n")


@pytest.fixture(scope="module")
def loaded(tiny_run):
    return inference.load(str(tiny_run["run"]))


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "shop"
    (root / "shop").mkdir(parents=True)
    (root / "shop" / "money.py").write_text(MONEY)
    (root / "shop" / "cart.py").write_text(CART)
    (root / "shop" / "misc.py").write_text("def unrelated():\n    return 'nothing here'\n")
    return root


def _post(url: str, path: str, body: dict) -> httpx.Response:
    return httpx.post(url + path, json=body, timeout=60)


def test_infill_contract_with_client_chunks_and_retrieval(loaded, tree):
    ctx = ServeContext(index_tree(tree), budget=200)
    app = create_app(loaded, ServeSettings(max_tokens=8), context=ctx)
    with BackgroundServer(app) as url:
        r = _post(url, "/infill", {
            "input_prefix": "from shop.money import cents\n\n\ndef tax(x):\n    return ",
            "input_suffix": "\n", "prompt": "cents(",
            "input_extra": [{"filename": "notes/todo.py", "text": "# remember the RATE\n"}],
            "n_predict": 4, "temperature": 0, "cache_prompt": True, "samplers": ["top_k"]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert isinstance(body["content"], str) and body["stop"] is True
        assert body["context"][0] == "notes/todo.py"  # the client's chunk ranks first
        assert "shop/money.py" in body["context"]  # the imported definition, retrieved
        assert body["tokens_evaluated"] > 0 and body["tokens_predicted"] <= 4
        # streaming: content pieces, then a last event with stop true
        with httpx.stream("POST", url + "/infill", json={
                "input_prefix": "def f():\n    return ", "input_suffix": "\n", "n_predict": 3,
                "temperature": 0, "stream": True}, timeout=60) as s:
            events = [x for x in s.iter_lines() if x.startswith("data: ")]
        assert events and '"stop": true' in events[-1]
        bad = _post(url, "/infill", {"input_prefix": "x", "n_probs": 5})
        assert bad.status_code == 400 and "n_probs" in bad.text


def test_the_file_being_completed_is_never_its_own_context(loaded, tree):
    ctx = ServeContext(index_tree(tree), budget=400)
    # by path ...
    named = ctx.snippets(Hole(CART + "    return net * ", "\n", path="shop/cart.py"))
    assert named and all(s.path != "shop/cart.py" for s in named)
    # ... and, for a request that does not say which file it is, by content
    anon = ctx.snippets(Hole(CART, "\n"))
    assert all(s.path != "shop/cart.py" for s in anon)


def test_a_live_tree_is_followed(loaded, tree):
    ctx = ServeContext(index_tree(tree), budget=400, live=True, refresh_seconds=0.1)
    hole = Hole("from shop.money import cents\n\nx = cents(", ")\n", path="shop/new.py")
    before = ctx.snippets(hole)
    assert any("def cents(amount):" in s.text for s in before)  # (the imported one's stub)
    (tree / "shop" / "money.py").write_text(MONEY.replace("def cents(amount):",
                                                          "def cents(amount, digits=2):"))
    ctx.index.refresh()
    after = ctx.snippets(hole)
    assert any("def cents(amount, digits=2):" in s.text for s in after)
    assert not any("def cents(amount):" in s.text for s in after)
    # the thread a server starts does the same by itself
    ctx.start()
    try:
        (tree / "shop" / "extra.py").write_text("def gift_wrap(item):\n    return item\n")
        import time

        deadline = time.time() + 20
        while time.time() < deadline and not any(
                p == "shop/extra.py" for _, p, _ in ctx.index.files()):
            time.sleep(0.1)
        assert any(p == "shop/extra.py" for _, p, _ in ctx.index.files())
    finally:
        ctx.stop()


def test_context_off_reproduces_the_file_level_prompt(loaded, tree):
    hole = Hole(CART + "    return ", "\n", path="shop/cart.py")
    plain = inference.fim_prompt(loaded, hole.prefix, hole.suffix)
    off = ServeContext(index_tree(tree), budget=0)
    assert off.prompt(loaded, hole, 10_000) == (plain, [])
    on_ids, paths = ServeContext(index_tree(tree), budget=200).prompt(loaded, hole, 10_000)
    assert paths == ["shop/money.py"] and len(on_ids) > len(plain)
    text = loaded.tokenizer.decode(on_ids, skip_special_tokens=False)
    assert text.startswith("<repo_name>shop<file_sep>shop/money.py\n")
    assert "<file_sep><fim_prefix>shop/cart.py\nfrom shop.money import" in text
    # a prompt too long for the model sheds snippets instead of failing
    short_ids, short_paths = ServeContext(index_tree(tree), budget=200).prompt(
        loaded, hole, len(plain) + 3)
    assert len(short_ids) <= len(plain) + 3 or not short_paths
    # through the server: no context source, the same prompt as before this feature
    app = create_app(loaded, ServeSettings(max_tokens=2))
    with BackgroundServer(app) as url:
        r = openai.OpenAI(base_url=url + "/v1", api_key="x").completions.create(
            model="m", prompt=hole.prefix, suffix=hole.suffix, max_tokens=2, temperature=0)
        assert r.usage.prompt_tokens == len(plain)


def test_repo_layout_prompts_from_editors(loaded, tree):
    """The editor-config Continue template (repository name and path, no snippets) gets
    snippets; a prompt that already carries context is taken as given."""
    tok = loaded.tokenizer
    bare = ("<repo_name>shop<file_sep><fim_prefix>shop/cart.py\n" + CART + "    return net * "
            "<fim_suffix>\n<fim_middle>")
    hole = parse_repo_prompt(loaded, inference.raw_prompt(loaded, bare))
    assert hole is not None and (hole.repo, hole.path) == ("shop", "shop/cart.py")
    assert hole.prefix == CART + "    return net * " and hole.suffix == "\n"
    given = ("<repo_name>shop<file_sep>shop/money.py\n" + MONEY + bare[len("<repo_name>shop"):])
    assert parse_repo_prompt(loaded, inference.raw_prompt(loaded, given)) is None
    app = create_app(loaded, ServeSettings(max_tokens=2),
                     context=ServeContext(index_tree(tree), budget=200))
    with BackgroundServer(app) as url:
        r = _post(url, "/v1/completions", {"prompt": bare, "max_tokens": 2, "temperature": 0})
        assert r.status_code == 200 and r.json()["codetune"]["context"], r.text
        assert "shop/cart.py" not in r.json()["codetune"]["context"]
        r = _post(url, "/v1/completions", {"prompt": given, "max_tokens": 2, "temperature": 0})
        assert r.json()["codetune"]["context"] == []
        assert r.json()["usage"]["prompt_tokens"] == len(inference.raw_prompt(loaded, given))
        # suffix + the `path` extension field
        r = _post(url, "/v1/completions", {"prompt": "x = cents(", "suffix": ")\n",
                                           "path": "shop/cart.py", "max_tokens": 2})
        assert "shop/money.py" in r.json()["codetune"]["context"]
    assert len(tok(bare)["input_ids"]) > 0


def test_open_context_sources(tiny_run, tree):
    assert open_context(str(tiny_run["run"]), None, 0) is None  # --context-tokens 0: off
    live = open_context(str(tiny_run["run"]), str(tree), 64)
    assert live is not None and live.live and len(live.index) > 0


def test_training_eval_and_serving_build_the_same_prompt(loaded, tmp_path, monkeypatch):
    """One fitting of snippets to a budget (`context.repo_context`): the same ranked snippets,
    budget and file give training's RepoContext, and the same prompt ids from eval and serve,
    with room to spare and where the model's limit sheds the least relevant snippets."""
    from codetune import config
    from codetune.context import RepoIndex, Snippet
    from codetune.evaluation.context import context_prompt, task_contexts
    from codetune.evaluation.tasks import Task
    from codetune.train.trainer import context_providers

    texts = {"shop/money.py": MONEY, "shop/tax.py": "def vat(x):\n    return x * 0.21\n",
             "shop/misc.py": "def unrelated():\n    return 'nothing here'\n"}
    ranked = [Snippet("shop", p, 1, t.count("\n"), t, 1.0, "bm25") for p, t in texts.items()]

    class Same:  # an index that ranks the same snippets for every query
        repos = ["shop"]

        def retrieve(self, prefix, suffix="", path="", repo_id=None):
            return list(ranked)

        def neighbours(self, repo_id, path):
            return list(ranked)

    budget = 120
    monkeypatch.setattr(RepoIndex, "for_dataset", staticmethod(lambda dataset: Same()))
    cfg = config.load(None, [f"data.dataset={tmp_path}", f"data.context_tokens={budget}"])
    train_ctx, held_out_ctx = context_providers(cfg, loaded.tokenizer)
    task = Task("t0", "single_line", "shop", "shop/cart.py", CART + "    return net * ", "100",
                "\n")
    hole = Hole(task.prefix, task.suffix, path=task.path, repo=task.repo_id)
    trained = train_ctx("shop", task.path, CART)
    assert held_out_ctx("shop", task.path, CART) == trained
    assert [p for p, _ in trained.snippets] == list(reversed(texts))  # all fit, best last
    full = inference.fim_prompt(loaded, task.prefix, task.suffix, repo=trained)
    room = 50  # what eval keeps for the generation (more than the hole's own tokens here)
    for limit, kept in ((10_000, list(texts)), (len(full) - 1, list(texts)[:2])):
        (ctx, paths), = task_contexts(Same(), loaded, [task], budget, 1536, limit + room, room)
        eval_ids = context_prompt(loaded, task, 1536, ctx)
        serve_ids, serve_paths = ServeContext(Same(), budget).prompt(loaded, hole, limit)
        assert serve_ids == eval_ids and serve_paths == paths == kept
        assert len(eval_ids) <= limit
        if limit > len(full):
            assert ctx == trained and eval_ids == full
