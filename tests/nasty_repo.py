"""A repository holding every kind of bad input `prepare` must handle, and what it must do.

`build(root, outside)` writes the tree (and a git history when `git=True`) and returns
`Expected`: the reason each dropped path must get, the good files that must be kept
byte-for-byte, the files whose secrets must be redacted, and strings that must never reach the
output (planted secrets and canaries).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

# Fake credentials, assembled at run time so no scanner mistakes this file for a leak.
AWS_KEY = "AKIA" + "IOSFODNN7" + "EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY"
GITHUB_TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0" + "kLmNoPqRsTuVwXyZ12"
SLACK_TOKEN = "xoxb-" + "1234567890-1234567890123-" + "AbCdEfGhIjKlMnOpQrStUvWx"
DB_PASSWORD = "Tr0ub4dor&3-" + "horse"
URL_PASSWORD = "s3cr3tPa55" + "w0rd"
JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9." + "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6Ikpv"
       "aG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ." + "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")
ENTROPY = "Zx9" + "Qm2Lr8Tn4Vb7Kc1Ws5Hy3Jd6Fg0Pa"
KEY_BODY = ["MIIEowIBAAKCAQEA7bq98HJ3b0fDlnqEXAMPLEONLYk1c2ZpLW5vdC1h" + "LXJlYWwta2V5",
            "dGhpcyBpcyBhIHRlc3QgZml4dHVyZSBvbmx5IG5vdCBhIHJlYWwga2V5IGF0" + "IGFsbA==",
            "Zm9yIGNvZGV0dW5lIHByZXBhcmUgdGVzdHMgLS0gcmVkYWN0IG1lIHBsZWFz" + "ZQ=="]
PRIVATE_KEY = ("-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(KEY_BODY)
               + "\n-----END RSA PRIVATE KEY-----")
CANARY_OUTSIDE = "CANARY_OUTSIDE_" + "d41d8cd9"
CANARY_IGNORED = "CANARY_IGNORED_" + "8f00b204"

GOOD_PY = '''"""Order handling for the shop backend."""

from dataclasses import dataclass


@dataclass
class Order:
    order_id: int
    customer: str
    total_cents: int

    def with_discount(self, percent: int) -> "Order":
        """Return a copy with `percent` off the total, rounded down to a cent."""
        cut = self.total_cents * percent // 100
        return Order(self.order_id, self.customer, self.total_cents - cut)


def load_orders(rows):
    """Build orders from database rows, skipping cancelled ones."""
    orders = []
    for row in rows:
        if row.get("status") == "cancelled":
            continue
        orders.append(Order(row["id"], row["customer"], row["total"]))
    return orders
'''


@dataclass
class Expected:
    reasons: dict[str, str] = field(default_factory=dict)  # path -> drop reason
    good: dict[str, bytes] = field(default_factory=dict)  # path -> exact kept bytes
    redacted: dict[str, list[str]] = field(default_factory=dict)  # path -> secrets in it
    forbidden: list[str] = field(default_factory=list)  # must not appear in the output
    notebook: str = ""  # path of the good notebook


def build(root: Path, outside: Path, git: bool = True) -> Expected:
    root.mkdir(parents=True)
    outside.mkdir(parents=True, exist_ok=True)
    exp = Expected()

    def put(rel: str | bytes, data: bytes | str, reason: str | None = None,
            good: bool = False) -> None:
        relb = rel if isinstance(rel, bytes) else rel.encode()
        path = os.path.join(os.fsencode(root), relb)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        raw = data.encode() if isinstance(data, str) else data
        with open(path, "wb") as f:
            f.write(raw)
        key = os.fsdecode(relb)
        if reason:
            exp.reasons[key] = reason
        if good:
            exp.good[key] = raw

    # -- good code, kept byte for byte
    put("src/shop/orders.py", GOOD_PY, good=True)
    put("src/shop/__init__.py", '"""Shop package."""\n\n__all__ = ["orders"]\n', good=True)
    put("web/cart.js", "export function total(items) {\n  return items.reduce("
        "(sum, item) => sum + item.price * item.qty, 0);\n}\n\nexport const CURRENCY = "
        "'EUR';\n", good=True)
    put("Makefile", "test:\n\tpython -m pytest -q\n\nlint:\n\truff check src\n", good=True)
    put("config/app.yaml", "server:\n  host: 0.0.0.0\n  port: 8080\nfeatures:\n  - search\n"
        "  - checkout\n", good=True)
    put("src/shop/crlf.py", "def f():\r\n    return 1\r\n", good=True)
    put("src/shop/unicode.py", "# Preise in Euro, Größe in cm\nGRÖSSE = {'klein': 10, "
        "'groß': 30}\n", good=True)
    put("src/shop/weird name\nwith newline.py", "def odd():\n    return 'newline in name'\n",
        good=True)
    put(b"src/shop/caf\xe9.py", "def cafe():\n    return 'latin-1 byte in the name'\n")

    # -- secrets, redacted in place
    settings = (
        '"""Settings."""\n'
        f'AWS_ACCESS_KEY_ID = "{AWS_KEY}"\n'
        f'aws_secret_access_key = "{AWS_SECRET}"\n'
        f'GITHUB_TOKEN = "{GITHUB_TOKEN}"\n'
        f'SLACK_BOT_TOKEN = "{SLACK_TOKEN}"\n'
        f'DB_PASSWORD = "{DB_PASSWORD}"\n'
        f'DATABASE_URL = "postgres://admin:{URL_PASSWORD}@db.internal:5432/shop"\n'
        f'SESSION = "{JWT}"\n'
        f'signing_salt = "{ENTROPY}"\n'
        'TIMEOUT = 30\n'
    )
    put("src/shop/settings.py", settings)
    exp.redacted["src/shop/settings.py"] = [AWS_KEY, AWS_SECRET, GITHUB_TOKEN, SLACK_TOKEN,
                                            DB_PASSWORD, URL_PASSWORD, JWT, ENTROPY]
    put("src/shop/keys.py", f'"""Test keys."""\n\nDEPLOY_KEY = """{PRIVATE_KEY}\n"""\n\n'
        'def load():\n    return DEPLOY_KEY\n')
    exp.redacted["src/shop/keys.py"] = KEY_BODY
    exp.forbidden += exp.redacted["src/shop/settings.py"] + KEY_BODY

    # -- every reason to drop a file
    put("src/shop/nul.py", b"x = 1\n\x00\x01\x02binary\n", "binary")
    put("src/shop/latin1.py", "# caf\xe9\nx = 1\n".encode("latin-1"), "undecodable")
    put("src/shop/empty.py", b"", "empty")
    put("src/shop/blank.py", b"   \n\n\t\n", "empty")
    put("src/shop/huge.py", "x = 1  # padding line for size\n" * 40_000, "too_large")
    put("src/shop/longline.py", "x = 1\nDATA = '" + "ab" * 800 + "'\n", "long_line")
    put("src/shop/wide.py", "".join(f"v{i} = '" + "w" * 140 + "'\n" for i in range(20)),
        "long_mean_line")
    put("src/shop/symbols.py", ("# " + "=-+*/ " * 5 + "\n") * 5 + "#" * 40 + "\n",
        "low_alphanum")
    put("web/app.min.js", "!function(e){" + "var a=1,b=2;" * 200 + "}();\n", "long_line")
    put("src/shop/orders_pb2.py", "# Generated by the protocol buffer compiler.  DO NOT EDIT!\n"
        "# source: orders.proto\nDESCRIPTOR = None\n", "autogenerated")
    put("package-lock.json", '{"name": "shop", "lockfileVersion": 3, "packages": {}}\n',
        "lock_file")
    put("poetry.lock", "# This file is automatically @generated by Poetry\n[[package]]\n",
        "lock_file")
    put("node_modules/left-pad/index.js", "module.exports = function leftPad(s) { return s; };\n",
        "vendored")
    put("vendor/lib/util.go", "package util\n\nfunc Add(a, b int) int { return a + b }\n",
        "vendored")
    put("build/out.py", "print('built artefact')\n", "vendored")
    put("assets/big_model.py", "version https://git-lfs.github.com/spec/v1\noid sha256:"
        "4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n",
        "lfs_pointer")
    put("docs/logo.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64), "non_code")
    put("fonts/brand.woff2", b"wOF2\x00\x01" + bytes(32), "non_code")
    put("notes.xyz", "just some notes\n", "unknown_language")
    put("data/tiny.json", '{"a": 1}\n', "data_file_size")
    put("data/records.json", json.dumps([{"id": i, "name": f"item {i}"} for i in range(400)],
                                        indent=1), "data_file_size")
    put("data/schema.json", json.dumps({"type": "object", "properties": {
        "id": {"type": "integer"}, "name": {"type": "string"}}}, indent=2) + "\n", good=True)

    # -- notebooks
    nb = {"cells": [
        {"cell_type": "markdown", "source": ["# Revenue analysis\n", "Monthly totals."]},
        {"cell_type": "code", "source": ["import pandas as pd\n", "df = pd.read_csv('x.csv')"],
         "outputs": [], "execution_count": 1, "metadata": {}},
        {"cell_type": "code", "source": "df.groupby('month').total.sum()", "outputs": [],
         "execution_count": 2, "metadata": {}},
    ], "metadata": {"kernelspec": {"language": "python", "name": "python3"}},
        "nbformat": 4, "nbformat_minor": 5}
    put("notebooks/analysis.ipynb", json.dumps(nb, indent=1))
    exp.notebook = "notebooks/analysis.ipynb"
    put("notebooks/broken.ipynb", '{"cells": [ {"cell_type": "code", "source": ', "notebook_malformed")

    # -- duplicates
    put("src/shop/orders_copy.py", GOOD_PY, "exact_duplicate")
    near = GOOD_PY.replace("rounded down to a cent", "rounded down")
    put("src/shop/orders_near.py", near, "near_duplicate")

    # -- links and canaries
    (outside / "outside_secret.py").write_text(f"TOKEN = '{CANARY_OUTSIDE}'\n")
    exp.forbidden.append(CANARY_OUTSIDE)
    os.symlink(outside / "outside_secret.py", root / "src/shop/outside_link.py")
    exp.reasons["src/shop/outside_link.py"] = "symlink_outside_root"
    os.symlink("/dev/urandom", root / "src/shop/random.py")
    exp.reasons["src/shop/random.py"] = "symlink_outside_root"
    os.symlink("loop_b.py", root / "src/shop/loop_a.py")
    os.symlink("loop_a.py", root / "src/shop/loop_b.py")
    exp.reasons["src/shop/loop_a.py"] = "broken_symlink"
    exp.reasons["src/shop/loop_b.py"] = "broken_symlink"
    os.symlink("orders.py", root / "src/shop/orders_link.py")
    exp.reasons["src/shop/orders_link.py"] = "symlink"
    put(".gitignore", "*.local.py\n/tmp/\n", "unknown_language")
    put("secrets.local.py", f"API = '{CANARY_IGNORED}'\n")  # ignored: never even listed
    exp.forbidden.append(CANARY_IGNORED)

    if git:
        env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
                   GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
        for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A", "-f", "."],
                    ["git", "rm", "-q", "--cached", "secrets.local.py"],
                    ["git", "commit", "-q", "-m", "nasty"]):
            subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True)
    return exp
