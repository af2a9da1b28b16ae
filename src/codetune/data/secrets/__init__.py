"""Find credentials in source text and replace them with a placeholder.

Before a dataset is written every kept file goes through `scan`; `redact` then swaps each
secret value for a placeholder (``<SECRET>`` by default), so ``password = "hunter22"`` becomes
``password = "<SECRET>"``: only the value changes and the code around it stays byte-identical.
A value written as several literals (``key = ("ghp_ab" "cd...")``, see "Split values" below)
loses every piece: ``key = ("<SECRET>" "<SECRET>")``, quotes, ``+`` and ``\\`` kept. The
report gets file, line (of the first piece), kind and `Finding.masked`, never the value.

What is detected (`Finding.kind`):

* by shape, anywhere in the text: ``aws_access_key`` (AKIA/ASIA/ABIA/ACCA/A3T + 16),
  ``github_token`` (ghp_/gho_/ghu_/ghs_/ghr_, github_pat_), ``gitlab_token`` (glpat- and the
  other GitLab prefixes), ``slack_token`` (xox?-, xapp-), ``slack_webhook`` (the path of a
  hooks.slack.com URL), ``google_api_key`` (AIza + 35), ``stripe_key`` (sk_/rk_, live and
  test), ``huggingface_token`` (hf_ + 34), ``openai_key`` and ``anthropic_key`` (sk-... of
  realistic length, with digits and both cases), ``jwt`` (three base64url parts whose first
  two decode to JSON), ``authorization_header`` (``Bearer``/``Basic`` + a random-looking value);
* ``private_key``: the whole PEM/OpenSSH/PGP block from its BEGIN line through its END line.
  detect-secrets reports only the header, but the body is the secret. A block without an END
  is redacted to the end of the file (a truncated key is still a key). A header that is not
  followed by key material (``PEM_HEADER = "-----BEGIN PRIVATE KEY-----"``) is not a block:
  treating it as one would delete the rest of the file;
* ``aws_secret_key``: 40 base64 characters assigned to an ``aws_secret_access_key``-like name;
* ``url_credentials``: the password in ``scheme://user:password@host`` (user and host stay);
* ``basic_auth``: the password in ``curl -u user:password`` / ``--user`` (also several
  backslash-continued lines after ``curl``; other tools' ``-u 1000:1000`` is a uid:gid);
* ``password_assignment``: a string literal assigned to a name that says password, passwd, pwd,
  passphrase, pass, secret, token, credentials or api/auth/access/private/client/... key, with
  ``=``, ``:``, ``:=``, ``=>``, as a keyword argument, a JSON/YAML key or ``cfg["password"]``,
  bare or in parentheses (``token = ("...")``); and unquoted values at the start of a line in
  .env/ini/YAML form (``DB_PASSWORD=s3cr3t!``, ``  password: Tr0ub4dor3xq``);
* in configuration files (``scan(text, path)``; `file_format` says which: ``.yaml``/``.yml``
  (Compose and Kubernetes files included), ``.ini``, ``.cfg``, ``.conf``, ``.cnf``, ``.toml``,
  ``.properties``, ``.env``/``.env.*``/``*.env``, also as ``*.example``/``*.sample``/... copies;
  not translations under ``locales/``, ``i18n/``), ``password_assignment`` also for the value
  after a secret-sounding key *whatever it looks like*: ``password: hunter``,
  ``db.password=abcdEFGH12``, ``db.password abcd`` (.properties), ``- "MYSQL_PASSWORD=x"``,
  ``password: &anchor x``, a YAML block (``password: |``) or a value on the lines below the key,
  quoted or not, and commented-out lines (``# password: x`` still leaks). The value ends where
  the format says: at `` #`` in YAML, TOML and .env, at the end of the line in ini and
  .properties (a ``;`` comment there goes with it). Left alone: templates and references
  (``${DB_PASSWORD}``, ``{{ .Values.password }}``, ``%(pw)s``, ``@DB_PASSWORD@``, ``$$X``,
  ``!vault``/``!Ref``/other tags, ``*alias``, ``valueFrom``/``secretKeyRef``), empty values,
  flow collections, placeholders (``changeme``, ``xxx``, ``<password>``, ``your-...``,
  ``CHANGE_ME``, type names such as ``string``; not stock weak passwords like ``hunter2`` or
  ``admin``, which are real there), a value that spells its key (``password: Password``),
  labels (several plain words: ``password_confirmation: Confirm password``; so a passphrase of
  plain words is missed, except under a ``*passphrase`` key), ALL_CAPS_NAMES, paths and URLs.
  Under a token/secret/key name (not a password name) a plain word, a number or a value without
  letters is a setting (``secrets: inherit``, ``id-token: write``, ``tokens: 4096``,
  ``js-tokens: 4.0.0``), not a token. Names about a secret stay skipped as in code
  (``password_min_length: 8``, ``token_expiry: 3600``, ``update_password: always``);
* a secret variable named on one line and valued on the next, in any file: Kubernetes and
  Compose env lists (``- name: DB_PASSWORD`` / ``value: <v>``, quoted or not, either order,
  comments and blank lines between, flow ``{name: X, value: v}``), ECS task definitions
  (``{"name": "DB_PASSWORD", "value": "..."}``), Terraform ``name = "X"`` / ``value = "..."``.
  ``valueFrom:`` is not ``value:``; unquoted values count in configuration files only (in code
  ``value = var.x`` is a reference);
* ``command_line_password``: ``--password=<v>``, ``--token <v>``, ``--api-key=<v>``,
  ``--db-password "<v>"`` (a long option whose name *ends* in a secret word: not
  ``--password-stdin``, ``--token-file``, nor the switches ``--ask-pass``, ``--with-token``,
  ``--no-password``); ``mysql``/``mysqldump``/``mariadb`` ``-p<v>`` attached (``-p`` alone
  prompts and the next word is the database), also in exec form (``"-p<v>"``);
  ``docker``/``podman``/``skopeo login -p <v>`` and ``sshpass -p <v>``; ``-e``/``--env``/
  ``--build-arg``/``--set``/``-D``/``--conf`` ``SECRET_NAME=<v>``. ``-p`` elsewhere is a port or
  a flag (``docker run -p 8080:80``, ``mkdir -p``, ``ssh -p 2222``). The spaced form
  (``--password <v>``) is not taken for psql/mysql, whose ``--password`` takes no separate
  argument; outside scripts (shell, Makefile, Dockerfile, Jenkinsfile, configuration) a spaced
  plain word reads as prose (``pass --password followed by ...``) and is left. Values are
  judged as in configuration files (templates ``$X``, ``$(...)``, ``${{ secrets.X }}`` left);
* ``high_entropy_string``: a quoted base64- or hex-charset string of >= 20 characters assigned
  to any name, with Shannon entropy above detect-secrets' defaults: 4.5 bits/char for base64,
  3.0 for hex (less a penalty for all-digit strings). Those are the defaults detect-secrets
  ships after tuning on real code; 4.5 is high enough that a base64 value needs >= 23
  characters to reach it at all, so identifiers and words never do. On real code the hex
  limit flags every digest, so hex of a digest's or an id's length (24, 32, 40, 56, 64, 96,
  128) or longer than 128 (a lookup table, not a key), values under digest-like names
  (``sha256``, ``checksum``, ``expected``, ``*_id``)
  are skipped, as are alphabets and keyboard rows, ``org/model-name`` paths, and base64 that
  decodes to printable text;
* the rest of detect-secrets' regex plugins, run as they are: ``twilio_key``,
  ``sendgrid_key``, ``npm_token``, ``pypi_token``, ``azure_storage_key``, ``mailchimp_key``,
  ``discord_token``, ``square_oauth_secret``, ``telegram_token``, ``artifactory_token``,
  ``ibm_cloud_iam_key``, ``ibm_cos_hmac_key``, ``cloudant_key``, ``softlayer_key`` (and its
  GitHub/GitLab/Stripe/OpenAI patterns, which report under the kinds above).

Why it is built this way:

* Paths. `scan` takes the file's path (optional; `prepare` and `codetune index` pass it through
  `FileFilter.check_text`): whether a bare word after ``password`` is a value or a variable
  depends on the file, and only the path says which. Without a path the rules are those of code.
  `codetune index` filters and redacts through the same `FileFilter`, and `prepare` builds the
  context index (chunks, BM25 vocabulary) from the redacted train shards, so no output holds a
  value the scanner found.
* Speed. `prepare` must process >= 5 MB/s per core, and detect-secrets' ``scan_line`` runs at
  ~0.1 MB/s. Code has almost no secrets, so `scan` first runs a few trigger regexes over the
  text and its lowercase copy, each beginning with a literal: CPython's regex engine skips to
  a literal prefix at memchr-like speed (~2 GB/s), while one alternation of all triggers runs
  at ~10 MB/s. Only the lines they hit (a few per thousand) are examined, and on each line a
  detector runs only when a substring it needs occurs. The Python standard library scans at
  ~85 MB/s on one core. The worst case is a file where every line is a candidate
  (``token = ...`` on each line): ~3-6 MB/s. A trigger that misses a line loses that secret,
  so triggers are broader than the detectors behind them; formats without a fixed prefix
  (Discord, Telegram, IBM, ...) are reached through the quoted-string and keyword triggers.
* Offsets. detect-secrets reports values, not positions, and redaction needs exact spans, so
  its plugins' ``denylist`` regexes are run directly and the span is read off the match. Its
  keyword and entropy plugins are replaced because they are tuned for reviewing commits, not
  for keeping a corpus clean (the file-dependent rules are this package's own, see "Paths").
* False positives corrupt training data (a redacted ``key = "name"`` teaches the model
  nonsense), so an assignment counts only when the value is plausibly a credential. Skipped
  values: empty or shorter than 4 characters (8 for tokens and keys); anything containing
  whitespace (messages, prompts; the rare passphrase is a miss we accept); templates and
  format strings (``{x}``, ``${X}``, ``$X``, ``%s``, ``%(x)s``, ``<...>``, ``[PAD]``, ``...``);
  calls and regular expressions; ALL_CAPS_NAMES (the name of an environment variable, not its
  value); URLs and file paths; values that spell their own name (``password = "password1"``,
  ``password_field = "password"``); common dummies (``changeme``, ``xxxx``, ``***``,
  ``your_api_key``, ``example``, ``None``, ...); and, for tokens and keys, plain words
  (``token_type = "bearer"``). Names about a secret rather than holding one are skipped too
  (``password_prompt``, ``token_url``, ``secret_name``, ``max_tokens``, ``is_password``, and a
  tokenizer's ``eos_token``). Unquoted values in code are variables or calls, so they count only
  at the start of a line in .env/ini/YAML form, and a name-shaped value only in .env form
  (``UPPER_NAME=value``) or with two digit runs inside one of its words (``Tr0ub4dor3xq``,
  ``s3cr3t``; not ``base64Password`` or ``md5hash``): ``password = hunter2`` in Python reads
  a variable, ``password: SecretStr`` is an annotation. A URL or curl password equal to its
  user name is a stock demo login (``postgres:postgres``) and is kept.
* Split values (the joined view). ``"AKIA..." "..."``, ``"ghp_..." \\`` + newline + ``"..."``,
  ``"sk_live_..." + "..."``, a backslash-newline inside a literal, or a literal alone on the
  line under ``key = (`` is one value to the program, but no line holds it, so the line scan
  cannot see it. For each trigger window `_regions` follows the statement over the lines that
  continue a literal (a line ending in ``\\``, ``+``, or in ``(`` or a literal with the next
  line starting with a literal or ``+``), `_chains` lexes the literals there into runs
  separated only by blanks, one ``+``, continuations and quote-free comments, and the
  detectors run on a one-line copy of the statement, ``key = ("<pieces joined>")``, whose
  characters map back to the pieces. A secret found there is one finding whose `pieces` are
  the physical spans it covers in each literal. The plausibility rules are those of one
  literal, so ``"Hello, " + name + "!"`` (a name breaks the run), English text and SQL
  (blanks) are not secrets. A run is joined only where that can show something new: a joint
  with no blank or escape on either side (``"ghp_ab" "cd"``, not ``"Your token has "
  "expired"``), ``Bearer `` before a joint, or one blank-free literal under its name; a
  literal that starts a line and is followed by ``:`` is the next key of a mapping, not more
  value. Cost: on the standard library 7% of trigger windows reach a continuation, 3% lead
  to a region worth lexing, and the joined view makes the scan ~9% slower (with this
  change as a whole ~13%: ~34 -> ~30 MB/s on one core of a loaded 2-core VM). The worst case, a continued literal under a
  secret-sounding name on every line, runs at ~1/2 to ~1/5 of the line scan's speed on the
  same file. A secret split so that no piece and no name hits a trigger (``x = "gh" "p_"
  "Zq8Xw3Lm9R" ...``: pieces under 20 characters, no prefix whole, a neutral name) is missed.
* Overlaps (one secret seen by several detectors, e.g. a GitHub token in ``GITHUB_TOKEN =
  "..."``) become one finding covering their union, named by the widest detection; on equal
  width a specific kind beats a generic one (``github_token`` over ``password_assignment``).
  A split secret absorbs the line-level detection of any of its pieces, and a line-level
  detection that is a whole literal followed by more pieces (``password = "Tr0ub4" "dor&3
  horse"``: the joined value has a blank) is extended over them, so no piece is left behind.

* Cost of the configuration and command-line rules (measured with bench/secrets_bench.py,
  baseline and new scanner alternating in one run, one core of a shared 2-core VM): the command
  and name/value rules are whole-text passes that each begin with a literal (``--``, ``-p``
  after a tool's name, ``-e``..., ``value``), the configuration rule runs on the trigger
  windows only (plus a blank-separator trigger in .properties). See bench/RESULTS.md for the
  figures: Python code and configuration files both stay far above 5 MB/s.

Layout: detectors.py holds the triggers, the shape detectors and detect-secrets' plugins;
assignments.py the name and value rules for assignments and the entropy test; windows.py the
line scan over the windows around trigger hits; joined.py the joined view of split values;
config.py which files are configuration, their value rule and the name/value pairs;
commands.py command-line options; scanner.py private keys, curl credentials, merging overlaps,
`scan` and `redact`.
"""

from codetune.data.secrets.config import file_format
from codetune.data.secrets.scanner import Finding, redact, scan

# The version of the rules: raised whenever they catch more. An index built under older rules
# is rebuilt rather than updated (`context.index_tree`), since its reused chunks hold whatever
# those rules missed.
RULES = 2

__all__ = ["RULES", "Finding", "file_format", "redact", "scan"]
