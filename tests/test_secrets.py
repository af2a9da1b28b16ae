"""Secret scanning and redaction (codetune.data.secrets).

Every fake credential is assembled at run time, so push-protection scanners do not mistake this
file for a leak. Each detection test checks the kind, that the value is gone after `redact`, and
that everything around the value is byte-identical.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import string

import pytest

from codetune.data.secrets import Finding, redact, scan

# -- fake credentials -------------------------------------------------------------------------

AWS_KEY_ID = "AKIA" + "IOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY"
GITHUB_PAT = "ghp_" + "a1B2c3D4e5F6g7H8i9J0" + "kLmNoPqRsTuVwXyZ12"
GITHUB_FINE = "github_pat_" + "11ABCDEFG0123456789_" + "aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789abcdefGHIJKLmnop"
GITLAB = "glpat-" + "xY7zW3vU9tS1rQ5pO2nM"
SLACK_BOT = "xoxb-" + "1234567890-1234567890123-" + "AbCdEfGhIjKlMnOpQrStUvWx"
SLACK_HOOK_PATH = "T0123ABCD/B0123ABCD/" + "aBcDeFgHiJkLmNoPqRsTuVwX"
GOOGLE = "AIza" + "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"
STRIPE = "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc"
STRIPE_RESTRICTED = "rk_live_" + "51H8zQ2eZvKYlo2CkXyZ9aBc"
HF = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh"
OPENAI = "sk-proj-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAB7CD0ef"
ANTHROPIC = "sk-ant-api03-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAB7CD0efGh1jK2lM3nO4pQ5rS6t"
BEARER = "a8Fk2LmQ9zXv" + "4Rt7Wp1Ys6Bn3"
JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9." + "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6Ikpv"
       "aG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ." + "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")
TWILIO_SID = "AC" + "a1b2c3d4e5f60718293a4b5c6d7e8f90"
SENDGRID = "SG." + "aBcDeFgHiJkLmNoPqRsTuV" + "." + "wXyZ0123456789aBcDeFgHiJkLmNoPqRsTuVwXyZ012"
PASSWORD = "Tr0ub4dor&3-" + "horse"
URL_PASSWORD = "s3cr3tPa55" + "w0rd"
ENTROPY_B64 = "Zx9" + "Qm2Lr8Tn4Vb7Kc1Ws5Hy3Jd6Fg0Pa"
ENTROPY_HEX = "3f9a1c7e5b2d8f4a6c0e9b1d7f3a5c8e2b4d" + "6f0a1c"  # 42 chars: not a digest length
KEY_BODY = ["MIIEowIBAAKCAQEA7bq98HJ3b0fDlnqEXAMPLEONLYk1c2ZpLW5vdC1h" + "LXJlYWwta2V5",
            "dGhpcyBpcyBhIHRlc3QgZml4dHVyZSBvbmx5IG5vdCBhIHJlYWwga2V5IGF0" + "IGFsbA==",
            "Zm9yIGNvZGV0dW5lIHByZXBhcmUgdGVzdHMgLS0gcmVkYWN0IG1lIHBsZWFz" + "ZQ=="]
PEM_BEGIN = "-----BEGIN RSA " + "PRIVATE KEY-----"
PEM_END = "-----END RSA " + "PRIVATE KEY-----"
PRIVATE_KEY = PEM_BEGIN + "\n" + "\n".join(KEY_BODY) + "\n" + PEM_END


def only(text: str) -> Finding:
    found = scan(text)
    assert len(found) == 1, found
    return found[0]


def assert_redacted(text: str, value: str, kind: str, placeholder: str = "<SECRET>") -> Finding:
    """`value` occurs once in `text`, is found as `kind`, and only it is replaced."""
    assert text.count(value) == 1
    f = only(text)
    assert f.kind == kind
    assert text[f.start:f.end] == value
    assert redact(text, [f], placeholder) == text.replace(value, placeholder)
    return f


# -- one test per kind ------------------------------------------------------------------------

@pytest.mark.parametrize("template, value, kind", [
    ('AWS_ACCESS_KEY_ID = "{}"\n', AWS_KEY_ID, "aws_access_key"),
    ("aws_access_key_id={}\n", AWS_KEY_ID, "aws_access_key"),
    ("aws_secret_access_key = {}\n", AWS_SECRET, "aws_secret_key"),
    ('s3 = boto3.client("s3", aws_secret_access_key="{}")\n', AWS_SECRET, "aws_secret_key"),
    ('GITHUB_TOKEN = "{}"\n', GITHUB_PAT, "github_token"),
    ("git clone https://x-access-token:{}@github.com/org/repo\n", GITHUB_PAT, "github_token"),
    ('gh = Github("{}")\n', GITHUB_FINE, "github_token"),
    *[("GH_TOKEN={}\n", prefix + GITHUB_PAT[4:], "github_token")
      for prefix in ("gho_", "ghu_", "ghs_", "ghr_")],
    ("  - run: glab auth login --token {}\n", GITLAB, "gitlab_token"),
    ("SLACK_BOT_TOKEN: {}\n", SLACK_BOT, "slack_token"),
    ('client = WebClient(token="{}")\n', SLACK_BOT, "slack_token"),
    ("slack_user: {}\n", "xoxp-" + "1234567890-1234567890-1234567890123-" + "a1b2c3d4e5f60718",
     "slack_token"),
    ('HOOK = "https://hooks.slack.com/services/{}"\n', SLACK_HOOK_PATH, "slack_webhook"),
    ('maps = googlemaps.Client(key="{}")\n', GOOGLE, "google_api_key"),
    ('stripe.api_key = "{}"\n', STRIPE, "stripe_key"),
    ("STRIPE_KEY={}\n", STRIPE_RESTRICTED, "stripe_key"),
    ('login("{}")\n', HF, "huggingface_token"),
    ('client = OpenAI(api_key="{}")\n', OPENAI, "openai_key"),
    ('client = Anthropic(api_key="{}")\n', ANTHROPIC, "anthropic_key"),
    ('headers = {{"Authorization": "Bearer {}"}}\n', BEARER, "authorization_header"),
    ('session = "{}"\n', JWT, "jwt"),
    ("curl -H 'Authorization: Bearer {}' https://api.example.com\n", JWT, "jwt"),
    ('account_sid = "{}"\n', TWILIO_SID, "twilio_key"),
    ('sg = SendGridAPIClient("{}")\n', SENDGRID, "sendgrid_key"),
    ('DATABASE_URL = "postgres://admin:{}@db.internal:5432/shop"\n', URL_PASSWORD,
     "url_credentials"),
    ("redis_url: redis://:{}@cache:6379/0\n", URL_PASSWORD, "url_credentials"),
    ('signing_salt = "{}"\n', ENTROPY_B64, "high_entropy_string"),
    ("cfg = {{'seed': '{}'}}\n", ENTROPY_HEX, "high_entropy_string"),
])
def test_detects_kind_and_redacts_only_the_value(template, value, kind):
    assert_redacted(template.format(value), value, kind)


@pytest.mark.parametrize("text, value", [
    ('password = "{}"\n', PASSWORD),
    ("DB_PASSWORD: '{}'\n", PASSWORD),
    ('{{"api_key": "{}"}}\n', "9f8e7d6c5b4a3f2e" + "1d0c"),
    ('conn = connect(host="db", secret_key="{}")\n', "q8Zr4Lw2Nx7" + "Pv5T"),
    ("passwd={}\n", "Xk9#mQ2" + "$v"),
    ("DATABASE_PASSWORD={}\n", "s3cr3t" + "!"),
    ("export API_TOKEN={}\n", "a8f3k2l9" + "m4n7"),
    ("[db]\nuser = app\npassword = {}\n", "Tr0ub4" + "dor&3"),
    ("$this->password = '{}';\n", "Xk9#mQ2" + "$v"),
    ("const apiKey = `{}`;\n", "9f8e7d6c" + "5b4a"),
    ('settings["client_secret"] = "{}"\n', "q8Zr4Lw2" + "Nx7Pv5T"),
    ('DB_PASS := "{}"\n', "Xk9#mQ2" + "$v"),
    ('password: str = "{}"\n', PASSWORD),
    ('accessToken: "{}",\n', "a8f3k2l9" + "m4n7"),
])
def test_password_assignment_replaces_only_the_value(text, value):
    text = text.format(value)
    assert_redacted(text, value, "password_assignment")
    assert "<SECRET>" in redact(text, scan(text))


def test_password_assignment_keeps_the_quotes():
    text = 'password = "' + PASSWORD + '"\n'
    assert redact(text, scan(text)) == 'password = "<SECRET>"\n'


def test_private_key_block_is_removed_whole():
    text = ('"""Test keys."""\n\nDEPLOY_KEY = """' + PRIVATE_KEY + '\n"""\n\n'
            "def load():\n    return DEPLOY_KEY\n")
    f = only(text)
    assert f.kind == "private_key"
    assert f.line == 3
    assert text[f.start:f.end] == PRIVATE_KEY
    out = redact(text, [f])
    assert out == text.replace(PRIVATE_KEY, "<SECRET>")
    for body_line in KEY_BODY:
        assert body_line not in out
        assert body_line[:16] not in out
    assert "def load():\n    return DEPLOY_KEY\n" in out


def test_private_key_in_json_with_escaped_newlines():
    pem = PEM_BEGIN + "\\n" + "\\n".join(KEY_BODY) + "\\n" + PEM_END + "\\n"
    text = json.dumps({"type": "service_account", "project_id": "shop"})[:-1]
    text += ', "private_key": "' + pem + '", "client_email": "a@b.iam"}\n'
    f = only(text)
    assert f.kind == "private_key"
    out = redact(text, [f])
    assert not any(b[:16] in out for b in KEY_BODY)
    assert out.endswith('"<SECRET>\\n", "client_email": "a@b.iam"}\n')


def test_unterminated_private_key_is_redacted_to_end_of_file():
    text = "key = '''\n" + PEM_BEGIN + "\n" + "\n".join(KEY_BODY[:2]) + "\n"
    f = only(text)
    assert f.kind == "private_key"
    assert f.end == len(text)
    assert redact(text, [f]) == "key = '''\n<SECRET>"


def test_private_key_header_without_a_body_is_not_a_key():
    text = f'PEM_HEADER = "{PEM_BEGIN}"\nPEM_FOOTER = "{PEM_END}"\n\ndef f():\n    return 1\n'
    assert scan(text) == []


def test_private_key_mask_shows_the_header_only():
    f = only(PRIVATE_KEY)
    assert f.masked == f"{PEM_BEGIN}…({len(PRIVATE_KEY)} chars)"


# -- positions and masking --------------------------------------------------------------------

def settings_file() -> str:
    return ('"""Settings."""\n'
            f'AWS_ACCESS_KEY_ID = "{AWS_KEY_ID}"\n'
            f'aws_secret_access_key = "{AWS_SECRET}"\n'
            f'GITHUB_TOKEN = "{GITHUB_PAT}"\n'
            f'SLACK_BOT_TOKEN = "{SLACK_BOT}"\n'
            f'DB_PASSWORD = "{PASSWORD}"\n'
            f'DATABASE_URL = "postgres://admin:{URL_PASSWORD}@db.internal:5432/shop"\n'
            f'SESSION = "{JWT}"\n'
            f'signing_salt = "{ENTROPY_B64}"\n'
            "TIMEOUT = 30\n")


def test_settings_file_line_numbers_kinds_and_output():
    text = settings_file()
    found = scan(text)
    assert [(f.line, f.kind) for f in found] == [
        (2, "aws_access_key"), (3, "aws_secret_key"), (4, "github_token"), (5, "slack_token"),
        (6, "password_assignment"), (7, "url_credentials"), (8, "jwt"),
        (9, "high_entropy_string")]
    assert redact(text, found) == (
        '"""Settings."""\n'
        'AWS_ACCESS_KEY_ID = "<SECRET>"\n'
        'aws_secret_access_key = "<SECRET>"\n'
        'GITHUB_TOKEN = "<SECRET>"\n'
        'SLACK_BOT_TOKEN = "<SECRET>"\n'
        'DB_PASSWORD = "<SECRET>"\n'
        'DATABASE_URL = "postgres://admin:<SECRET>@db.internal:5432/shop"\n'
        'SESSION = "<SECRET>"\n'
        'signing_salt = "<SECRET>"\n'
        "TIMEOUT = 30\n")


def test_findings_are_sorted_and_disjoint():
    found = scan(settings_file() + PRIVATE_KEY + "\n")
    assert all(a.end <= b.start for a, b in zip(found, found[1:], strict=False))


def test_line_numbers_with_crlf_and_blank_lines():
    text = "a = 1\r\n\r\n\r\n# config\r\nkey_id = '" + AWS_KEY_ID + "'\r\nb = 2\r\n"
    f = only(text)
    assert (f.line, f.kind) == (5, "aws_access_key")
    assert redact(text, [f]) == text.replace(AWS_KEY_ID, "<SECRET>")


def test_offsets_survive_non_ascii_text_before_the_secret():
    # "İ".lower() is two characters: offsets must still point into the original text
    text = "# İstanbul ß ǅ café\nDB_PASSWORD = '" + PASSWORD + "'\nx = 'İİİ'\n"
    f = only(text)
    assert text[f.start:f.end] == PASSWORD and f.line == 2


def test_secret_in_the_middle_of_a_very_long_line():
    filler = "a" * 10_000
    text = f'var x="{filler}",t="{GITHUB_PAT}",y="{filler}";\n'
    f = only(text)
    assert f.kind == "github_token"
    assert redact(text, [f]) == text.replace(GITHUB_PAT, "<SECRET>")


def test_masked_never_shows_more_than_four_characters():
    text = settings_file() + "\n".join([
        f"token = '{GITLAB}'", f"hook = 'https://hooks.slack.com/services/{SLACK_HOOK_PATH}'",
        f"g = '{GOOGLE}'", f"s = '{STRIPE}'", f"h = '{HF}'", f"o = '{OPENAI}'",
        f"t = '{TWILIO_SID}'", f"sg = '{SENDGRID}'", "pw = 'Xk9#'", "PASSWORD=abcd1234",
    ]) + "\n"
    found = scan(text)
    assert len(found) >= 17
    for f in found:
        value = text[f.start:f.end]
        shown, _, rest = f.masked.partition("…")
        assert rest == f"({len(value)} chars)"
        assert len(shown) <= 4 and value.startswith(shown)
        assert len(shown) <= len(value) // 4  # short values show less
        assert value not in f.masked


def test_finding_is_frozen():
    f = only('GITHUB_TOKEN = "' + GITHUB_PAT + '"')
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.kind = "x"  # type: ignore[misc]


# -- overlaps ---------------------------------------------------------------------------------

def test_one_secret_seen_by_several_detectors_is_one_finding():
    # github_token, password_assignment (a *_TOKEN name) and detect-secrets' GitHub plugin all
    # see the same value; the specific kind wins
    text = 'GITHUB_TOKEN = "' + GITHUB_PAT + '"\n'
    assert only(text).kind == "github_token"
    # jwt and authorization_header on the same value
    assert only('headers = {"Authorization": "Bearer ' + JWT + '"}\n').kind == "jwt"


def test_contained_detection_is_merged_into_the_widest():
    mailchimp = "0123456789abcdef" + "0123456789abcdef-us12"
    value = "Zq7!" + mailchimp
    text = f'SMTP_PASSWORD = "{value}"\n'
    f = only(text)  # mailchimp_key inside password_assignment: one finding, the whole value
    assert f.kind == "password_assignment"
    assert text[f.start:f.end] == value
    assert redact(text, [f]) == 'SMTP_PASSWORD = "<SECRET>"\n'


def test_redact_merges_overlapping_findings_from_elsewhere():
    text = "0123456789"
    a = Finding(1, "x", 2, 6, "")
    b = Finding(1, "y", 4, 8, "")
    c = Finding(1, "z", 5, 6, "")
    assert redact(text, [b, a, c], "#") == "01#89"
    assert redact(text, [], "#") == text


def test_redact_is_idempotent_under_rescan():
    text = settings_file() + PRIVATE_KEY + "\nDATABASE_PASSWORD=s3cr3t!\n"
    once = redact(text, scan(text))
    assert scan(once) == []


def test_custom_placeholder():
    text = "DB_PASSWORD = '" + PASSWORD + "'\n"
    assert redact(text, scan(text), "[REDACTED]") == "DB_PASSWORD = '[REDACTED]'\n"


# -- what must stay untouched -----------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "password = get_password()\n",
    'token = os.environ["TOKEN"]\n',
    "token = os.getenv('GITHUB_TOKEN')\n",
    'password = ""\n',
    "password = ''\n",
    "sha = hashlib.sha256(data).hexdigest()\n",
    'key = "name"\n',
    'password = "{}".format(pw)\n',
    'password = f"{pw}"\n',
    "password = '%s' % pw\n",
    "password = '%(password)s' % locals()\n",
    "DB_PASSWORD: ${DB_PASSWORD}\n",
    "password = '${DB_PASSWORD}'\n",
    "password = '<your-password>'\n",
    "api_key = 'YOUR_API_KEY'\n",
    "api_key = 'your_api_key_here'\n",
    "password = '********'\n",
    "password = 'changeme'\n",
    "password = 'xxx'\n",
    "password = 'abc'\n",
    "password_field = 'password'\n",
    "PASSWORD_ENV = 'DB_PASSWORD'\n",
    "token_url = 'https://oauth2.example.com/token'\n",
    "token_type = 'bearer'\n",
    "api_key_header = 'X-Api-Key'\n",
    "secret_name = 'prod/db/credentials'\n",
    "password_file = '/run/secrets/db_password'\n",
    "eos_token = '</s>'\n",
    "pad_token = '[PAD]'\n",
    "tokenizer = AutoTokenizer.from_pretrained('bert-base-uncased')\n",
    "max_tokens: int = 512\n",
    "password: str\n",
    "def login(user: str, password: str) -> bool:\n",
    "if password == 'hunter22':\n",
    "password = pwd\n",
    "token = tokens[0]\n",
    "pwd = os.getcwd()\n",
    "    pass\n",
    "password = None\n",
    "token = -1\n",
    "TOKEN_RE = r'[A-Za-z_][A-Za-z0-9_]*'\n",
    "msg = 'Wrong password, try again'\n",
    "url = 'https://user:{password}@host/db'\n",
    "url = '%s://%s:%s@%s' % (scheme, user, pw, host)\n",
    "dsn = 'postgres://postgres:postgres@localhost/test'\n",
    "letters = 'abcdefghijklmnopqrstuvwxyz'\n",
    "ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567'\n",
    "commit = '" + "4a7c1e9d3f5b8a2c6e0d4f1a9b3c7e5d2f8a6c0b" + "'\n",
    "digest = '" + "e3b0c44298fc1c149afbf4c8996fb924" + "27ae41e4649b934ca495991b7852b855" + "'\n",
    "model_id = 'meta-llama/Llama-3.1-8B-Instruct-2024'\n",
    "sid = 'AC" + "x" * 32 + "'  # placeholder from the docs\n",
    "x = 'VGhpcyBpcyBqdXN0IGEgc2VudGVuY2UgaW4gYmFzZTY0'  # base64 of plain text\n",
    "user = cond ? password : 'anonymous1';\n",
    "user, password = 'wile', 'coyote'\n",
    "    Pass :meth:`peek` a default value to return instead of raising.\n",
    "jsonnet_token = r'[^\\W\\d]\\w*'\n",
    '<assemblyIdentity publicKeyToken="1fc8b3b9a1e18e3b" />\n',
    "filters = {'pass': 'bandpass', 'stop': 'bandstop'}\n",
    "refresh_token = 'hf_oauth_refresh_token'\n",
])
def test_false_positives_stay_untouched(text):
    assert scan(text) == [], scan(text)
    assert redact(text, scan(text)) == text


GOOD_PY = '''"""Order handling for the shop backend."""

from dataclasses import dataclass


@dataclass
class Order:
    order_id: int
    customer: str
    total_cents: int
    token: str = ""

    def with_discount(self, percent: int) -> "Order":
        """Return a copy with `percent` off the total, rounded down to a cent."""
        cut = self.total_cents * percent // 100
        return Order(self.order_id, self.customer, self.total_cents - cut)


def load_orders(rows, key=lambda r: r["id"]):
    """Build orders from database rows, skipping cancelled ones."""
    orders = []
    for row in sorted(rows, key=key):
        if row.get("status") == "cancelled":
            continue
        password = row.get("password") or prompt_password()
        orders.append(Order(row["id"], row["customer"], row["total"], token=password))
    return orders
'''


def test_text_without_secrets_comes_back_identical():
    for text in (GOOD_PY, "", "\n", "x = 1", inspect.getsource(string),
                 inspect.getsource(json.encoder), inspect.getsource(dataclasses)):
        found = scan(text)
        assert found == [], found
        assert redact(text, found) == text


# -- secrets split over several literals (the joined view) ------------------------------------
# Each case is the shape a hostile tester used to get a credential into the dataset verbatim.
# The redacted text must hold no piece of the secret, and everything but the pieces (quotes,
# `+`, backslashes, comments, indentation) must be byte-identical.

def _b64url_json(obj: dict) -> str:
    import base64

    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


SPLIT_AWS = ("dJ8HqP3vXz7Lk2Nw9Rt4", "Ym6Bc1Fg5/j0Sa8Ue3Wx")  # 40 base64 characters
SPLIT_GH = ("ghp_" + "Zq8Xw3Lm9Rt2Yv6N", "b4Kc7Pd1Fh5Js0Ga2Ue8")  # ghp_ + 36 alphanumerics
SPLIT_STRIPE = ("sk_live_" + "51Hq8Zx", "W3mL9rT2yV6nB4kC7")  # sk_live_ + 24
_JWT_WHOLE = (_b64url_json({"alg": "HS256", "typ": "JWT"}) + "."
              + _b64url_json({"sub": "1234567890", "name": "Jane Roe", "iat": 1716239022})
              + "." + "Xq3vT9kLm2Pz8Rw5Yb1Nc6Hd4" + "Jf7Gs0Ua9Ke3Wi_Qo")
SPLIT_JWT = (_JWT_WHOLE[:60], _JWT_WHOLE[60:])


def assert_split_redacted(text: str, pieces: tuple[str, ...], kind: str, line: int) -> Finding:
    """One finding of `kind` on `line` whose pieces are exactly `pieces`; after `redact` no
    piece is left and everything else is unchanged."""
    for p in pieces:
        assert text.count(p) == 1, p
    f = only(text)
    assert (f.kind, f.line) == (kind, line)
    assert [text[a:b] for a, b in f.pieces] == list(pieces)
    assert (f.start, f.end) == (f.pieces[0][0], f.pieces[-1][1])
    value = "".join(pieces)
    assert f.masked == f"{value[:4]}…({len(value)} chars)"
    out = redact(text, [f])
    expected = text
    for p in pieces:
        assert p not in out
        expected = expected.replace(p, "<SECRET>")
    assert out == expected
    assert scan(out) == []  # idempotent: the placeholders are not a secret
    return f


@pytest.mark.parametrize("template, line", [
    ('aws_secret_access_key = ("{}" "{}")\n', 1),
    ('import boto3\n\naws_secret_access_key = (\n    "{}"\n    "{}"\n)\n', 4),
    ('aws_secret_access_key = (\r\n    "{}"  # part 1\r\n    "{}"  # part 2\r\n)\r\n', 2),
    ('s3 = boto3.client("s3",\n    aws_secret_access_key="{}"\n                          "{}")\n',
     2),
])
def test_aws_secret_split_by_implicit_concatenation(template, line):
    assert_split_redacted(template.format(*SPLIT_AWS), SPLIT_AWS, "aws_secret_key", line)


@pytest.mark.parametrize("template", [
    'TOKEN = "{}" \\\n    "{}"\n',  # a backslash line continuation between two literals
    'TOKEN = "{}\\\n{}"\n',  # a backslash-newline inside one literal
    'TOKEN = "{}" \\\r\n    "{}"\r\n',
])
def test_github_token_continued_with_backslash(template):
    text = template.format(*SPLIT_GH)
    assert_split_redacted(text, SPLIT_GH, "github_token", 1)
    assert "\\" in redact(text, scan(text))


@pytest.mark.parametrize("template", [
    'key = "{}" + "{}"\n',
    'key = ("{}" +\n       "{}")\n',
    'const key = "{}"\n  + "{}";\n',
])
def test_stripe_key_joined_with_plus(template):
    text = template.format(*SPLIT_STRIPE)
    assert_split_redacted(text, SPLIT_STRIPE, "stripe_key", 1)
    assert redact(text, scan(text)).count("+") == 1


@pytest.mark.parametrize("template", [
    'session = ("{}"\n           "{}")\n',
    'SESSION = "{}" "{}"\n',
])
def test_jwt_split_over_two_literals(template):
    assert_split_redacted(template.format(*SPLIT_JWT), SPLIT_JWT, "jwt", 1)


def notebook_json(cells: list[list[str]]) -> str:
    return json.dumps({
        "cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
                   "source": src} for src in cells],
        "metadata": {"kernelspec": {"language": "python", "name": "python3"}},
        "nbformat": 4, "nbformat_minor": 5}, indent=1)


NOTEBOOK_TOKEN_CELL = ["import requests\n", "\n",
                       f'TOKEN = ("{SPLIT_GH[0]}"\n', f'         "{SPLIT_GH[1]}")\n',
                       'r = requests.get(url, headers={"Authorization": f"token {TOKEN}"})\n']


def test_notebook_cell_token_split_over_two_source_lines():
    # prepare scans the cells' source (`notebook_to_source`), not the notebook's JSON
    from codetune.data.notebooks import notebook_to_source

    raw = notebook_json([["import os\n"], NOTEBOOK_TOKEN_CELL])
    assert scan(raw) == []  # in the JSON the halves sit in separate strings, out of reach
    source, _ = notebook_to_source(raw)
    # cells are joined by two blank lines: "import os", 2 blank, "import requests", 1 blank
    assert_split_redacted(source, SPLIT_GH, "github_token", 6)


@pytest.mark.parametrize("text, line", [
    ("password: Tr0ub4dor3xq\n", 1),
    ("database:\n  host: db.internal\n  user: app\n  password: Tr0ub4dor3xq\n", 4),
    ("services:\n  - name: db\n    password: Tr0ub4dor3xq  # rotate monthly\n", 3),
])
def test_unquoted_yaml_password(text, line):
    f = assert_redacted(text, "Tr0ub4dor3xq", "password_assignment")
    assert f.line == line


@pytest.mark.parametrize("text, line", [
    ("#!/bin/sh\nset -eu\ncurl -u admin:s3cretPw https://api.example.com/v1/deploy\n", 3),
    ('def fetch():\n    """Fetch the report.\n\n    Same as `curl -u admin:s3cretPw '
     'https://reports.example.com/latest`.\n    """\n', 4),
    ("Deploy with:\n\n    curl -X POST \\\n      -u admin:s3cretPw \\\n      https://x.example\n",
     4),
    ("curl --user 'admin:s3cretPw' https://api.example.com\n", 1),
    ("curl --user=admin:s3cretPw https://api.example.com\n", 1),
])
def test_curl_user_password(text, line):
    f = assert_redacted(text, "s3cretPw", "basic_auth")
    assert f.line == line
    assert "admin:<SECRET>" in redact(text, [f])


def test_parenthesised_high_entropy_string():
    value = "".join(SPLIT_AWS)
    assert_redacted(f'X = ("{value}")\n', value, "high_entropy_string")
    assert_redacted(f"CONFIG = {{'signing': ('{value}')}}\n", value, "high_entropy_string")


def test_line_level_detection_is_extended_over_the_pieces_after_it():
    # the joined value has a blank, so only the first literal is a plausible password; the
    # rest of the value must not stay behind
    text = 'password = "Tr0ub4" "dor&3 horse"\n'
    f = only(text)
    assert f.kind == "password_assignment"
    assert redact(text, [f]) == 'password = "<SECRET>" "<SECRET>"\n'


def test_split_secret_absorbs_line_detections_of_its_pieces():
    # the first half alone is a plausible token under TOKEN: still one finding, both pieces
    text = f'TOKEN = "{SPLIT_GH[0]}" + "{SPLIT_GH[1]}"  # ci\nx = 1\n'
    f = assert_split_redacted(text, SPLIT_GH, "github_token", 1)
    assert len(f.pieces) == 2


def test_findings_stay_sorted_and_disjoint_with_split_secrets():
    text = (settings_file() + f'aws_secret_access_key = ("{SPLIT_AWS[0]}" "{SPLIT_AWS[1]}")\n'
            + f'TOKEN = "{SPLIT_GH[0]}" \\\n    "{SPLIT_GH[1]}"\n')
    found = scan(text)
    spans = sorted(sp for f in found for sp in (f.pieces or ((f.start, f.end),)))
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
    assert [f.start for f in found] == sorted(f.start for f in found)
    assert [(f.line, f.kind) for f in found][-2:] == [(11, "aws_secret_key"), (12, "github_token")]
    out = redact(text, found)
    assert not any(p in out for p in (*SPLIT_AWS, *SPLIT_GH))


@pytest.mark.parametrize("text", [
    'msg = "Hello, " + name + "!"\n',
    'greeting = "Hello, " + "world" + "!"\n',
    "query = (\n"
    '    "SELECT u.id, u.name, u.email, t.token_hash "\n'
    '    "FROM users AS u "\n'
    '    "JOIN api_tokens AS t ON t.user_id = u.id "\n'
    '    "WHERE u.password_reset_at IS NULL "\n'
    '    "AND t.secret_key_id = %s "\n'
    '    "ORDER BY u.created_at DESC"\n'
    ")\n",
    'TOKEN_HELP = ("Your token has expired. "\n'
    '              "Please log in again to get a new one.")\n',
    "password_hint = ('The quick brown fox jumps over the lazy dog, '\n"
    "                 'then the password is whatever you chose.')\n",
    'raise ValueError("token must be a string, "\n'
    '                 f"got {type(token).__name__}")\n',
    '__all__ = (\n    "TokenizerFast",\n    "SecretStr",\n)\n',
    'api_key_header = "X-" \\\n    "Api-Key"\n',
    'token_url = ("https://oauth2.example.com/"\n             "v1/token")\n',
    "docker run -u 1000:1001 image\ncurl -u \"$USER:$PASS\" https://x\ncurl -u admin https://x\n",
    "password: SecretStr\ntoken: str = ''\n",
    "grid_hex = (\n" + "".join(f'    b"{i:02x}' + "0a1b2c3d4e5f6a7b8c9d" * 3 + '"\n'
                                 for i in range(8)) + ")\n",
])
def test_ordinary_concatenations_stay_untouched(text):
    assert scan(text) == [], scan(text)


def test_next_key_of_a_mapping_is_not_part_of_the_value_above():
    # JSON with a comma missing (as in many docs): the token is a value of its own, and the
    # literal on the next line is a key, not its continuation
    value = "AAAAKgAAAAEAAAAAAAAAAw" + "7LZ4GRZPzTqB"
    text = '{\n  "nextPageToken": "' + value + '"\n  "typeInfos": []\n}\n'
    assert_redacted(text, value, "password_assignment")


def test_unrelated_neighbours_of_a_split_secret_stay_untouched():
    text = ('LOG = "starting " + "up"\n'
            f'key = "{SPLIT_STRIPE[0]}" + "{SPLIT_STRIPE[1]}"\n'
            'SQL = ("SELECT 1 "\n       "FROM dual")\n')
    out = redact(text, scan(text))
    assert out == ('LOG = "starting " + "up"\n'
                   'key = "<SECRET>" + "<SECRET>"\n'
                   'SQL = ("SELECT 1 "\n       "FROM dual")\n')


# -- the same cases through `codetune prepare` ------------------------------------------------

def _split_secret_repo(root) -> dict[str, tuple[str, ...]]:
    """A small repository with every split/single-line shape above in its own file; returns
    {path: pieces that must not reach the dataset}."""
    clean = "\n".join(f"def handler_{j}(request):\n    value = request.get('field_{j}')\n"
                      f"    return value * {j}\n" for j in range(8))
    files = {
        "app/aws.py": ('"""Storage client."""\nimport boto3\n\naws_secret_access_key = (\n'
                       f'    "{SPLIT_AWS[0]}"\n    "{SPLIT_AWS[1]}"\n)\n\n'
                       "def client():\n    return boto3.client('s3')\n", SPLIT_AWS),
        "app/github.py": ('"""GitHub access."""\n\nTOKEN = "' + SPLIT_GH[0] + '" \\\n    "'
                          + SPLIT_GH[1] + '"\n\n\ndef headers():\n'
                          '    return {"Authorization": "token " + TOKEN}\n', SPLIT_GH),
        "app/billing.js": ('// Billing\nconst stripe = require("stripe");\n'
                           f'const key = "{SPLIT_STRIPE[0]}" +\n  "{SPLIT_STRIPE[1]}";\n'
                           "module.exports = stripe(key);\n", SPLIT_STRIPE),
        "app/session.py": ('"""Sessions."""\n\nSESSION = ("' + SPLIT_JWT[0] + '"\n'
                           '           "' + SPLIT_JWT[1] + '")\n\n\ndef current():\n'
                           "    return SESSION\n", SPLIT_JWT),
        "deploy/config.yaml": ("database:\n  host: db.internal\n  port: 5432\n  user: app\n"
                               "  password: Tr0ub4dor3xq\n", ("Tr0ub4dor3xq",)),
        "deploy/release.sh": ("#!/bin/sh\nset -eu\n# publish the build\n"
                              "curl -u admin:s3cretPw https://api.example.com/v1/deploy\n",
                              ("s3cretPw",)),
        "app/signing.py": ('"""Signing."""\n\nSIGNING = ("' + "".join(SPLIT_AWS) + '")\n',
                           ("".join(SPLIT_AWS),)),
        "notebooks/explore.ipynb": (notebook_json([["import os\n"], NOTEBOOK_TOKEN_CELL]),
                                    SPLIT_GH),
        "app/clean.py": (clean, ()),
        "app/messages.py": ('MSG = ("Your token has expired. "\n       "Please log in again.")\n'
                            'GREETING = "Hello, " + "world" + "!"\n' + clean.replace("handler",
                                                                                  "view"), ()),
    }
    for rel, (text, _) in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    return {rel: pieces for rel, (_, pieces) in files.items()}


def _all_output_text(out) -> str:
    import pyarrow.parquet as pq

    parts = []
    for p in out.rglob("*"):
        if p.is_file():
            parts.append(p.read_bytes().decode("utf-8", "replace"))
            if p.suffix == ".parquet":
                parts += [json.dumps(r) for r in pq.read_table(p).to_pylist()]
    return "\n".join(parts)


@pytest.mark.parametrize("mode", ["redact", "drop-file"])
def test_prepare_keeps_no_piece_of_a_split_secret(tmp_path, mode):
    import pyarrow.parquet as pq

    from codetune.data import store
    from codetune.data.prepare import prepare

    from .conftest import prep_cfg

    expected = _split_secret_repo(tmp_path / "repo")
    out = tmp_path / "ds"
    prepare([str(tmp_path / "repo")], out, prep_cfg(valid_fraction=0.0, secrets=mode),
            progress=False)
    rows = {r["path"]: r for s in store.SPLITS for p in store.shard_paths(out, s)
            for r in pq.read_table(p).to_pylist()}
    everything = _all_output_text(out)
    pieces = [p for ps in expected.values() for p in ps]
    for p in pieces:
        assert p not in everything, p
    with open(out / "secrets.jsonl", encoding="utf-8") as fh:
        reported = {d["path"] for d in map(json.loads, fh)}
    with_secrets = {rel for rel, ps in expected.items() if ps}
    assert reported == with_secrets
    assert {"app/clean.py", "app/messages.py"} <= set(rows)
    assert rows["app/messages.py"]["secrets_redacted"] == 0
    assert "Your token has expired" in rows["app/messages.py"]["content"]
    if mode == "redact":
        for rel in with_secrets:
            assert rows[rel]["secrets_redacted"] > 0, rel
            assert "<SECRET>" in rows[rel]["content"]
        assert rows["app/github.py"]["content"].startswith(
            '"""GitHub access."""\n\nTOKEN = "<SECRET>" \\\n    "<SECRET>"\n')
        assert 'TOKEN = ("<SECRET>"\n         "<SECRET>")\n' in \
            rows["notebooks/explore.ipynb"]["content"]
    else:
        assert not with_secrets & set(rows)
        with open(out / "dropped.jsonl", encoding="utf-8") as fh:
            reasons = {d["path"]: d["reason"] for d in map(json.loads, fh)}
        assert all(reasons.get(rel) == "secret" for rel in with_secrets), reasons
